"""Soak: `tower demo` at 10 times its normal rate for 10 minutes against a `tower serve` subprocess.

    .venv/bin/python -m bench.soak [--minutes 10] [--rate-multiplier 10] [--interval 20]

1. Starts `python -m tower serve` on a fresh data directory (embedded store, scheduler on: the
   SLA evaluation, alert dispatch and the other jobs run on their production schedules).
2. Sends the demo's backfill (the story `tower demo` tells: --orders over --history-hours), then
   runs the demo's live phase (collector.demo LiveFeed, what `tower demo --live` runs) at
   --rate-multiplier times `tower demo`'s default rate of 1 order a minute, for --minutes.
3. Every --interval seconds prints: the server's resident memory from /proc/<pid>/status (VmRSS, and
   its parts RssAnon, the process's own memory, and RssFile, pages of mapped files such as the chDB
   library's code); the ingest lag (a probe CloudEvent is sent and the API's timeline of its key is
   polled until the event shows: send to queryable); the pipeline's queued rows and spool batches
   (/readyz); the events and spans a minute the demo had acknowledged since the last line; and the
   SLA engine runs since the last line with their durations (GET /api/sla/runs).
4. At the end: the memory verdict. Memory is sampled every second. The raw samples are a sawtooth
   (each query and job allocates, then gives it back), so the verdict reads the floor: the lowest
   sample of each minute (shorter windows in runs under 10 minutes: five in the second half). The
   least-squares slope of the floor of the process's own memory (RssAnon, where a leak grows) over
   the second half of the live phase (after warm-up) must be at most --max-slope MiB a minute; the
   slopes of every sample and of VmRSS and RssFile are printed with it. Also the lag and
   evaluation-time figures and the demo's delivery counts.

Exit code 1 when the memory is not flat, the demo had records refused, or the server died.
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.tower_process import tower_process
from bench.workdir import temp_workdir
from collector.demo.scenario import SERVICES, LiveFeed, ScenarioConfig, build_scenario
from collector.demo.senders import DemoSender, run_live
from kernel.clock import SystemClock

NORMAL_RATE = 1.0  # `tower demo --rate` default: live orders a minute
PROBE_SOURCE = "erp"  # never silenced by the demo; the probe's type is one no rule reads
PROBE_TYPE = "soak.probe"
MIB = 1024 * 1024


@dataclass(frozen=True)
class Memory:
    """Resident memory in bytes: all of it (VmRSS); the process's own, anonymous pages (RssAnon: the Python heap,
    chDB's allocations and caches: where a leak grows); and pages of mapped files (RssFile: mostly the code of the
    550 MB chDB library, read in as code paths are first used; clean pages the kernel may drop)."""

    rss: int
    anon: int
    file: int


@dataclass
class Server:
    """A `tower serve` subprocess on its own data directory."""

    proc: subprocess.Popen[bytes]
    url: str
    ingest_tokens: dict[str, str]  # system -> token
    api_token: str
    log: Path

    def memory(self) -> Memory | None:
        """The server process's resident memory from /proc/<pid>/status; None once it is gone."""
        found: dict[str, int] = {}
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                name, _, value = line.partition(":")
                if name in ("VmRSS", "RssAnon", "RssFile"):
                    found[name] = int(value.split()[0]) * 1024
        if len(found) < 3:
            return None
        return Memory(found["VmRSS"], found["RssAnon"], found["RssFile"])


@contextlib.contextmanager
def tower_server(data_dir: Path, eval_interval: float) -> Iterator[Server]:
    """Start `tower serve` (HTTP only, scheduler on) and stop it afterwards."""
    systems = sorted(set(SERVICES.values()) | {PROBE_SOURCE})
    tokens = {system: f"soak-{system}-{secrets.token_hex(12)}" for system in systems}
    api_token = f"soak-viewer-{secrets.token_hex(12)}"
    scheduled = {"TOWER_SCHEDULER_ENABLED": "true", "TOWER_JOB_SLA_EVALUATE_INTERVAL_SECONDS": str(eval_interval)}
    with tower_process(data_dir, tokens, {api_token: "viewer"}, scheduled, start_timeout=120) as running:
        yield Server(running.proc, running.url, tokens, api_token, running.log)


