"""`tower rules check|test`: lint rule files and routing; backtest a rule on the running tower."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import orjson

from kernel.settings import SlaSettings
from sla_rules.loader import (
    LoadedRule,
    RuleFileError,
    default_routing_file,
    default_rules_dir,
    load_rule_set,
    read_rule_file,
)
from sla_rules.model import (
    EVALUATED_TECHNICAL,
    DeliveriesRule,
    ErrorRateRule,
    IdReuseRule,
    JobFailuresRule,
    ReconciliationRule,
    RefusalsRule,
    Rule,
    SlaRule,
)
from tower.client import api_call

FLAGGED = ("breached", "late", "at_risk")


@click.group()
def rules() -> None:
    """Check rule files and owner routing; backtest a rule over stored history."""


@rules.command("check")
@click.argument("folder", required=False, type=click.Path(path_type=Path))
@click.option(
    "--routing",
    "routing_file",
    type=click.Path(path_type=Path),
    help="Owner routing file (default: TOWER_SLA_ROUTING_FILE, else the shipped sla_rules/routing.yaml).",
)
def check_command(folder: Path | None, routing_file: Path | None) -> None:
    """Load and lint the rules in FOLDER with the routing file; one line per rule.

    FOLDER defaults to TOWER_SLA_RULES_DIR, else the shipped rules (sla_rules/rules). Exit code
    0 when everything loads; 1 with one `file:line: field: message` line per problem.
    """
    settings = SlaSettings()
    rules_dir = folder or settings.rules_dir or default_rules_dir()
    routing_path = routing_file or settings.routing_file or default_routing_file()
    try:
        # reconciliation params are checked by the reconcilers' models, pulls against TOWER_RECONCILE_SOURCES
        from tower.app import reconcile_params

        loaded = load_rule_set(rules_dir, routing_path, reconcile_params())
    except RuleFileError as exc:
        for line in exc.lines:
            click.echo(line)
        click.echo(f"{len(exc.problems)} problem{'s' if len(exc.problems) != 1 else ''}")
        click.get_current_context().exit(1)
    click.echo(_rule_table(loaded.rules))
    enabled = len(loaded.enabled)
    routes, owners = len(loaded.routing.routes), len(loaded.routing.owners)
    click.echo(
        f"{len(loaded.rules)} rules ({enabled} enabled) in {_shown(rules_dir)}; "
        f"routing {_shown(routing_path)}: {routes} route{'s' if routes != 1 else ''}, "
        f"{owners} owner{'s' if owners != 1 else ''} declared"
    )
    for warning in loaded.misspelt_types():
        click.echo(f"warning: {warning}")
    for owner in loaded.routing.owners_without_channel():
        click.echo(
            f"warning: owner {owner!r} has no Slack channel and no alerts route gives it one: its alerts are not"
            " posted (recorded `unrouted`; they are on the dashboard)"
        )


@rules.command("test")
@click.argument("rule_file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--from", "since", help="Start of the period, ISO 8601 (UTC when no offset; default: --to minus 7 days).")
@click.option("--to", "until", help="End of the period, excluded, ISO 8601 (default: now).")
@click.option("--rule", "rule_id", help="The rule to test when RULE_FILE holds several.")
@click.option(
    "--all", "show_all", is_flag=True, help="List every case, not only those flagged (late, breached, at risk)."
)
@click.option("--limit", type=click.IntRange(0, 100_000), default=100, show_default=True, help="Cases listed at most.")
@click.option("--json", "as_json", is_flag=True, help="Print the tower's answer as JSON.")
@click.option("--url", help="The tower's URL (TOWER_URL, else TOWER_COLLECTOR_HTTP_PORT here).")
@click.option("--token", help="Operator or admin API token (TOWER_TOKEN; default: the generated admin token).")
def test_command(
    rule_file: Path,
    since: str | None,
    until: str | None,
    rule_id: str | None,
    show_all: bool,
    limit: int,
    as_json: bool,
    url: str | None,
    token: str | None,
) -> None:
    """Backtest the SLA rule in RULE_FILE over the stored history of the running tower.

    Prints the cases the rule would have flagged (key, started, due, ended, status) and the
    count of cases per status. Nothing is written: no case, no exception. Exit code 1 when the
    rule file is invalid, 2 when the tower cannot be reached or refuses the request.
    """
    entry = _pick_rule(rule_file, rule_id)
    # the tower lists what is shown, so a long period's cases are not all sent to be cut here
    body: dict[str, Any] = {"rule": entry.data, "limit": limit}
    if not show_all:
        body["statuses"] = list(FLAGGED)
    if since:
        body["from"] = _iso(since, "--from")
    if until:
        body["to"] = _iso(until, "--to")
    result = _post(url, token, "/api/sla/backtest", body)
    if as_json:
        click.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
        return
    shown: list[dict[str, Any]] = list(result.get("cases", []))
    counts: dict[str, int] = result.get("counts") or {}
    total = sum(counts.values())
    click.echo(
        f"backtest of {result.get('rule', entry.rule.id)} for starts from {_time(result.get('from'))} "
        f"to {_time(result.get('to'))} UTC: {total} case{'s' if total != 1 else ''}"
    )
    listed_of = int(result.get("listed_of", len(shown)))
    if shown:
        click.echo(_case_table(shown))
    if listed_of > len(shown):
        click.echo(f"... and {listed_of - len(shown)} more (--limit)")
    elif not shown:
        click.echo("nothing would have been flagged" if not show_all else "no cases")
    click.echo("counts: " + (", ".join(f"{status} {count}" for status, count in counts.items()) or "none"))
    for line in _matched_lines(entry.rule, result.get("matched") or {}):
        click.echo(line)


def _matched_lines(rule: Rule, matched: dict[str, Any]) -> list[str]:
    """What the rule's sides matched in the period and, when a side matched nothing a case needs, the period's
    event types to compare its types with (a misspelt type is the usual reason)."""
    if not isinstance(rule, SlaRule) or not matched:
        return []
    key = rule.key
    lines = [
        f"events in the period: start side {matched['start_events']:,} ({matched['start_keyed']:,} with {key}),"
        f" end side {matched['end_events']:,} ({matched['end_keyed']:,} with {key})"
    ]
    for side, name in ((rule.start, "start"), (rule.end, "end")):
        if matched[f"{name}_keyed"]:
            continue
        wanted = ", ".join(side.types) + (f" from {', '.join(side.sources)}" if side.sources else "")
        wanted += "".join(f", {field} in {'/'.join(values)}" for field, values in sorted(side.where.items()))
        wanted += "".join(f", {field} not in {'/'.join(values)}" for field, values in sorted(side.where_not.items()))
        why = f"none carries {key}" if matched[f"{name}_events"] else "no event matches"
        effect = "no case starts" if name == "start" else "no case can end: every case stays open"
        lines.append(f"{name} side ({wanted}): {why}, so {effect}")
    if len(lines) > 1:
        types = ", ".join(f"{t} {n:,}" for t, n in matched.get("types") or [])
        lines.append(f"event types in the period: {types or 'none'}")
    return lines


# --- check ------------------------------------------------------------------------------------


def _rule_table(rules: Sequence[Rule]) -> str:
    rows = [("ID", "TYPE", "OWNER", "KEY", "DEADLINE")]
    for rule in rules:
        kind: str = rule.type
        if isinstance(rule, (*EVALUATED_TECHNICAL, JobFailuresRule)):
            kind = f"technical/{rule.check}"
        key = rule.key if isinstance(rule, SlaRule) else "-"
        deadline = _deadline(rule) + ("" if rule.enabled else "  [disabled]")
        rows.append((rule.id, kind, rule.owner, key, deadline))
    return _table(rows)


def _deadline(rule: Rule) -> str:
    """What decides the rule, in a few words."""
    if isinstance(rule, SlaRule):
        deadline = rule.deadline
        if deadline.after is not None:
            text = f"{duration(deadline.after)} after start"
        else:
            assert deadline.cutoff is not None
            cutoff = deadline.cutoff
            # the seconds when the file gives some: 14:00:30 is not the 14:00 a rule check would otherwise show
            shown = cutoff.time.isoformat() if cutoff.time.second or cutoff.time.microsecond else f"{cutoff.time:%H:%M}"
            text = f"cutoff {shown} {_days(cutoff.business_days)} {cutoff.timezone}"
            if cutoff.zone_by is not None:
                text += f", zone by {cutoff.zone_by.field} ({len(cutoff.zone_by.zones)} zones)"
            if cutoff.holidays:
                text += f", {len(cutoff.holidays)} holidays ({cutoff.holidays[0]}..{cutoff.holidays[-1]})"
        return text + (f", warning {duration(rule.warning)}" if rule.warning is not None else "")
    if isinstance(rule, ReconciliationRule):
        params = ", ".join(f"{name} {_param(value)}" for name, value in rule.params.items())
        return f"compare {rule.compare}" + (f": {params}" if params else "")
    if isinstance(rule, ErrorRateRule):
        p = rule.params
        return f"over {duration(p.window)}: >= {p.min_spans} spans, > {p.error_ratio:.0%} errors"
    if isinstance(rule, JobFailuresRule):
        return f"a tower job failing {rule.params.failures} runs in a row"
    if isinstance(rule, RefusalsRule):
        return f"over {duration(rule.params.window)}: >= {rule.params.min_records} records refused"
    if isinstance(rule, IdReuseRule):
        reuse = rule.params
        return (
            f"over {duration(reuse.window)}: >= {reuse.min_ids} event ids reused for different events,"
            f" checked every {duration(reuse.every)}"
        )
    if isinstance(rule, DeliveriesRule):
        delivery = rule.params
        return (
            f">= {delivery.min_messages} Slack messages failed since a channel took one,"
            f" within {duration(delivery.window)}"
        )
    sources = ", ".join(rule.params.sources) or "expected sources from settings"
    return f"silent {duration(rule.params.window)} ({sources})"


def _param(value: Any) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, list) else str(value)


def _days(days: Sequence[str]) -> str:
    week = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    indexes = sorted(week.index(day) for day in set(days))
    if len(indexes) > 2 and indexes == list(range(indexes[0], indexes[-1] + 1)):
        return f"{week[indexes[0]]}-{week[indexes[-1]]}"
    return ",".join(week[i] for i in indexes)


def duration(value: timedelta) -> str:
    """A timedelta as the rule files write it: 90s, 30m, 2h, 1d."""
    seconds = value.total_seconds()
    # Days only from two on: a 24h deadline reads as DESIGN.md writes it.
    for unit, size, least in (("d", 86400, 2 * 86400), ("h", 3600, 3600), ("m", 60, 60)):
        if seconds >= least and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


# --- test -------------------------------------------------------------------------------------


def _pick_rule(path: Path, rule_id: str | None) -> LoadedRule:
    """The SLA rule to backtest from the file, validated locally first (exit 1 with the problems)."""
    context = click.get_current_context()
    try:
        entries = read_rule_file(path)
    except RuleFileError as exc:
        for line in exc.lines:
            click.echo(line, err=True)
        context.exit(1)
    if rule_id is not None:
        entries = [entry for entry in entries if entry.rule.id == rule_id]
        if not entries:
            raise click.UsageError(f"{_shown(path)} has no rule {rule_id!r}")
    if len(entries) != 1:
        ids = ", ".join(entry.rule.id for entry in entries)
        raise click.UsageError(f"{_shown(path)} holds several rules ({ids}); choose one with --rule")
    entry = entries[0]
    if not isinstance(entry.rule, SlaRule):
        click.echo(
            f"{entry.file}:{entry.line}: only sla rules can be backtested; {entry.rule.id} is {entry.rule.type}",
            err=True,
        )
        context.exit(1)
    return entry


def _iso(value: str, option: str) -> str:
    """An ISO 8601 date or time as RFC 3339 in UTC (a time with no offset is UTC)."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 date or time", param_hint=option) from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        in_utc = parsed.astimezone(UTC)
    except OverflowError as exc:  # 0001-01-01T00:00+01:00 is in year 0 in UTC
        raise click.BadParameter(f"{value!r} is out of range in UTC", param_hint=option) from exc
    return in_utc.isoformat().replace("+00:00", "Z")


def _post(url: str | None, token: str | None, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST JSON to the tower; ApiFailed (exit 2) on connection or HTTP errors, with the tower's reasons."""
    content = orjson.dumps(body, default=str)
    return api_call(url, token, "POST", path, content=content, headers={"Content-Type": "application/json"})


def _case_table(cases: Sequence[dict[str, Any]]) -> str:
    rows = [("KEY", "STARTED (UTC)", "DUE (UTC)", "ENDED (UTC)", "STATUS")]
    for case in cases:
        rows.append(
            (
                str(case.get("key", "")),
                _time(_first(case, "started_at", "started")),
                _time(_first(case, "due_at", "due")),
                _time(_first(case, "ended_at", "ended")) or "-",
                str(case.get("status", "")),
            )
        )
    return _table(rows)


def _first(case: dict[str, Any], *names: str) -> Any:
    return next((case[name] for name in names if case.get(name) not in (None, "")), None)


def _time(value: Any) -> str:
    """A stored or RFC 3339 time as `YYYY-MM-DD HH:MM:SS` UTC; empty when absent."""
    if value in (None, ""):
        return ""
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC)
    return parsed.strftime("%Y-%m-%d %H:%M:%S")


# --- shared -----------------------------------------------------------------------------------


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
