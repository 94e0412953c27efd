"""`tower rules check` and `tower rules test` (the latter against a real in-process tower)."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result

from kernel.store import Store
from tests.factories import BASE_TIME, event_row, make_event
from tests.support import RunningTower, free_port
from tower.commands.rules import rules

SHIPPED = Path(__file__).resolve().parents[2] / "sla_rules"


def shipped_rules(folder: Path) -> Path:
    """`folder`, made, holding a copy of each shipped rule file (to change one of them)."""
    folder.mkdir()
    for path in (SHIPPED / "rules").glob("*.yaml"):
        (folder / path.name).write_text(path.read_text())
    return folder


def run(args: list[str], env: dict[str, str | None] | None = None) -> Result:
    base: dict[str, str | None] = {"TOWER_SLA_RULES_DIR": None, "TOWER_SLA_ROUTING_FILE": None, "TOWER_TOKEN": None}
    return CliRunner().invoke(rules, args, env={**base, **(env or {})}, catch_exceptions=False)


# --- check --------------------------------------------------------------------------------------


def test_check_the_shipped_rules_lists_each_rule() -> None:
    result = run(["check"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["ID", "TYPE", "OWNER", "KEY", "DEADLINE"]
    rows = {line.split()[0]: line for line in lines[1:-1]}
    assert sorted(rows) == sorted(p.stem for p in (SHIPPED / "rules").glob("*.yaml"))
    assert re.search(
        r"order-release +sla +customer_service +order_id +2h after start, warning 30m", rows["order-release"]
    )
    assert re.search(r"invoice-posting +sla +finance +order_id +24h after start", rows["invoice-posting"])
    assert re.search(r"asn-sent +sla +transportation +shipment_id +1h after start", rows["asn-sent"])
    assert "cutoff 14:00 mon-fri America/Chicago, zone by warehouse (3 zones), warning 2h" in rows["ship-cutoff"]
    assert re.search(
        r"integration-errors +technical/error-rate +integration +- +over 15m: >= 20 spans, > 5% errors",
        rows["integration-errors"],
    )
    assert re.search(r"source-silence +technical/silence +integration +- +silent 30m", rows["source-silence"])
    assert "compare inventory: sources erp,wms, tolerance 0, stale_after 2h" in rows["inventory-sync"]
    jobs = r"tower-jobs +technical/job-failures +integration +- +a tower job failing 3 runs in a row"
    assert re.search(jobs, rows["tower-jobs"])
    refusals = r"ingest-refusals +technical/refusals +integration +- +over 15m: >= 1 records refused"
    assert re.search(refusals, rows["ingest-refusals"])
    delivery = r"slack-delivery +technical/deliveries +integration +- +>= 1 Slack messages failed since a channel"
    assert re.search(delivery, rows["slack-delivery"])
    reuse = r"event-id-reuse +technical/id-reuse +integration +- +over 1h: >= 1 event ids reused for different events,"
    reuse += " checked every 10m"
    assert re.search(reuse, rows["event-id-reuse"])
    assert lines[-1].startswith("12 rules (12 enabled) in ") and "1 route, 5 owners declared" in lines[-1]
    assert "warning:" not in result.output  # every shipped owner has a channel; every type is known


def test_check_warns_of_a_type_that_looks_misspelt(tmp_path: Path) -> None:
    folder = shipped_rules(tmp_path / "rules")
    release = folder / "order-release.yaml"
    release.write_text(release.read_text().replace("types: [order.released]", "types: [order.release, order.picked]"))
    result = run(["check", str(folder)])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert warnings == [  # a custom type far from every known one (order.picked) is taken as meant
        "warning: rule order-release: end type 'order.release' is not a type the tower knows; did you mean"
        " 'order.released'? (the rule finds no event of it)"
    ]


def test_check_warns_of_an_owner_whose_alerts_go_nowhere(tmp_path: Path) -> None:
    routing = tmp_path / "routing.yaml"
    shipped = (SHIPPED / "routing.yaml").read_text()
    routing.write_text(shipped.replace('    channel: "#ops-transport"\n', ""))
    result = run(["check", "--routing", str(routing)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == (
        "warning: owner 'transportation' has no Slack channel and no alerts route gives it one: its alerts are not"
        " posted (recorded `unrouted`; they are on the dashboard)"
    )


def test_check_shows_a_cutoffs_holidays(tmp_path: Path) -> None:
    folder = tmp_path / "rules"
    folder.mkdir()
    shipped = (SHIPPED / "rules" / "ship-cutoff.yaml").read_text()
    (folder / "ship-cutoff.yaml").write_text(shipped.replace("holidays: []", "holidays: [2026-12-25, 2026-11-26]"))
    result = run(["check", str(folder)])  # the shipped routing file names ship-cutoff: it is here
    assert result.exit_code == 0, result.output
    assert "zone by warehouse (3 zones), 2 holidays (2026-11-26..2026-12-25), warning 2h" in result.output
    # a cutoff with seconds shows them
    (folder / "ship-cutoff.yaml").write_text(shipped.replace('time: "14:00"', 'time: "13:59:30"'))
    result = run(["check", str(folder)])
    assert result.exit_code == 0, result.output
    assert "cutoff 13:59:30 mon-fri America/Chicago" in result.output


def test_check_a_folder_with_problems_exits_1_with_one_line_each(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        (SHIPPED / "rules" / "ship-cutoff.yaml")
        .read_text()
        .replace("timezone: America/Chicago", "timezone: America/Chicag")
    )
    (tmp_path / "b.yaml").write_text("id: b\ntitle: [oops\n")
    result = run(["check", str(tmp_path)])
    assert result.exit_code == 1
    text = (SHIPPED / "rules" / "ship-cutoff.yaml").read_text().splitlines()
    zone_line = next(i for i, line in enumerate(text, 1) if "timezone:" in line)
    assert result.output.splitlines() == [
        f"{tmp_path}/a.yaml:{zone_line}: deadline.cutoff.timezone: unknown time zone 'America/Chicag'",
        f"{tmp_path}/b.yaml:3: YAML syntax error: expected ',' or ']', but got '<stream end>' "
        "(while parsing a flow sequence from line 2)",
        "2 problems",
    ]


def test_check_uses_the_given_routing_and_the_settings(tmp_path: Path) -> None:
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "release.yaml").write_text((SHIPPED / "rules" / "order-release.yaml").read_text())
    routing = tmp_path / "routing.yaml"
    routing.write_text("routes:\n  - match: {rule: ship-cutoff}\n    owner: warehouse\n")
    result = run(["check", str(folder), "--routing", str(routing)])
    assert result.exit_code == 1
    assert result.output.splitlines() == [f"{routing}:2: routes[0].match.rule: unknown rule 'ship-cutoff'", "1 problem"]
    # The same folder through TOWER_SLA_RULES_DIR, and a routing file that fits it.
    routing.write_text("routes:\n  - match: {warehouse: RNO}\n    owner: warehouse\n")
    result = run(["check"], env={"TOWER_SLA_RULES_DIR": str(folder), "TOWER_SLA_ROUTING_FILE": str(routing)})
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1].startswith("order-release ")
    assert (
        result.output.splitlines()[-1]
        == f"1 rules (1 enabled) in {folder}; routing {routing}: 1 route, 0 owners declared"
    )


def test_check_reports_a_missing_folder(tmp_path: Path) -> None:
    result = run(["check", str(tmp_path / "nope")])
    assert (result.exit_code, result.output) == (1, f"{tmp_path}/nope: not a folder of rule files\n1 problem\n")


# --- test (backtest) ----------------------------------------------------------------------------


def at(minutes: float) -> str:
    return (BASE_TIME + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def store_events(store: Store, events: list[dict[str, Any]]) -> None:
    store.insert("business_events", [event_row(event) for event in events])


def release_rule(folder: Path) -> Path:
    """A copy of order-release under another id, as someone trying a change would write it."""
    path = folder / "release-test.yaml"
    path.write_text(
        (SHIPPED / "rules" / "order-release.yaml").read_text().replace("id: order-release", "id: release-trial")
    )
    return path


def test_backtest_prints_what_the_rule_would_have_flagged(tower: RunningTower, tmp_path: Path) -> None:
    assert tower.tower is not None
    store = tower.tower.store
    store_events(
        store,
        [
            make_event("order.accepted", 1, time=at(0)),
            make_event("order.released", 1, time=at(180)),  # 3h: late
            make_event("order.accepted", 2, time=at(10)),
            make_event("order.released", 2, time=at(60)),  # met
            make_event("order.accepted", 3, time=at(20)),  # never released: breached
            make_event("order.accepted", 4, time=at(24 * 60 + 30)),  # starts after --to: not a case
        ],
    )
    auth = ["--url", tower.http_url, "--token", tower.api_token()]
    period = ["--from", "2026-11-02", "--to", "2026-11-03T00:00:00+00:00"]
    result = run(["test", *period, str(release_rule(tmp_path)), *auth])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert (
        lines[0] == "backtest of release-trial for starts from 2026-11-02 00:00:00 to 2026-11-03 00:00:00 UTC: 3 cases"
    )
    assert lines[1].split() == ["KEY", "STARTED", "(UTC)", "DUE", "(UTC)", "ENDED", "(UTC)", "STATUS"]
    assert lines[2].split() == [
        "SO-1",
        "2026-11-02",
        "15:00:00",
        "2026-11-02",
        "17:00:00",
        "2026-11-02",
        "18:00:00",
        "late",
    ]
    assert lines[3].split() == ["SO-3", "2026-11-02", "15:20:00", "2026-11-02", "17:20:00", "-", "breached"]
    assert lines[4:] == [
        "counts: breached 1, late 1, met 1",
        "events in the period: start side 3 (3 with order_id), end side 2 (2 with order_id)",  # SO-4 starts later
    ]
    # Nothing live was touched.
    assert store.query("SELECT count() AS n FROM exceptions")[0]["n"] == 0
    assert store.query("SELECT count() AS n FROM sla_cases")[0]["n"] == 0

    every = run(["test", *period, "--all", "--json", str(release_rule(tmp_path)), *auth])
    answer = orjson.loads(every.output)
    assert answer["rule"] == "release-trial" and answer["counts"] == {"breached": 1, "late": 1, "met": 1}
    assert sorted(case["key"] for case in answer["cases"]) == ["SO-1", "SO-2", "SO-3"]
    listed = run(["test", *period, "--all", "--limit", "1", str(release_rule(tmp_path)), *auth])
    assert "... and 2 more (--limit)" in listed.output
    flagged = run(["test", *period, "--limit", "1", str(release_rule(tmp_path)), *auth]).output.splitlines()
    assert [line.split()[0] for line in flagged[2:4]] == ["SO-1", "..."]  # SO-3 the one more, SO-2 met: not flagged
    assert flagged[3] == "... and 1 more (--limit)" and flagged[0].endswith("UTC: 3 cases")


def test_backtest_says_why_a_rule_finds_nothing(tower: RunningTower, tmp_path: Path) -> None:
    assert tower.tower is not None
    store_events(
        tower.tower.store,
        [
            make_event("order.accepted", 1, time=at(0)),
            make_event("order.accepted", 2, time=at(5)),
            make_event("order.released", 1, time=at(30)),
        ],
    )
    rule = release_rule(tmp_path)
    rule.write_text(rule.read_text().replace("types: [order.accepted]", "types: [order.acepted]"))
    auth = ["--url", tower.http_url, "--token", tower.api_token()]
    result = run(["test", "--from", "2026-11-02", "--to", "2026-11-03", str(rule), *auth])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-4:] == [
        "counts: none",
        "events in the period: start side 0 (0 with order_id), end side 1 (1 with order_id)",
        "start side (order.acepted from erp): no event matches, so no case starts",
        "event types in the period: order.accepted 2, order.released 1",
    ]
    answer = orjson.loads(
        run(["test", "--from", "2026-11-02", "--to", "2026-11-03", "--json", str(rule), *auth]).output
    )
    assert answer["matched"] == {
        "start_events": 0,
        "start_keyed": 0,
        "end_events": 1,
        "end_keyed": 1,
        "types": [["order.accepted", 2], ["order.released", 1]],
    }


def test_backtest_refuses_before_calling_the_tower(tmp_path: Path) -> None:
    unreachable = ["--url", f"http://127.0.0.1:{free_port()}", "--token", "x"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(release_rule(tmp_path).read_text().replace("after: 2h", "after: 2 hours"))
    result = run(["test", str(bad), *unreachable])
    assert result.exit_code == 1
    assert result.output.strip() == f"{bad}:21: deadline.after: '2 hours' is not a duration like 90s, 30m, 2h, 1d or 1w"
    result = run(["test", str(SHIPPED / "rules" / "source-silence.yaml"), *unreachable])
    assert result.exit_code == 1 and "only sla rules can be backtested; source-silence is technical" in result.output
    result = run(["test", "--from", "yesterday", str(release_rule(tmp_path)), *unreachable])
    assert result.exit_code == 2 and "'yesterday' is not an ISO 8601 date or time" in result.output
    # a time whose offset takes it out of the years a datetime holds, once in UTC: a usage error, not a traceback
    for option, value in (("--from", "0001-01-01T00:00+01:00"), ("--to", "9999-12-31T23:00-05:00")):
        result = run(["test", option, value, str(release_rule(tmp_path)), *unreachable])
        assert result.exit_code == 2, result.output
        assert f"Invalid value for {option}: {value!r} is out of range in UTC" in result.output
    result = run(["test", str(release_rule(tmp_path)), *unreachable])
    assert result.exit_code == 2 and "cannot reach the tower" in result.output


def test_backtest_shows_the_towers_refusal(tower: RunningTower, tmp_path: Path) -> None:
    viewer = run(["test", str(release_rule(tmp_path)), "--url", tower.http_url, "--token", tower.api_token("viewer")])
    assert viewer.exit_code == 2 and "the tower answered 403" in viewer.output
    backwards = run(
        [
            "test",
            "--from",
            "2026-11-03",
            "--to",
            "2026-11-02",
            str(release_rule(tmp_path)),
            "--url",
            tower.http_url,
            "--token",
            tower.api_token(),
        ]
    )
    assert backwards.exit_code == 2
    assert "the tower answered 422" in backwards.output and "from: `from` must be before `to`" in backwards.output


@pytest.mark.parametrize("choose", [None, "two"])
def test_backtest_of_a_list_file_needs_the_rule_named(tmp_path: Path, choose: str | None) -> None:
    one = release_rule(tmp_path).read_text()
    item = "".join(("  " if line.strip() else "") + line for line in one.splitlines(keepends=True))
    listing = tmp_path / "list.yaml"
    listing.write_text(
        item.replace("  id: release-trial", "- id: one") + item.replace("  id: release-trial", "- id: two")
    )
    args = ["test", str(listing), "--url", f"http://127.0.0.1:{free_port()}", "--token", "x"]
    result = run([*args, "--rule", choose] if choose else args)
    assert result.exit_code == 2
    if choose:
        assert "cannot reach the tower" in result.output  # validated and chosen; only the tower is missing
    else:
        assert "holds several rules (one, two); choose one with --rule" in result.output


DOCS = Path(__file__).resolve().parents[2] / "docs" / "rules.md"


def test_the_routing_example_of_the_docs_checks_as_the_docs_show(tmp_path: Path) -> None:
    text = DOCS.read_text()
    section = text[text.index("## Owner routing") :]
    example = section[section.index("```yaml\n") + len("```yaml\n") : section.index("```\n", section.index("```yaml"))]
    routing = tmp_path / "my-routing.yaml"
    routing.write_text(example)
    result = run(["check", "--routing", str(routing)])
    assert result.exit_code == 0, result.output
    shown = next(line for line in text.splitlines() if line.startswith("12 rules (12 enabled) in my-rules"))
    assert result.output.splitlines()[-1].split(": ", 1)[1] == shown.split(": ", 1)[1]  # "2 routes, 7 owners ..."


def test_the_problems_example_of_the_docs_is_what_check_prints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the shipped rules copied to my-rules/, with a misspelt zone and asn-sent.yaml copied to asn.yaml; the docs'
    # routing example with a channel missing its '#'
    text = DOCS.read_text()
    shown = text[text.index("Otherwise exit code 1") :]
    block = shown[shown.index("```\n") + 4 : shown.index("```\n", shown.index("```\n") + 4)]
    folder = shipped_rules(tmp_path / "my-rules")
    cutoff = folder / "ship-cutoff.yaml"
    cutoff.write_text(cutoff.read_text().replace("timezone: America/Chicago", "timezone: America/Chicag"))
    (folder / "asn.yaml").write_text((folder / "asn-sent.yaml").read_text())
    section = text[text.index("## Owner routing") :]
    routing = section[section.index("```yaml\n") + len("```yaml\n") : section.index("```\n", section.index("```yaml"))]
    (tmp_path / "my-routing.yaml").write_text(routing.replace('{channel: "#ops-reno"}', '{channel: "ops-reno"}'))
    monkeypatch.chdir(tmp_path)
    result = run(["check", "my-rules", "--routing", "my-routing.yaml"])
    assert result.exit_code == 1
    assert result.output == block


def test_check_refuses_a_finding_id_another_rule_has(tmp_path: Path) -> None:
    # inventory-sync opens its stale findings under inventory-stale (a default of its params): a rule of that id, or a
    # second inventory rule with the same defaults, would share its exceptions (and the reconciler resolve them)
    folder = shipped_rules(tmp_path / "rules")
    release = (folder / "order-release.yaml").read_text()
    (folder / "stale.yaml").write_text(release.replace("id: order-release", "id: inventory-stale"))
    result = run(["check", str(folder)])
    assert result.exit_code == 1
    params = (folder / "inventory-sync.yaml").read_text().splitlines().index("params:") + 1
    stale = next(n for n, line in enumerate(release.splitlines(), 1) if line.startswith("id:"))
    assert result.output.splitlines() == [
        f"{folder}/inventory-sync.yaml:{params}: params.stale_rule: inventory-sync opens its findings under"
        f" 'inventory-stale', the id of rule inventory-stale ({folder}/stale.yaml:{stale}): their exceptions would mix"
        " (one would resolve the other's); give the findings an id of their own",
        "1 problem",
    ]
    (folder / "stale.yaml").unlink()
    inventory = (folder / "inventory-sync.yaml").read_text()
    (folder / "inventory-sync-reno.yaml").write_text(inventory.replace("id: inventory-sync", "id: inventory-sync-reno"))
    result = run(["check", str(folder)])
    assert result.exit_code == 1
    assert [line.split(": ", 2)[1] for line in result.output.splitlines()[:-1]] == [
        "params.oversell.rule",
        "params.stale_rule",
    ]
    assert result.output.splitlines()[-1] == "2 problems"


def test_check_names_unknown_rules_in_alert_matches_but_knows_finding_rules(tmp_path: Path) -> None:
    routing = tmp_path / "routing.yaml"
    shipped = (SHIPPED / "routing.yaml").read_text()
    alerts = (
        "  routes:\n"
        "    - match: {rule: [inventory-stale, inventory-oversell, invoice-match]}\n"
        '      channel: "#ops-warehouse"\n'
        "    - match: {rule: ship-cutof}\n"
        '      channel: "#ops-warehouse"\n'
    )
    routing.write_text(shipped.replace("  routes: []\n", alerts))
    result = run(["check", "--routing", str(routing)])
    line = next(i for i, text in enumerate(routing.read_text().splitlines(), 1) if "ship-cutof}" in text)
    assert (result.exit_code, result.output.splitlines()) == (
        1,
        [f"{routing}:{line}: alerts.routes[1].match.rule: unknown rule 'ship-cutof'", "1 problem"],
    )