@dataclass
class Samples:
    """What the soak measured."""

    memory: list[tuple[float, Memory]] = field(default_factory=list)  # (monotonic seconds, memory)
    lags: list[float] = field(default_factory=list)  # seconds
    lost_probes: int = 0
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)  # SLA engine runs by run_id
    queued_max: int = 0
    spool_max: int = 0
    last: tuple[float, int, int] = (0.0, 0, 0)  # monotonic time, events and spans acknowledged at the last line


class MemorySampler(threading.Thread):
    """Samples the server's resident memory every second."""

    def __init__(self, server: Server, samples: Samples) -> None:
        super().__init__(daemon=True, name="memory")
        self.server, self.samples = server, samples
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(1.0):
            memory = self.server.memory()
            if memory is not None:
                self.samples.memory.append((time.monotonic(), memory))


class Probe:
    """Ingest lag: a CloudEvent sent through /v1/events, then its key's timeline polled until it shows."""

    def __init__(self, server: Server) -> None:
        headers = {"Authorization": f"Bearer {server.ingest_tokens[PROBE_SOURCE]}"}
        self.ingest = httpx.Client(base_url=server.url, headers=headers, timeout=30)
        self.api = httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {server.api_token}"}, timeout=30
        )
        self.count = 0

    def lag(self, timeout: float = 60.0) -> float | None:
        """Seconds from sending the probe to seeing it through the API; None if it did not show in `timeout`."""
        self.count += 1
        key = f"SOAK-PROBE-{self.count}-{secrets.token_hex(4)}"
        event = {
            "specversion": "1.0",
            "id": key,
            "source": PROBE_SOURCE,
            "type": PROBE_TYPE,
            "time": datetime.now(UTC).isoformat(),
            "subject": key,
            "data": {},
        }
        began = time.monotonic()
        response = self.ingest.post(
            "/v1/events", content=orjson.dumps(event), headers={"Content-Type": "application/cloudevents+json"}
        )
        response.raise_for_status()
        while time.monotonic() - began < timeout:
            timeline = self.api.get(f"/api/timeline/{key}")
            if timeline.status_code == 200 and timeline.json()["timeline"]:
                return time.monotonic() - began
            time.sleep(0.05)
        return None

    def close(self) -> None:
        self.ingest.close()
        self.api.close()


