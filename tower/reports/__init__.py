"""Finance reports: the SLA breach report of a period as CSV or XLSX (service.py, files.py), its settings
(settings.py) and the monthly `finance-report` job that posts it to Slack (monthly.py). The breaches
themselves are read by `sla_rules.breaches`; see docs/reports.md."""
