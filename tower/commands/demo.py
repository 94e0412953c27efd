"""`tower demo`: a simulated distributor sending spans and business events to a running tower."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import click
import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from collector.demo.scenario import (
    DEFAULT_FAULTS,
    FAULT_RULES,
    SERVICES,
    Delivery,
    LiveFeed,
    Scenario,
    ScenarioConfig,
    build_scenario,
    iso,
)
from collector.demo.senders import DeliveryError, DemoSender, SendStats, run_live
from kernel.clock import SystemClock
from kernel.model.events import SOURCE_SYSTEMS
from kernel.settings import Settings
from tower.bootstrap import token_for
from tower.client import tower_url


def resolve_tokens(token_file: str | None) -> dict[str, str]:
    """An ingest token per source system: from --token-file, else TOWER_INGEST_TOKENS, else the data directory.

    The file is either `{token: [sources]}` (the TOWER_INGEST_TOKENS format), the generated `tokens.json`
    (`{"ingest": {...}}`), or `{system: token}`.
    """
    settings = Settings()
    if token_file:
        raw = json.loads(Path(token_file).read_text())
        raw = raw.get("ingest", raw) if isinstance(raw, dict) else raw
        if not isinstance(raw, dict):
            raise click.UsageError(f"{token_file}: expected a JSON object")
        if raw and all(isinstance(v, str) for v in raw.values()):
            return {str(system): str(token) for system, token in raw.items()}
        settings.ingest.tokens = {str(token): [str(s) for s in sources] for token, sources in raw.items()}
    needed = sorted(set(SERVICES.values()))
    tokens = {system: token for system in needed if (token := token_for(settings, system))}
    missing = [s for s in needed if s not in tokens]
    if missing:
        raise click.UsageError(
            f"no ingest token for {', '.join(missing)}: pass --token-file, set TOWER_INGEST_TOKENS, "
            "or run from the directory whose data dir holds the generated tokens.json"
        )
    return tokens


def _parse_faults(values: tuple[str, ...]) -> dict[str, int]:
    faults = dict(DEFAULT_FAULTS)
    for value in values:
        kind, sep, count = value.partition("=")
        if not sep or kind not in FAULT_RULES or not count.isdigit():
            raise click.BadParameter(f"{value!r}: expected KIND=N with KIND one of {', '.join(FAULT_RULES)}")
        faults[kind] = int(count)
    return faults


@click.command()
@click.option("--url", help="Tower base URL (TOWER_URL; else TOWER_COLLECTOR_HTTP_PORT here).")
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of the simulated story.")
@click.option("--orders", type=click.IntRange(min=0), default=300, show_default=True, help="Orders in the history.")
@click.option(
    "--history-hours", type=click.FloatRange(min=1), default=48.0, show_default=True, help="Hours backfilled."
)
@click.option("--skus", type=click.IntRange(min=1), default=16, show_default=True, help="SKUs per warehouse.")
@click.option("--live/--no-live", default=False, show_default=True, help="Keep producing after the backfill.")
@click.option("--rate", type=click.FloatRange(min=0.01), default=1.0, show_default=True, help="Live orders a minute.")
@click.option("--duration", type=click.FloatRange(min=0), help="Minutes of live phase (default: until Ctrl-C).")
@click.option(
    "--fault",
    "faults",
    multiple=True,
    metavar="KIND=N",
    help=f"Faults of a kind to inject (repeatable); kinds: {', '.join(FAULT_RULES)}.",
)
@click.option(
    "--manifest",
    type=click.Path(dir_okay=False),
    default="var/demo-manifest.json",
    show_default=True,
    help="Where to write the fault manifest (its folder is created).",
)
@click.option("--token-file", type=click.Path(exists=True, dir_okay=False), help="JSON file of ingest tokens.")
@click.option(
    "--ready-file",
    type=click.Path(dir_okay=False),
    help="Create this file once the backfill is sent (`tower serve --demo` starts its jobs then).",
)
def demo(
    url: str | None,
    seed: int,
    orders: int,
    history_hours: float,
    skus: int,
    live: bool,
    rate: float,
    duration: float | None,
    faults: tuple[str, ...],
    manifest: str,
    token_file: str | None,
    ready_file: str | None,
) -> None:
    """Run a simulated distributor against the tower.

    Backfills the last --history-hours of a wholesale distributor (orders through CRM, eCommerce and EDI, the
    ERP, three warehouses' WMS, EDI ASNs, the TMS, invoices, inventory snapshots) with injected faults, sends
    spans over OTLP/HTTP, WMS events as OTLP logs and the rest as CloudEvents, and writes the fault manifest.
    """
    console = Console(stderr=True)
    base = tower_url(url)
    tokens = resolve_tokens(token_file)
    try:
        httpx.get(f"{base}/healthz", timeout=5).raise_for_status()
    except httpx.HTTPError as error:
        raise click.ClickException(f"cannot reach the tower at {base} (is `tower serve` running?): {error}") from error
    clock = SystemClock()
    config = ScenarioConfig(
        seed=seed, orders=orders, history_hours=history_hours, skus=skus, faults=_parse_faults(faults), live_rate=rate
    )
    scenario = build_scenario(config, clock)
    manifest_path = Path(manifest)
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    manifest_path.write_text(json.dumps(scenario.manifest(), indent=2) + "\n")
    sender = DemoSender(base, tokens)
    try:
        _backfill(console, scenario, sender)
        if ready_file:
            Path(ready_file).parent.mkdir(parents=True, exist_ok=True)
            Path(ready_file).write_text(iso(scenario.now) + "\n")
        if live:
            _live(console, scenario, sender, clock, duration)
    except DeliveryError as error:
        raise click.ClickException(str(error)) from error
    finally:
        sender.close()
    console.print(_summary(scenario, sender.stats, manifest_path))
    for kind, short in scenario.shortfall.items():
        console.print(f"[yellow]{kind}: {short} fewer than asked (no eligible case in the window)[/yellow]")
    if sender.stats.failed:
        raise click.ClickException(
            f"{sender.stats.failed} records were not accepted; first reasons: {sender.stats.rejections[:3]}"
        )


def _progress(console: Console) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=console,
    )


def _backfill(console: Console, scenario: Scenario, sender: DemoSender) -> None:
    total = sum(d.size for d in scenario.deliveries)
    with _progress(console) as progress:
        task = progress.add_task(f"backfill {scenario.config.history_hours:g}h", total=total, detail="")
        sender.send_all(
            scenario.deliveries,
            lambda d: progress.update(task, advance=d.size, detail=f"at {iso(d.at)}"),
        )


def _live(console: Console, scenario: Scenario, sender: DemoSender, clock: SystemClock, minutes: float | None) -> None:
    feed = LiveFeed(scenario)
    until = None if minutes is None else clock.now() + timedelta(minutes=minutes)
    with _progress(console) as progress:
        task = progress.add_task("live", total=None, detail="Ctrl-C to stop")

        def show(delivery: Delivery) -> None:
            progress.update(
                task,
                advance=delivery.size,
                detail=f"{feed.orders} new orders, now {iso(feed.cursor)}",
            )

        try:
            run_live(feed, sender, clock, until=until, progress=show)
        except KeyboardInterrupt:
            console.print("live phase stopped")


def _summary(scenario: Scenario, stats: SendStats, manifest: Path) -> Table:
    table = Table(title="tower demo", show_header=True)
    table.add_column("what")
    table.add_column("count", justify="right")
    for event_type, count in sorted(stats.events.items()):
        table.add_row(f"events {event_type} (CloudEvents)", str(count))
    table.add_row("events as OTLP log records", str(stats.logs_exported))
    table.add_row("spans (OTLP/HTTP)", str(stats.spans_exported))
    if stats.failed:
        table.add_row("[red]not accepted[/red]", str(stats.failed))
    for kind, count in sorted(scenario.injected().items()):
        table.add_row(f"fault {kind}", str(count))
    table.add_row("expected pending cases", str(len(scenario.pending)))
    silent = ", ".join(s for s in scenario.silent_since if s in SOURCE_SYSTEMS) or "none"
    table.add_row(f"silent sources: {silent}", "")
    table.add_row(f"manifest: {manifest}", "")
    return table
