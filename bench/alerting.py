"""Alerting benchmark: a burst of 10,000 exceptions for five owners, delivered to a rate-limited Slack stand-in.

    .venv/bin/python -m bench.alerting [--exceptions N] [--owners a,b,...] [--rate-limit S]
                                       [--send-interval S] [--dispatch-interval S] [--dispatch-delay S] [--keep]

1. Opens an embedded store in its own temp dir and loads the shipped rules and routing file
   (sla_rules/routing.yaml). Each owner gets the exceptions of one of its rules (warehouse:
   ship-cutoff, transportation: asn-sent, customer_service: order-release, finance: invoice-posting,
   integration: integration-errors), its owner computed by the routing as the SLA engine computes it.
2. Starts the Slack stand-in (alerting/standin.py) enforcing one message per second per channel
   (`--rate-limit`, 429 with Retry-After past it), the real dispatcher (`alerts-dispatch`) and the real
   sender (`alerts-send`, the real slack-sdk WebClient in bot mode), each on a loop as the scheduler
   runs them: the sender every `--send-interval` (TOWER_JOB_ALERTS_SEND_INTERVAL_SECONDS, 2 s), the
   dispatcher `--dispatch-delay` after the burst and then every `--dispatch-interval`
   (TOWER_JOB_ALERTS_DISPATCH_INTERVAL_SECONDS, 15 s). Everything runs on the wall clock.
3. **Baseline**, in the same run: one exception per owner (each gets a message of its own); the time from
   its commit to its owner's first message. Then the alerting tables are emptied and a fresh stand-in,
   dispatcher and sender start.
4. **The burst**: the exceptions opened through `ExceptionStore.open_many`, one call per rule as the SLA
   engine makes them, 0.37 of a sender interval after a pass began. Times are counted from the moment the
   last of them is committed, on the stand-in's clock: until each owner's channel received its first
   message, and until the outbox is drained (the last call Slack accepted).
5. **Accounting**, from what the stand-in received: every top-level message carries its outbox key in
   its metadata (`exc:{id}:post` names the exception; `digest:{id}:post` the digest, whose final text
   says how many exceptions it holds and lists the first keys). An exception is accounted for when its
   own message is in its owner's channel, or when its alert state (`alert_state.digest_id`) names a
   digest whose message is in that channel and whose final count equals the number of exceptions that
   name it (so the digest shows every member) and whose listed keys are members' keys. Per channel,
   the exceptions with a message of their own plus the digests' final counts must equal what was
   opened for the owner.

Targets: each owner's first message within 5 s of the burst, fewer than 50 messages (posts, updates and
thread replies) in all, every exception accounted for. Exit code 1 if one is missed or the outbox does not
drain within `--timeout`. Figures and how to read them: bench/README.md.
"""

from __future__ import annotations

import argparse
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from alerting.dispatcher import INTERVAL_SECONDS as DISPATCH_INTERVAL
from alerting.dispatcher import NAME as DISPATCH
from alerting.dispatcher import Dispatcher, DispatchReport
from alerting.outbox import Outbox
from alerting.policy_settings import AlertingSettings
from alerting.sender import METADATA_EVENT, AlertsSendSettings, SlackSender, send_job
from alerting.settings import SlackSettings
from alerting.standin import Call, SlackStandIn
from bench.workdir import temp_workdir
from kernel.clock import SystemClock
from kernel.exceptions import ExceptionRecord, ExceptionStore, NewException
from kernel.jobs import JobContext, JobRegistry, SchedulerSettings, job_settings
from kernel.routing import Routing
from kernel.schema.migrations import migrate
from kernel.store.embedded import EmbeddedStore
from sla_rules.loader import default_routing_file, default_rules_dir, load_routing, load_rules
from sla_rules.model import Rule
from tower.scheduler import Scheduler

