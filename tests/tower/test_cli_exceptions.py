"""`tower exceptions list|show|ack|assign|note|resolve` and `tower timeline` against a real tower."""

from __future__ import annotations

from datetime import timedelta

import orjson
import pytest
from click.testing import CliRunner, Result

from kernel.api_auth import token_id
from kernel.clock import FixedClock
from kernel.exceptions import ExceptionStore
from kernel.store import Store
from tests.factories import event_row, make_event, span_row
from tests.support import RunningTower
from tests.tower.test_api_exceptions import OPENED, open_one, seed
from tower.cli import main
from tower.commands.exceptions import _ordinal
from tower.routes import timeline

UNKNOWN = "00000000-0000-4000-8000-000000000000"


def run(tower: RunningTower, args: list[str], role: str = "admin") -> Result:
    env = {"TOWER_TOKEN": tower.api_token(role), "TOWER_URL": tower.http_url, "COLUMNS": "200"}
    return CliRunner().invoke(main, args, env=env, catch_exceptions=False)


def test_list_filters_and_sorts_like_the_api(tower: RunningTower, store: Store) -> None:
    records = seed(store)  # five, one minute apart from 16:00; the last (technical) is the newest
    listed = run(tower, ["exceptions", "list"], role="viewer")
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert lines[0] == "active exceptions: 5 of 5, newest first"
    assert lines[1] == f"{records[4].id}  open  medium  integration-errors  wms/wms.pick"
    assert lines[2] == "  owner integration, opened 2026-11-02 16:04:00 UTC, due 2026-11-02 15:04:00 UTC"
    assert lines[-2] == f"{records[0].id}  open  high  order-release  SO-1"
    assert lines[-1] == (
        "  owner customer_service, opened 2026-11-02 16:00:00 UTC, due 2026-11-02 15:00:00 UTC,"
        " customer_id C-1, warehouse DAL"
    )

    narrowed = run(tower, ["exceptions", "list", "--rule", "ship-cutoff", "--warehouse", "RNO", "--sort", "oldest"])
    assert narrowed.stdout.splitlines()[0] == "active exceptions: 2 of 2, oldest first"
    assert [line.split()[0] for line in narrowed.stdout.splitlines()[1::2]] == [records[2].id, records[3].id]

    page = orjson.loads(run(tower, ["exceptions", "list", "--json", "--limit", "2", "--kind", "business"]).stdout)
    assert page["total"] == 4 and [i["id"] for i in page["items"]] == [records[3].id, records[2].id]

    ExceptionStore(store, FixedClock(OPENED)).resolve(records[0].id, actor="test", resolution="fixed", note="")
    resolved = run(tower, ["exceptions", "list", "--status", "resolved"])
    assert resolved.stdout.splitlines()[1:2] == [f"{records[0].id}  resolved  high  order-release  SO-1"]
    assert "resolved 2026-11-02 16:00:00 UTC (fixed)" in resolved.stdout
    assert run(tower, ["exceptions", "list", "--status", "all"]).stdout.startswith("exceptions: 5 of 5")
    assert run(tower, ["exceptions", "list", "--rule", "no-such"]).stdout == "no active exceptions match\n"


def test_show_prints_the_context_and_the_timeline(tower: RunningTower, store: Store) -> None:
    key = "SO-7"
    accepted = make_event("order.accepted", 7)  # erp, 15:07
    store.insert("business_events", [event_row(accepted)])
    store.insert("otel_traces", [span_row("a" * 32, "b" * 16, OPENED, order_id=key, status="Error")])
    record = open_one(store, OPENED, "order-release", key, context={"customer_id": "C-7", "found": {"late_h": 2}})
    shown = run(tower, ["exceptions", "show", record.id], role="viewer")
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert lines[0] == f"{record.id}  open  high  order-release  SO-7"
    assert "  rule: Order released to the warehouse within 2 hours of acceptance" in lines
    assert lines[lines.index("context:") + 1 :][:2] == ["  customer_id: C-7", '  found: {"late_h":2}']
    timeline = lines[lines.index("timeline:") + 1 :]
    assert timeline[0].startswith(f"  2026-11-02 15:07:00  event  erp             order.accepted  (id {accepted['id']}")
    assert timeline[1].startswith("  2026-11-02 16:00:00  span   ")
    assert "(Error, 1.5 ms, trace " + "a" * 32 + ")" in timeline[1]
    assert timeline[2] == (
        "  2026-11-02 16:00:00  audit  tower           opened  (by engine: owner customer_service,"
        " due_at 2026-11-02T15:00:00Z)"
    )
    as_json = orjson.loads(run(tower, ["exceptions", "show", "--json", record.id]).stdout)
    assert as_json["id"] == record.id and len(as_json["timeline"]) == 3

    unknown = run(tower, ["exceptions", "show", UNKNOWN])
    assert unknown.exit_code == 2 and f"no exception with id '{UNKNOWN}'" in unknown.output
    not_an_id = run(tower, ["exceptions", "show", "SO-7"])
    assert not_an_id.exit_code == 2 and "'SO-7' is not an exception id" in not_an_id.output


