"""`tower status`: the dashboard's first screen in a terminal, for an on-call over SSH or a script: active exceptions
by owner, SLA compliance, each source's health, warnings and the day's changes, read from the running tower's API."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import click
import orjson

from tower.client import api_call, tower_url
from tower.commands.text import utc

SEVERITIES = ("critical", "high", "medium", "low")


def _percent(value: Any) -> str:
    return "-" if value is None else f"{float(value):.1%}"


def _minutes(value: Any) -> str:
    if value is None:
        return "never"
    minutes = float(value)
    return f"{minutes:.0f} min ago" if minutes < 120 else f"{minutes / 60:.1f} h ago"


def _lag(seconds: Any) -> str:
    if seconds is None:
        return "-"
    value = float(seconds)
    if abs(value) < 120:
        return f"{value:.0f} s"
    return f"{value / 60:.0f} min" if abs(value) < 7200 else f"{value / 3600:.1f} h"


def owners_lines(overview: dict[str, Any]) -> list[str]:
    """One line per owner with active exceptions: how many, and how many of each severity."""
    per_owner: dict[str, dict[str, int]] = defaultdict(dict)
    for row in overview.get("by_owner", []):
        count = int(row.get("open", 0)) + int(row.get("acknowledged", 0))
        if count:
            per_owner[str(row["owner"])][str(row["severity"])] = count
    lines = []
    for owner, severities in sorted(per_owner.items(), key=lambda item: (-sum(item[1].values()), item[0])):
        split = ", ".join(f"{s} {severities[s]}" for s in SEVERITIES if s in severities)
        lines.append(f"  {owner:<18} {sum(severities.values()):>5}  ({split})")
    return lines


def compliance_lines(overview: dict[str, Any]) -> list[str]:
    """SLA compliance per rule: today, 7 and 30 days, and the cases at risk now."""
    rows = overview.get("compliance", [])
    if not rows:
        return []
    lines = [f"  {'rule':<18} {'today':>8} {'7 days':>8} {'30 days':>8} {'at risk':>8}"]
    for row in rows:
        windows = (row.get(w) or {} for w in ("today", "last_7_days", "last_30_days"))
        shown = " ".join(f"{_percent(w.get('compliance')):>8}" for w in windows)
        lines.append(f"  {row['rule']:<18} {shown} {int(row.get('at_risk', 0)):>8}")
    return lines


def sources_lines(health: dict[str, Any]) -> list[str]:
    """Each source's health over the window: last seen, rates, errors, arrival lag, refusals, open technical."""
    rows = health.get("sources", [])
    if not rows:
        return []
    lines = [
        f"  {'source':<14} {'last seen':>13} {'events/min':>10} {'spans/min':>9} {'errors':>7} {'lag p95':>8}"
        f" {'refused':>7} {'open':>5}"
    ]
    for row in rows:
        lines.append(
            f"  {row['source']:<14} {_minutes(row.get('silent_minutes')):>13}"
            f" {float(row.get('events_per_minute', 0)):>10.1f} {float(row.get('spans_per_minute', 0)):>9.1f}"
            f" {_percent(row.get('error_rate')):>7}"
            f" {_lag(row.get('arrival_lag_p95_seconds')):>8} {int(row.get('refused', 0)):>7}"
            f" {int(row.get('open_technical', 0)):>5}"
        )
    return lines


def warning_lines(overview: dict[str, Any]) -> list[str]:
    """What the overview warns of: exceptions of rules nothing evaluates, SLA rules that find no case."""
    lines = [
        f"  {row['rule']}: {row['active']} active exceptions of a rule the tower no longer evaluates (resolve them by"
        " hand: tower exceptions resolve --rule ...)"
        for row in overview.get("unevaluated", [])
    ]
    lines += [
        f"  {row['rule']}: no case in 7 days although {', '.join(row['start_types'])} events arrive (last"
        f" {utc(row['last_start_event'])} UTC): its sources or filters may match nothing"
        for row in overview.get("idle", [])
    ]
    return lines


def render(url: str, overview: dict[str, Any], health: dict[str, Any]) -> list[str]:
    """The whole status as lines."""
    at_risk = int(overview.get("at_risk", 0))
    lines = [
        f"tower {url}, {utc(overview.get('now'))} UTC (the tower's clock)",
        f"exceptions: {overview.get('active', 0)} active ({overview.get('open', 0)} open,"
        f" {overview.get('acknowledged', 0)} acknowledged); {at_risk} case{'' if at_risk == 1 else 's'} at risk",
        *owners_lines(overview),
    ]
    compliance = compliance_lines(overview)
    if compliance:
        lines += ["SLA compliance:", *compliance]
    sources = sources_lines(health)
    window = float(health.get("window_minutes", 0))
    lines += [f"sources, last {window:g} min:", *sources] if sources else [f"sources: none heard in {window:g} min"]
    warnings = warning_lines(overview)
    if warnings:
        lines += ["warnings:", *warnings]
    changes = overview.get("changes") or {}
    counts = changes.get("counts") or {}
    if counts:
        since = utc(changes.get("since"))
        lines.append(
            f"changes since {since} UTC: " + ", ".join(f"{action} {n}" for action, n in sorted(counts.items()))
        )
    return lines


@click.command("status")
@click.option("--tz", default="UTC", show_default=True, help="The IANA time zone the compliance days start in.")
@click.option(
    "--minutes", type=click.FloatRange(1, 1440), default=15, show_default=True, help="The sources' health window."
)
@click.option("--json", "as_json", is_flag=True, help="Print {overview, sources} as the API gives them.")
@click.option("--url", help="The tower's URL (TOWER_URL, else TOWER_COLLECTOR_HTTP_PORT here).")
@click.option("--token", help="Any API token (TOWER_TOKEN; default: the generated admin token).")
def status(tz: str, minutes: float, as_json: bool, url: str | None, token: str | None) -> None:
    """Show the tower at a glance: active exceptions by owner, SLA compliance per rule, each source's health over
    the last 15 minutes, warnings and the last day's changes (what the dashboard's overview shows)."""
    overview = api_call(url, token, "GET", "/api/overview", params={"tz": tz})
    health = api_call(url, token, "GET", "/api/sources/health", params={"minutes": minutes})
    if as_json:
        click.echo(orjson.dumps({"overview": overview, "sources": health}, option=orjson.OPT_INDENT_2).decode())
        return
    for line in render(tower_url(url), overview, health):
        click.echo(line)