FIRST_MESSAGE_TARGET_S = 5.0
MESSAGES_TARGET = 50  # fewer than this many in all
OWNERS = ("warehouse", "transportation", "customer_service", "finance", "integration")
RULE_OF = {
    "warehouse": "ship-cutoff",
    "transportation": "asn-sent",
    "customer_service": "order-release",
    "finance": "invoice-posting",
    "integration": "integration-errors",
}
WAREHOUSES = ("DAL", "ATL", "RNO")
TOKEN = "xoxb-bench"
# emptied between the baseline and the burst
ALERT_TABLES = (
    "exceptions",
    "exception_audit",
    "alert_outbox",
    "alert_deliveries",
    "alert_state",
    "alert_digests",
    "alert_cursors",
)
_DIGEST_COUNT = re.compile(r"^\[\w+\] (\d+) × ")
_FIRST_KEYS = re.compile(r"^First keys: (.*?)(?: and \d+ more)?$", re.M)


def findings(routing: Routing, rules: dict[str, Rule], owners: Sequence[str], count: int) -> list[NewException]:
    """`count` exceptions spread evenly over `owners`, each of its owner's rule, with the context the engine or
    the technical rules give them; the owner comes from the routing, as the engine computes it."""
    now = SystemClock().now()
    found: list[NewException] = []
    for n in range(count):
        owner = owners[n % len(owners)]
        rule = rules[RULE_OF[owner]]
        warehouse = WAREHOUSES[n % len(WAREHOUSES)]
        if rule.kind == "technical":
            service, span = f"connector-{n % 97:02d}", f"POST /v1/orders/{n}"
            key = f"{service}|{span}"
            # the middleware's spans: a source that explains none of the business exceptions (nothing held back)
            context: dict[str, Any] = {"service": service, "span_name": span, "source": "middleware"}
            context.update(spans=120, errors=40, ratio=0.33, window="15m")
        else:
            key = f"{rule.id.upper()[:3]}-{n:06d}"
            context = {"warehouse": warehouse, "customer_id": f"C-{1000 + n % 250}", "source": "erp"}
        routed = routing.owner_for(rule, context)
        if routed != owner:
            raise SystemExit(f"the routing gives {rule.id} ({context}) to {routed}, not {owner}")
        due = now - timedelta(minutes=30 + n % 90) if rule.kind == "business" else None
        found.append(NewException(rule.id, key, rule.kind, routed, rule.severity, due_at=due, context=context))
    return found


class Loop:
    """Runs `work` on a thread at fixed ticks like the scheduler (APScheduler interval, max_instances=1,
    coalesce): the first run `delay` s after start, then every `interval` s; a tick missed while a run
    lasts is skipped."""

    def __init__(self, name: str, work: Callable[[], object], interval: float, delay: float = 0.0) -> None:
        self.name, self.work, self.interval, self.delay = name, work, interval, delay
        self.runs: list[tuple[float, float]] = []  # (started, seconds), perf_counter
        self.results: list[object] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Loop:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=120)

    def _run(self) -> None:
        begun = time.perf_counter()
        tick = begun + self.delay
        while not self._stop.wait(max(0.0, tick - time.perf_counter())):
            started = time.perf_counter()
            try:
                self.results.append(self.work())
            except BaseException as exc:  # reported by the main thread
                self.error = exc
                return
            ended = time.perf_counter()
            self.runs.append((started, ended - started))
            while tick <= ended:
                tick += self.interval


@dataclass
class Loops:
    """The sender and dispatcher as `Loop`s, or as jobs of the tower's own `Scheduler` (`--scheduler`)."""

    items: list[Loop] = field(default_factory=list)
    scheduler: Scheduler | None = None
    recorded: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def check(self) -> None:
        """Raise a loop's or job's error."""
        for loop in self.items:
            if loop.error is not None:
                raise loop.error
        if self.scheduler is not None:
            failed = [f"{run.name}: {run.error}" for run in self.scheduler.last_runs.values() if not run.ok]
            if failed:
                raise RuntimeError("; ".join(failed))

    def stop(self) -> None:
        for loop in self.items:
            loop.stop()
        if self.scheduler is not None:
            self.scheduler.stop()

    def runs(self, name: str) -> list[tuple[float, float]]:
        """(started, seconds) on perf_counter of each run of `name`."""
        if self.scheduler is not None:
            return list(self.recorded.get(name, []))
        return list(next(loop.runs for loop in self.items if loop.name == name))