def test_actions_by_id_report_each_and_fail_on_refusals(tower: RunningTower, store: Store) -> None:
    first, second, *_ = seed(store)
    admin = token_id(tower.api_token("admin"))
    acked = run(tower, ["exceptions", "ack", first.id, second.id, UNKNOWN])
    assert acked.exit_code == 1
    assert acked.stdout.splitlines() == [
        f"{first.id}: acknowledged; now acknowledged (order-release SO-1)",
        f"{second.id}: acknowledged; now acknowledged (order-release SO-2)",
        f"{UNKNOWN}: not acknowledged: no exception with id '{UNKNOWN}'",
    ]
    again = run(tower, ["exceptions", "ack", first.id])
    assert again.exit_code == 1 and "only open exceptions can be acknowledged" in again.stdout

    assert run(tower, ["exceptions", "assign", first.id, "dana"]).exit_code == 0
    noted = run(tower, ["exceptions", "note", first.id, "dock 4 closed"])
    assert noted.stdout == f"{first.id}: noted; now acknowledged (order-release SO-1)\n"
    done = run(tower, ["exceptions", "resolve", first.id, "--resolution", "carrier", "--note", "next day"])
    assert done.exit_code == 0 and done.stdout == f"{first.id}: resolved (carrier); now resolved (order-release SO-1)\n"
    twice = run(tower, ["exceptions", "resolve", first.id])
    assert twice.exit_code == 1 and "already resolved" in twice.stdout

    trail = [(a["actor"], a["action"], a["detail"]) for a in ExceptionStore(store, FixedClock(OPENED)).audit(first.id)]
    assert trail[1:4] == [
        (admin, "acknowledged", {}),
        (admin, "assigned", {"assignee": "dana"}),
        (admin, "note", {"text": "dock 4 closed"}),
    ]
    assert trail[4][1:] == ("resolved", {"resolution": "carrier", "note": "next day"})


def test_refusals_that_are_not_about_the_exception_stop_at_once(tower: RunningTower, store: Store) -> None:
    first, second, *_ = seed(store)
    viewer = run(tower, ["exceptions", "ack", first.id, second.id], role="viewer")
    assert viewer.exit_code == 2 and "the tower answered 403" in viewer.output
    assert first.id not in viewer.stdout  # nothing reported as done
    bad_word = run(tower, ["exceptions", "resolve", first.id, "--resolution", "Not A Word"])
    assert bad_word.exit_code == 2 and "the tower answered 422" in bad_word.output
    both = run(tower, ["exceptions", "resolve", first.id, "--rule", "order-release", "--note", "x"])
    assert both.exit_code == 2 and "give exception ids, or filters, not both" in both.output
    no_note = run(tower, ["exceptions", "resolve", "--rule", "order-release", "--yes"])
    assert no_note.exit_code == 2 and "--note: say why" in no_note.output
    assert run(tower, ["exceptions", "note", first.id, "  "]).exit_code == 2
    listed = orjson.loads(run(tower, ["exceptions", "list", "--json"]).stdout)
    assert {item["status"] for item in listed["items"]} == {"open"}  # none of the above changed anything


def test_a_bulk_resolve_over_max_says_how_many_it_would_resolve(tower: RunningTower, store: Store) -> None:
    """The dry run said "4 ... match; pass --yes to resolve them" when --max 2 would resolve only the oldest 2;
    and --max had no help."""
    records = seed(store)  # four business exceptions, one minute apart
    args = ["exceptions", "resolve", "--kind", "business", "--note", "ERP outage INC-9", "--max", "2"]
    counted = run(tower, args)
    assert counted.exit_code == 0, counted.output
    assert counted.stdout == (
        "4 active exceptions match (kind business); pass --yes to resolve the oldest 2 of them (fixed, --max 2)\n"
    )
    within = run(tower, [*args[:-1], "4"])
    assert within.stdout.endswith("; pass --yes to resolve them (fixed)\n")  # all of them: as before
    done = run(tower, [*args, "--yes"])
    assert done.stdout.splitlines() == [
        "resolved 2 of 4 active exceptions (kind business) as fixed",
        "2 left (over --max, or changed meanwhile): run it again",
    ]
    statuses = {
        item["id"]: item["status"]
        for item in orjson.loads(run(tower, ["exceptions", "list", "--json", "--status", "all"]).stdout)["items"]
    }
    assert [statuses[r.id] for r in records[:4]] == ["resolved", "resolved", "open", "open"]  # the oldest first
    helped = run(tower, ["exceptions", "resolve", "--help"])
    max_help = " ".join(helped.stdout.split("--max", 1)[1].split("--yes", 1)[0].split())
    assert "at most this many, the oldest first" in max_help


