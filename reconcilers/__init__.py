"""Reconcilers: compare what the systems of record say and close the loop (docs/reconcilers.md).

- `config`: the params of `compare: inventory` / `compare: invoice` rules, validated into typed configs;
- `inventory`, `invoice`: the comparisons, each one set-based statement inside ClickHouse;
- `pull`: a side read from a SQL database (SQLAlchemy) into a staging table of the run;
- `loop`: comparisons into opened, resolved (`reconciled`) and reopened exceptions;
- `runs`, `service`, `jobs`: runs as records (`recon_runs`), the service the API and CLI call, the job;
- `replay`: asking a source to resend what it lost (replay webhooks).
"""