def scheduled(burst: Callable[[], None], dispatch: Callable[[], None], sender: SlackSender, args: Any) -> Loops:
    """The sender and dispatcher as the tower registers them (`alerts-dispatch` after the job that opens
    exceptions, `alerts-send` after `alerts-dispatch`, the real `send_job`, which asks to run again when a
    channel's next message is due before its next pass), on the tower's Scheduler; the burst is a job run now."""
    loops = Loops()
    registry = JobRegistry()

    def recorded(name: str, work: Callable[[JobContext], object]) -> Callable[[JobContext], None]:
        def job(context: JobContext) -> None:
            begun = time.perf_counter()
            work(context)
            loops.recorded.setdefault(name, []).append((begun, time.perf_counter() - begun))

        return job

    send_settings = AlertsSendSettings(interval_seconds=args.send_interval, batch=args.send_batch)
    send = send_job(sender)

    def send_pass(context: JobContext) -> None:
        # the job with the bench's --send-interval and --send-batch, its requests passed on to the scheduler
        inner = JobContext(context.name, send_settings, context.clock, context.run, context.log)
        send(inner)
        context.again.extend(inner.again)

    registry.add(
        "alerts-send", recorded("alerts-send", send_pass), interval_seconds=args.send_interval, after=(DISPATCH,)
    )
    dispatch_job = recorded(DISPATCH, lambda context: dispatch())
    registry.add(DISPATCH, dispatch_job, interval_seconds=args.dispatch_interval, after=("burst",))
    registry.add("burst", lambda context: burst(), interval_seconds=24 * 3600.0)
    loops.scheduler = Scheduler(registry, SystemClock(), SchedulerSettings(enabled=True, run_on_start=False))
    loops.scheduler.start()
    time.sleep(args.send_interval * 0.37)  # as without the scheduler: the burst lands between two passes
    outcome = loops.scheduler.run_job("burst")
    if not outcome.ok:
        raise RuntimeError(outcome.error)
    return loops


@dataclass
class Phase:
    """What one phase (the baseline, or the burst) measured."""

    opened: dict[str, list[str]]  # owner -> exception ids
    keys: dict[str, str]  # exception id -> key
    committed: datetime  # when the last exception was committed
    commit_s: float  # how long opening them took
    committed_perf: float = 0.0  # the commit on perf_counter, for the loops' runs
    calls: list[Call] = field(default_factory=list)
    snapshot: dict[str, Any] = field(default_factory=dict)
    dispatch: list[tuple[float, DispatchReport]] = field(default_factory=list)  # (seconds, report) per run
    dispatch_runs: list[tuple[float, float]] = field(default_factory=list)  # (started, seconds), perf_counter
    passes: list[tuple[float, float]] = field(default_factory=list)  # the sender's passes, likewise
    drained: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    enqueued_s: float | None = None  # seconds from the commit until the first dispatcher run's posts were enqueued


