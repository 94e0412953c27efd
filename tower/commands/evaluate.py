"""`tower evaluate`: evaluate every rule now, through the running tower's API, and print what changed."""

from __future__ import annotations

from typing import Any

import click
import orjson

from tower.client import api_call


def run_evaluation(url: str | None, token: str | None, full: bool) -> dict[str, Any]:
    """POST /api/sla/evaluate and return its answer; ApiFailed (exit 2) on connection or HTTP errors."""
    return api_call(url, token, "POST", "/api/sla/evaluate", timeout=600, params={"full": "true"} if full else None)


def render(report: dict[str, Any]) -> list[str]:
    """The report as lines: totals, then one line per rule (cases changed, opened, resolved)."""
    rules: dict[str, dict[str, Any]] = report.get("rules", {})
    lines = [
        f"evaluated {len(rules)} rules in {report.get('duration_ms', 0):.0f} ms: "
        f"{report.get('cases_changed', 0)} cases changed, {report.get('opened', 0)} exceptions opened, "
        f"{report.get('resolved', 0)} resolved"
    ]
    if rules:
        width = max(len("rule"), *(len(name) for name in rules))
        lines.append(f"{'rule':<{width}}  {'mode':<11}  {'changed':>7}  {'opened':>6}  {'resolved':>8}")
        for name, rule in rules.items():
            lines.append(
                f"{name:<{width}}  {rule.get('mode') or '-':<11}  {rule.get('cases_changed', 0):>7}  "
                f"{len(rule.get('opened', [])):>6}  {len(rule.get('resolved', [])):>8}"
            )
    for evaluator, error in report.get("errors", {}).items():
        lines.append(f"error in {evaluator}: {error}")
    return lines


@click.command("evaluate")
@click.option("--full", is_flag=True, help="Re-evaluate every case, not only what changed since the last run.")
@click.option("--json", "as_json", is_flag=True, help="Print the tower's answer as JSON (with exception ids).")
@click.option("--url", help="The tower's URL (TOWER_URL, else TOWER_COLLECTOR_HTTP_PORT here).")
@click.option("--token", help="API token of an operator or admin (TOWER_TOKEN; default: the generated admin token).")
def evaluate(full: bool, as_json: bool, url: str | None, token: str | None) -> None:
    """Evaluate every SLA and technical rule now and print what changed.

    Exit code 0 when every evaluator ran, 1 when one failed (named in the output), 2 when the
    tower cannot be reached or refuses the request.
    """
    report = run_evaluation(url, token, full)
    if as_json:
        click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        for line in render(report):
            click.echo(line)
    if report.get("errors"):
        click.get_current_context().exit(1)