def test_timeline_of_a_key_with_its_exceptions(tower: RunningTower, store: Store) -> None:
    key = "wms/wms.pick"  # a technical subject: a slash in the key
    record = seed(store)[4]
    shown = run(tower, ["timeline", key], role="viewer")
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert lines[0] == "wms/wms.pick: 0 entries (events and spans), 1 exception"
    assert lines[1] == f"  exception {record.id}  open  integration-errors  owner integration"
    assert lines[2] == "  nothing recorded for this key"

    store.insert("business_events", [event_row(make_event("order.accepted", 7))])  # SO-7
    order = run(tower, ["timeline", "SO-7"]).stdout.splitlines()
    assert order[0] == "SO-7: 1 entry (events and spans), 0 exceptions"
    assert order[1].startswith("  2026-11-02 15:07:00  event  erp             order.accepted  (id ")
    assert orjson.loads(run(tower, ["timeline", "--json", "SO-7"]).stdout)["key"] == "SO-7"


def test_a_cut_timeline_says_the_newest_are_listed(
    tower: RunningTower, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tower keeps a long key's newest events (docs/api.md, the dashboard); the command said the oldest."""
    monkeypatch.setattr(timeline, "TIMELINE_LIMIT", 1)
    store.insert("business_events", [event_row(make_event("order.accepted", 7, data={"order_id": "SO-7"}))])
    store.insert("business_events", [event_row(make_event("order.released", 9, data={"order_id": "SO-7"}))])
    lines = run(tower, ["timeline", "SO-7"]).stdout.splitlines()
    assert "order.released" in lines[1] and len(lines) == 3
    assert (
        lines[2]
        == "  (cut: the key has more events or spans than the tower shows; the newest are listed, the oldest left out)"
    )


def test_a_key_with_more_exceptions_than_listed_says_so(
    tower: RunningTower, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(timeline, "KEY_EXCEPTIONS", 1)
    first = open_one(store, OPENED, "order-release", "SO-7")
    newest = open_one(store, OPENED + timedelta(minutes=1), "ship-cutoff", "SO-7", owner="warehouse")
    lines = run(tower, ["timeline", "SO-7"]).stdout.splitlines()
    assert lines[0] == "SO-7: 0 entries (events and spans), 2 exceptions (the newest 1 listed)"
    assert lines[1] == f"  exception {newest.id}  open  ship-cutoff  owner warehouse"
    assert first.id not in "\n".join(lines)


def test_list_pages_on_with_offset_and_says_which_it_lists(tower: RunningTower, store: Store) -> None:
    """The API takes `offset`, the command did not: past the first --limit, the older exceptions could not be
    listed. With it, the header numbers the page's place in the order rather than calling it the newest."""
    records = seed(store)
    page = run(tower, ["exceptions", "list", "--limit", "2", "--offset", "2"], role="viewer")
    assert page.exit_code == 0, page.output
    lines = page.stdout.splitlines()
    assert lines[0] == "active exceptions: 3rd to 4th of 5, newest first"
    assert [line.split()[0] for line in lines[1::2]] == [records[2].id, records[1].id]

    last = run(tower, ["exceptions", "list", "--offset", "4", "--sort", "oldest"]).stdout.splitlines()
    assert last[0] == "active exceptions: 5th of 5, oldest first"
    assert last[1].split()[0] == records[4].id and len(last) == 3

    past = run(tower, ["exceptions", "list", "--offset", "5"])
    assert past.exit_code == 0 and past.stdout == "no active exceptions past the first 5 (5 in all)\n"
    as_json = orjson.loads(run(tower, ["exceptions", "list", "--json", "--offset", "3"]).stdout)
    assert as_json["total"] == 5 and [i["id"] for i in as_json["items"]] == [records[1].id, records[0].id]
    negative = run(tower, ["exceptions", "list", "--offset", "-1"])
    assert negative.exit_code == 2 and "--offset" in negative.output
    numbers = (1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 101, 111, 112)
    ordinals = ["1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "23rd", "101st", "111th", "112th"]
    assert [_ordinal(n) for n in numbers] == ordinals