def run_phase(
    store: EmbeddedStore,
    routing: Routing,
    titles: dict[str, str],
    found: list[NewException],
    owners: Sequence[str],
    args: argparse.Namespace,
) -> Phase:
    """Open `found` as one burst and run the dispatcher and sender against a fresh stand-in until the outbox
    is drained (or `args.timeout`)."""
    for table in ALERT_TABLES:
        store.command(f"TRUNCATE TABLE IF EXISTS {table}")
    clock = SystemClock()
    standin = SlackStandIn(clock=clock, token=TOKEN, rate_limit_seconds=args.rate_limit).start()
    outbox = Outbox(store, clock)
    slack = SlackSettings(bot_token=SecretStr(TOKEN), api_url=standin.api_url)
    sender = SlackSender(outbox, slack, clock)
    dispatcher = Dispatcher(store, outbox, routing, AlertingSettings(), clock, titles, slack.dashboard_url)
    exceptions = ExceptionStore(store, clock)

    by_rule: dict[str, list[NewException]] = {}
    for item in found:
        by_rule.setdefault(item.rule, []).append(item)
    phase = Phase({owner: [] for owner in owners}, {}, clock.now(), 0.0)
    opened_records: list[ExceptionRecord] = []

    def burst() -> None:
        started = time.perf_counter()
        opened_records.extend(record for batch in by_rule.values() for record in exceptions.open_many(batch))
        phase.committed_perf = time.perf_counter()
        phase.commit_s = phase.committed_perf - started
        phase.committed = clock.now()
        for record in opened_records:
            phase.opened[record.owner].append(record.id)
            phase.keys[record.id] = record.key

    def dispatch() -> None:
        begun = time.perf_counter()
        report = dispatcher.run()
        phase.dispatch.append((time.perf_counter() - begun, report))

    def send() -> None:
        sender.send_due(args.send_batch)

    if args.scheduler:
        loops = scheduled(burst, dispatch, sender, args)
    else:
        send_loop = Loop("alerts-send", send, args.send_interval).start()
        time.sleep(args.send_interval * 0.37)  # the burst lands between two passes, at the same point in every run
        burst()
        loops = Loops([send_loop, Loop("alerts-dispatch", dispatch, args.dispatch_interval, args.dispatch_delay)])
        loops.items[1].start()
    deadline = time.perf_counter() + args.timeout
    try:
        while time.perf_counter() < deadline:
            time.sleep(0.2)
            loops.check()
            if not phase.dispatch:
                continue
            decided = store.query("SELECT count() AS n FROM alert_state FINAL")[0]["n"]
            if int(decided) < len(opened_records):
                continue  # until every exception is decided
            counts = outbox.counts()
            if counts["pending"] + counts["attempting"] == 0:
                phase.drained = True
                break
    finally:
        loops.stop()
    phase.passes, phase.dispatch_runs = loops.runs("alerts-send"), loops.runs("alerts-dispatch")
    phase.counts = outbox.counts()
    first_posts = store.query(
        "SELECT max(enqueued_at) AS last FROM alert_outbox FINAL WHERE action = 'post'"
        " AND enqueued_at <= (SELECT min(enqueued_at) FROM alert_outbox) + toIntervalSecond(1)"
    )
    if first_posts and first_posts[0]["last"]:
        enqueued = datetime.fromisoformat(first_posts[0]["last"]).replace(tzinfo=UTC)
        phase.enqueued_s = (enqueued - phase.committed).total_seconds()
    phase.calls = standin.calls
    phase.snapshot = standin.snapshot()
    standin.stop()
    return phase


def first_messages(phase: Phase, channel_ids: dict[str, str]) -> dict[str, float | None]:
    """Per channel name: seconds from the commit to the first message Slack accepted in it."""
    by_id = {cid: name for name, cid in channel_ids.items()}
    first: dict[str, float | None] = dict.fromkeys(channel_ids)
    for call in phase.calls:
        if call.method != "chat.postMessage" or call.status != 200 or not call.response.get("ok") or call.at is None:
            continue
        name = by_id.get(str(call.response.get("channel")))
        if name is not None and first[name] is None:
            first[name] = (call.at - phase.committed).total_seconds()
    return first


def slack_calls(phase: Phase) -> Counter[str]:
    """The calls the stand-in received, by kind: post, reply, update (accepted), 429, error, other."""
    counts: Counter[str] = Counter()
    for call in phase.calls:
        accepted = call.status == 200 and bool(call.response.get("ok"))
        if call.status == 429:
            counts["429"] += 1
        elif call.method == "chat.postMessage":
            counts[("reply" if call.body.get("thread_ts") else "post") if accepted else "error"] += 1
        elif call.method == "chat.update":
            counts["update" if accepted else "error"] += 1
        else:
            counts["other"] += 1
    return counts


def last_accepted(phase: Phase) -> float | None:
    """Seconds from the commit to the last message call Slack accepted."""
    times = [
        (c.at - phase.committed).total_seconds()
        for c in phase.calls
        if c.at is not None and c.method in ("chat.postMessage", "chat.update") and c.status == 200
    ]
    return max(times) if times else None