def slope_mib_per_minute(points: list[tuple[float, int]]) -> float:
    """Least-squares slope of RSS over time, in MiB a minute."""
    if len(points) < 3:
        return 0.0
    xs = [t / 60 for t, _ in points]
    ys = [b / MIB for _, b in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0


def floors(points: list[tuple[float, int]], window: float = 60.0) -> list[tuple[float, int]]:
    """The lowest sample of each `window` seconds (at the window's middle): what stays resident once the
    transient allocations of queries and jobs (the sawtooth of the raw samples) are given back."""
    windows: dict[int, list[int]] = {}
    for t, value in points:
        windows.setdefault(int(t // window), []).append(value)
    return [((w + 0.5) * window, min(values)) for w, values in sorted(windows.items())]


def _mib(value: float) -> str:
    return f"{value / MIB:,.0f} MiB"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report_line(server: Server, probe: Probe, sender: DemoSender, samples: Samples, began: float, phase: str) -> str:
    """One progress line: memory, lag, queue, what the demo had acknowledged a minute since the last line, and
    the SLA runs since the last line."""
    memory = server.memory() or Memory(0, 0, 0)
    lag = probe.lag()
    if lag is None:
        samples.lost_probes += 1
    else:
        samples.lags.append(lag)
    ready = probe.api.get("/readyz").json()
    queued, spool = int(ready["queue"]["rows"]), int(ready["spool"]["batches"])
    samples.queued_max, samples.spool_max = max(samples.queued_max, queued), max(samples.spool_max, spool)
    now = time.monotonic()
    stats = sender.stats
    events, spans = sum(stats.events.values()) + stats.logs_exported, stats.spans_exported
    minutes = max(now - samples.last[0], 1e-9) / 60
    events_pm, spans_pm = (events - samples.last[1]) / minutes, (spans - samples.last[2]) / minutes
    samples.last = (now, events, spans)
    runs = probe.api.get("/api/sla/runs", params={"limit": 100}).json()["items"]
    new = [r for r in runs if r["run_id"] not in samples.runs]
    samples.runs.update((r["run_id"], r) for r in runs)
    evals = ", ".join(f"{r['mode'][:4]} {r['duration_ms']:,.0f} ms" for r in reversed(new)) or "-"
    elapsed = time.monotonic() - began
    lag_text = f"{lag * 1000:,.0f} ms" if lag is not None else "LOST"
    return (
        f"{elapsed / 60:5.1f} min {phase:8} rss {_mib(memory.rss):>9} (anon {_mib(memory.anon)}, file"
        f" {_mib(memory.file)})  lag {lag_text:>8}  queue {queued:>5} rows"
        f" spool {spool}  sent {events_pm:6,.0f} events/min {spans_pm:7,.0f} spans/min  SLA runs: {evals}"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the soak and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="minutes of the live phase")
    parser.add_argument(
        "--rate-multiplier", type=float, default=10.0, help=f"times the demo's rate of {NORMAL_RATE:g} order a minute"
    )
    parser.add_argument("--interval", type=float, default=20.0, help="seconds between progress lines")
    parser.add_argument("--orders", type=int, default=300, help="orders in the backfill (`tower demo --orders`)")
    parser.add_argument("--history-hours", type=float, default=48.0, help="hours backfilled")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--eval-interval", type=float, default=60.0, help="seconds between scheduled SLA evaluations")
    parser.add_argument(
        "--max-slope", type=float, default=1.0, help="MiB a minute of RSS growth over the second half still called flat"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (and the server log)")
    args = parser.parse_args(argv)

    samples = Samples()
    clock = SystemClock()
    rate = NORMAL_RATE * args.rate_multiplier
    failed = False
    with (
        temp_workdir("tower-soak-", args.keep) as workdir,
        tower_server(workdir / "tower", args.eval_interval) as server,
    ):
        began = time.monotonic()
        sampler = MemorySampler(server, samples)
        sampler.start()
        probe = Probe(server)
        config = ScenarioConfig(seed=args.seed, orders=args.orders, history_hours=args.history_hours, live_rate=rate)
        scenario = build_scenario(config, clock)
        sender = DemoSender(server.url, {s: server.ingest_tokens[s] for s in set(SERVICES.values())})
        print(f"server pid {server.proc.pid} at {server.url}, data in {workdir}", flush=True)
        backfill_started = time.monotonic()
        samples.last = (backfill_started, 0, 0)
        sender.send_all(scenario.deliveries)
        records = sum(d.size for d in scenario.deliveries)
        print(
            f"backfill: {len(scenario.deliveries)} deliveries, {records:,} records"
            f" ({args.orders} orders over {args.history_hours:g} h) in {time.monotonic() - backfill_started:.1f} s",
            flush=True,
        )
        print(report_line(server, probe, sender, samples, began, "backfill"), flush=True)

        live_started = time.monotonic()
        stop = threading.Event()
        feed = LiveFeed(scenario, rate)
        until = clock.now() + timedelta(minutes=args.minutes)
        live = threading.Thread(
            target=run_live, args=(feed, sender, clock), kwargs={"until": until, "stop": stop.is_set}, daemon=True
        )
        print(f"live: {rate:g} orders a minute ({args.rate_multiplier:g}x) for {args.minutes:g} min", flush=True)
        live.start()
        while True:
            live.join(timeout=args.interval)
            if not live.is_alive():
                break
            if server.proc.poll() is not None:
                print(f"the server exited with {server.proc.returncode}", flush=True)
                failed = True
                stop.set()
                break
            print(report_line(server, probe, sender, samples, began, "live"), flush=True)
        live_ended = time.monotonic()
        sender.close()
        print(report_line(server, probe, sender, samples, began, "after"), flush=True)
        sampler.stopped.set()
        probe.close()

    stats = sender.stats
    print(
        f"demo: {sum(stats.events.values()):,} CloudEvents, {stats.logs_exported:,} OTLP log events,"
        f" {stats.spans_exported:,} spans acknowledged; {feed.orders} live orders;"
        f" refused {stats.events_rejected + stats.spans_failed + stats.logs_failed}"
    )
    if stats.failed:
        failed = True
        print(f"  refused: {stats.rejections[:3]}")
    if samples.lags:
        print(
            f"ingest lag (send -> visible through the API), {len(samples.lags)} probes: p50"
            f" {statistics.median(samples.lags) * 1000:,.0f} ms, p95 {_percentile(samples.lags, 0.95) * 1000:,.0f} ms,"
            f" max {max(samples.lags) * 1000:,.0f} ms; lost {samples.lost_probes}; queue max {samples.queued_max} rows,"
            f" spool max {samples.spool_max} batches"
        )
    durations = [float(r["duration_ms"]) for r in samples.runs.values()]
    if durations:
        modes = sorted({str(r["mode"]) for r in samples.runs.values()})
        print(
            f"SLA evaluation, {len(durations)} runs ({', '.join(modes)}): p50 {statistics.median(durations):,.0f} ms,"
            f" max {max(durations):,.0f} ms"
        )
    live_points = [(t - live_started, m) for t, m in samples.memory if live_started <= t <= live_ended]
    half = (live_ended - live_started) / 2
    first = [(t, m) for t, m in live_points if t < half]
    second = [(t - half, m) for t, m in live_points if t >= half]
    if half < 30:
        print("memory: too short for a verdict (run at least a minute)")
        return 1

    window = min(60.0, half / 5)  # at least five floors in the second half of a short run

    def series(points: list[tuple[float, Memory]], part: str) -> list[tuple[float, int]]:
        return [(t, getattr(m, part)) for t, m in points]

    print(
        f"memory (VmRSS): {_mib(samples.memory[0][1].rss)} at start, {_mib(live_points[0][1].rss)} when the live"
        f" phase began, peak {_mib(max(m.rss for _, m in samples.memory))}; slopes in MiB/min, live phase first half"
        f" (warm-up) / second half ({half / 60:.1f} min, {len(second)} samples), of every sample and of the"
        f" floor (lowest sample of each {window:.0f} s)"
    )
    verdicts: dict[str, float] = {}
    for part, name in (("rss", "VmRSS"), ("anon", "RssAnon"), ("file", "RssFile")):
        low = floors(series(second, part), window)
        verdicts[part] = slope_mib_per_minute(low)
        print(
            f"  {name:7}  all {slope_mib_per_minute(series(first, part)):+6.2f} / "
            f"{slope_mib_per_minute(series(second, part)):+6.2f}   floor"
            f" {slope_mib_per_minute(floors(series(first, part), window)):+6.2f} / {verdicts[part]:+6.2f}"
            f"   second-half floors {' '.join(f'{v / MIB:,.0f}' for _, v in low)} MiB"
        )
    flat = verdicts["anon"] <= args.max_slope
    print(
        f"verdict: memory {'FLAT' if flat else 'GROWING'} after warm-up: the floor of the process's own memory"
        f" (RssAnon) moves {verdicts['anon']:+.2f} MiB/min over the second half (limit {args.max_slope:g});"
        f" VmRSS floor {verdicts['rss']:+.2f} MiB/min"
    )
    return 0 if flat and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