@dataclass
class Accounting:
    """Where each opened exception shows in Slack."""

    own_message: int = 0
    in_digest: int = 0
    unaccounted: list[str] = field(default_factory=list)
    duplicates: int = 0
    digests: list[tuple[str, str, int, int]] = field(default_factory=list)  # channel, digest id, shown, members
    problems: list[str] = field(default_factory=list)


def account(store: EmbeddedStore, phase: Phase, channels: dict[str, str]) -> Accounting:
    """Account for every opened exception from what the stand-in received (see the module's docstring)."""
    result = Accounting()
    posted: dict[str, str] = {}  # exception id -> channel, from its own message's metadata
    digests: dict[str, tuple[str, int, list[str]]] = {}  # digest id -> channel, final count, listed keys
    seen: Counter[str] = Counter()
    for channel in phase.snapshot["channels"]:
        name = "#" + channel["name"]
        for message in channel["messages"]:
            for m in [message, *message["thread"]]:
                metadata = m.get("metadata") or {}
                if metadata.get("event_type") == METADATA_EVENT:
                    seen[metadata["event_payload"]["key"]] += 1
            metadata = message.get("metadata") or {}
            if metadata.get("event_type") != METADATA_EVENT:
                continue
            key = str(metadata["event_payload"]["key"])
            if key.startswith("exc:") and key.endswith(":post"):
                posted[str(metadata["event_payload"]["exception_id"])] = name
            elif key.startswith("digest:") and key.endswith(":post"):
                count = _DIGEST_COUNT.match(message.get("text", ""))
                listed = _FIRST_KEYS.search(_block_texts(message.get("blocks") or []))
                keys = [_unescape(k.strip()) for k in listed.group(1).split(", ")] if listed else []
                digests[key.split(":")[1]] = (name, int(count.group(1)) if count else -1, keys)
    result.duplicates = sum(n - 1 for n in seen.values() if n > 1)

    ids = [i for members in phase.opened.values() for i in members]
    rows = store.query(
        "SELECT exception_id, decision, digest_id FROM alert_state FINAL WHERE exception_id IN {ids:Array(String)}",
        {"ids": ids},
    )
    state = {r["exception_id"]: (r["decision"], r["digest_id"]) for r in rows}
    members: dict[str, list[str]] = {}
    for exception_id, (decision, digest_id) in state.items():
        if decision == "digest":
            members.setdefault(digest_id, []).append(exception_id)
    truthful: set[str] = set()
    for digest_id, (channel, shown, keys) in digests.items():
        mine = members.get(digest_id, [])
        result.digests.append((channel, digest_id, shown, len(mine)))
        member_keys = {phase.keys.get(i, "") for i in mine}
        if shown != len(mine):
            result.problems.append(f"digest {digest_id} in {channel} shows {shown}, {len(mine)} name it")
        elif not keys or not set(keys) <= member_keys:
            result.problems.append(f"digest {digest_id} in {channel} lists keys that are not its members'")
        else:
            truthful.add(digest_id)
    for owner, exception_ids in phase.opened.items():
        channel = channels[owner]
        total = 0
        for exception_id in exception_ids:
            decision, digest_id = state.get(exception_id, ("", ""))
            if posted.get(exception_id) == channel:
                result.own_message += 1
                total += 1
            elif decision == "digest" and digest_id in truthful and digests[digest_id][0] == channel:
                result.in_digest += 1
            else:
                result.unaccounted.append(exception_id)
        total += sum(shown for c, _, shown, _ in result.digests if c == channel and shown > 0)
        if total != len(exception_ids):
            result.problems.append(f"{channel}: own messages + digest counts = {total}, opened {len(exception_ids)}")
    return result


def _unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _block_texts(blocks: list[dict[str, Any]]) -> str:
    texts: list[str] = []
    for block in blocks:
        text = block.get("text")
        if isinstance(text, dict) and isinstance(text.get("text"), str):
            texts.append(text["text"])
    return "\n".join(texts)


def main() -> int:
    send = AlertsSendSettings()
    dispatch = job_settings("alerts-dispatch", DISPATCH_INTERVAL)()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exceptions", type=int, default=10_000, help="exceptions in the burst (10,000)")
    parser.add_argument("--owners", default=",".join(OWNERS), help="owners, comma-separated (the five)")
    parser.add_argument("--rate-limit", type=float, default=1.0, help="stand-in: 429 past 1 message per S per channel")
    parser.add_argument("--send-interval", type=float, default=send.interval_seconds, help="seconds between passes")
    parser.add_argument("--send-batch", type=int, default=send.batch, help="calls per sender pass at most")
    parser.add_argument(
        "--dispatch-interval", type=float, default=dispatch.interval_seconds, help="seconds between dispatcher runs"
    )
    parser.add_argument(
        "--dispatch-delay", type=float, default=0.0, help="seconds from the burst to the dispatcher's first run (0)"
    )
    parser.add_argument(
        "--scheduler",
        action="store_true",
        help="run the dispatcher and sender as the tower does: jobs of its Scheduler, the dispatcher woken by the"
        " job that opens the burst and the sender by the dispatcher (--dispatch-delay does not apply)",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="give up a phase after this many seconds")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args()
    owners = [o.strip() for o in args.owners.split(",") if o.strip()]
    unknown = [o for o in owners if o not in RULE_OF]
    if unknown:
        parser.error(f"unknown owners {unknown}; choose from {', '.join(OWNERS)}")
    with temp_workdir("tower-bench-alerting-", args.keep) as workdir:
        return run(workdir, owners, args)


def run(workdir: Path, owners: list[str], args: argparse.Namespace) -> int:
    """The benchmark in `workdir` (its own embedded store: chDB allows one data dir per process)."""
    store = EmbeddedStore(workdir / "store")
    migrate(store)
    routing = load_routing(default_routing_file())
    rules = {rule.id: rule for rule in load_rules(default_rules_dir())}
    titles = {rule_id: rule.title for rule_id, rule in rules.items()}
    channels = {owner: routing.channel_for(owner) or "" for owner in owners}
    alerting, slack = AlertingSettings(), SlackSettings()
    when = (
        "woken by the burst's job (the Scheduler's chain; the sender woken by each dispatch),"
        if args.scheduler
        else f"{args.dispatch_delay:g} s after the burst,"
    )
    print(
        f"settings: digest past {alerting.group_threshold} in {alerting.group_window_seconds:g} s; feed batch"
        f" {alerting.feed_batch:,}; channel interval {slack.channel_interval_seconds:g} s; sender pass every"
        f" {args.send_interval:g} s (at most {args.send_batch} calls); dispatcher {when} then every"
        f" {args.dispatch_interval:g} s; stand-in: 429 past 1 message per"
        f" {args.rate_limit:g} s per channel"
    )

    baseline = run_phase(store, routing, titles, findings(routing, rules, owners, len(owners)), owners, args)
    base_first = first_messages(baseline, {c: channel_id(baseline, c) for c in channels.values()})
    print(f"baseline, one exception per owner: {timeline(baseline)}")
    print(f"  first message after: {_seconds(base_first, channels)}; max {_max(base_first)}")

    burst = run_phase(store, routing, titles, findings(routing, rules, owners, args.exceptions), owners, args)
    total = sum(len(ids) for ids in burst.opened.values())
    print(
        f"burst: {total:,} exceptions ({', '.join(f'{o} {len(i):,}' for o, i in burst.opened.items())})"
        f" opened through ExceptionStore.open_many, one call per rule, in {burst.commit_s:.2f} s"
    )
    for seconds, report in burst.dispatch:
        if report.changes or report.enqueued:
            print(
                f"  dispatcher run {seconds:.2f} s: {report.changes:,} changes, {report.posted} posted,"
                f" {report.digests} digests of {report.digested:,} exceptions, {report.updates} updates,"
                f" {report.enqueued} enqueued, held back: {report.held_back or 'none'}"
            )
    print(f"  {timeline(burst)}")
    calls = slack_calls(burst)
    messages = calls["post"] + calls["update"] + calls["reply"]
    print(
        f"messages sent: {messages} ({calls['post']} posts, {calls['update']} updates, {calls['reply']} thread"
        f" replies); Slack calls: {sum(calls.values())} ({calls['429']} answered 429, {calls['error']} errors,"
        f" {calls['other']} others)"
    )
    first = first_messages(burst, {c: channel_id(burst, c) for c in channels.values()})
    worst = max((s for s in first.values() if s is not None), default=None)
    missing = [channel for channel, s in first.items() if s is None]
    print(f"first message after the burst: {_seconds(first, channels)}; max {_max(first)}")
    drain = last_accepted(burst)
    print(
        f"outbox {'drained' if burst.drained else 'NOT drained'}: the last message"
        f" {'-' if drain is None else f'{drain:.2f} s'} after the burst; outbox {burst.counts}"
    )
    accounting = account(store, burst, channels)
    accounted = accounting.own_message + accounting.in_digest
    print(
        f"accounting: {accounted:,} of {total:,} exceptions in Slack ({accounting.own_message:,} in a message of"
        f" their own, {accounting.in_digest:,} in {len(accounting.digests)} digests), {total - accounted:,}"
        f" unaccounted; {accounting.duplicates} messages delivered twice"
    )
    for channel, digest_id, shown, count in sorted(accounting.digests):
        print(f"  {channel}: digest {digest_id[:8]} shows {shown:,}; the alert state of {count:,} exceptions names it")
    for problem in accounting.problems:
        print(f"  problem: {problem}")

    misses: list[str] = []
    if missing:
        misses.append(f"no message in {', '.join(missing)}")
    if worst is not None and worst > FIRST_MESSAGE_TARGET_S:
        misses.append(f"first message after {worst:.2f} s (target {FIRST_MESSAGE_TARGET_S:g} s)")
    if messages >= MESSAGES_TARGET:
        misses.append(f"{messages} messages (target fewer than {MESSAGES_TARGET})")
    if accounting.unaccounted or accounting.problems or accounted != total:
        misses.append(f"{total - accounted:,} exceptions unaccounted")
    if not burst.drained:
        misses.append("the outbox did not drain")
    print(
        f"targets (first message <= {FIRST_MESSAGE_TARGET_S:g} s, < {MESSAGES_TARGET} messages, none lost): "
        + ("all met" if not misses else "MISSED: " + "; ".join(misses))
    )
    store.close()
    return 1 if misses else 0


def timeline(phase: Phase) -> str:
    """The first dispatcher run, and the sender pass that made the first accepted call, in seconds after the
    commit (the dispatcher enqueues before it saves its state, so that pass may begin before the run ends)."""
    if not phase.dispatch_runs:
        return "no dispatcher run"
    started, seconds = phase.dispatch_runs[0]
    text = (
        f"the first dispatcher run began {started - phase.committed_perf:.2f} s after the commit and took"
        f" {seconds:.2f} s"
    )
    if phase.enqueued_s is not None:
        text += f" (its posts enqueued {phase.enqueued_s:.2f} s after the commit)"
    first_call = min(
        (
            (c.at - phase.committed).total_seconds()
            for c in phase.calls
            if c.at is not None and c.status == 200 and c.method == "chat.postMessage"
        ),
        default=None,
    )
    began = [b - phase.committed_perf for b, _ in phase.passes if b - phase.committed_perf <= (first_call or 0.0)]
    if first_call is not None and began:
        text += f"; the sender pass that made the first call began {began[-1]:.2f} s after the commit"
    return text + f"; {len(phase.passes)} sender passes in all"


def channel_id(phase: Phase, name: str) -> str:
    """The stand-in's id of a channel by name ('' when nothing reached it)."""
    for channel in phase.snapshot["channels"]:
        if "#" + channel["name"] == name:
            return str(channel["id"])
    return ""


def _seconds(first: dict[str, float | None], channels: dict[str, str] | None = None) -> str:
    owner_of = {c: o for o, c in (channels or {}).items()}
    parts = [f"{owner_of.get(name, name)} {'-' if s is None else f'{s:.2f} s'}" for name, s in sorted(first.items())]
    return ", ".join(parts)


def _max(first: dict[str, float | None]) -> str:
    values = [s for s in first.values() if s is not None]
    return f"{max(values):.2f} s" if values else "-"


if __name__ == "__main__":
    raise SystemExit(main())
