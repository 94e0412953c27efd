"""Rule files: the shipped defaults load as DESIGN.md says; every problem names its file, line and field."""

from __future__ import annotations

import textwrap
from datetime import date, time, timedelta
from pathlib import Path

import pytest
import yaml

from sla_rules.loader import _LOADERS, RuleFileError, default_rules_dir, load_rules, parse_rule, read_rule_file
from sla_rules.model import Cutoff, ErrorRateRule, JobFailuresRule, ReconciliationRule, SilenceRule, SlaRule

ORDER_RELEASE = """\
id: order-release
type: sla
title: Order released within 2 hours
kind: business
owner: customer_service
key: order_id
start:
  types: [order.accepted]
end:
  types: [order.released]
deadline:
  after: 2h
warning: 30m
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def problems(folder: Path) -> list[str]:
    with pytest.raises(RuleFileError) as caught:
        load_rules(folder)
    assert str(caught.value) == "\n".join(caught.value.lines)
    return caught.value.lines


def with_line(text: str, line: int, replacement: str) -> str:
    """`text` with its 1-based `line` replaced (or removed when `replacement` is empty)."""
    lines = text.splitlines()
    lines[line - 1 : line] = [replacement] if replacement else []
    return "\n".join(lines) + "\n"


# --- the shipped rules --------------------------------------------------------------------------


def test_every_shipped_file_loads_into_the_design_defaults() -> None:
    folder = default_rules_dir()
    assert folder == Path(__file__).resolve().parents[2] / "sla_rules" / "rules"
    files = sorted(p.name for p in folder.iterdir())
    rules = {rule.id: rule for rule in load_rules(folder)}
    assert files == sorted(f"{rule_id}.yaml" for rule_id in rules)
    assert len(rules) == 12
    for rule in rules.values():
        assert rule.title and rule.enabled and rule.severity in ("medium", "high", "critical")
        assert read_rule_file(folder / f"{rule.id}.yaml")[0].rule == rule

    expected_sla = {
        # id: (owner, key, start type, end type, after, warning)
        "order-release": ("customer_service", "order_id", "order.accepted", "order.released", timedelta(hours=2), 30),
        "asn-sent": ("transportation", "shipment_id", "shipment.confirmed", "asn.sent", timedelta(hours=1), 15),
        "invoice-posting": ("finance", "order_id", "shipment.confirmed", "invoice.posted", timedelta(hours=24), 240),
        "ship-cutoff": ("warehouse", "order_id", "order.released", "shipment.confirmed", None, 120),
    }
    # DESIGN.md's "sent by": each side only from the system that sends its events
    sent_by = {"order.accepted": ["erp"], "order.released": ["erp"], "shipment.confirmed": ["wms"]}
    sent_by |= {"asn.sent": ["edi"], "invoice.posted": ["erp"]}
    for rule_id, (owner, key, start, end, after, warning) in expected_sla.items():
        rule = rules[rule_id]
        assert isinstance(rule, SlaRule) and rule.kind == "business"
        assert (rule.owner, rule.key, rule.start.types, rule.end.types) == (owner, key, [start], [end])
        assert (rule.start.sources, rule.end.sources) == (sent_by[start], sent_by[end])
        assert not (rule.start.where or rule.end.where)
        assert rule.deadline.after == after
        assert rule.warning == timedelta(minutes=warning)

    cutoff = rules["ship-cutoff"]
    assert isinstance(cutoff, SlaRule) and isinstance(cutoff.deadline.cutoff, Cutoff)
    assert cutoff.deadline.cutoff.time == time(14, 0)
    assert cutoff.deadline.cutoff.timezone == "America/Chicago"
    assert cutoff.deadline.cutoff.business_days == ["mon", "tue", "wed", "thu", "fri"]
    assert cutoff.deadline.cutoff.zone_by is not None
    assert cutoff.deadline.cutoff.zone_by.field == "warehouse"
    assert cutoff.deadline.cutoff.zone_by.zones == {
        "DAL": "America/Chicago",
        "ATL": "America/New_York",
        "RNO": "America/Los_Angeles",
    }

    inventory, invoice = rules["inventory-sync"], rules["invoice-match"]
    assert isinstance(inventory, ReconciliationRule) and isinstance(invoice, ReconciliationRule)
    assert (inventory.owner, inventory.compare) == ("warehouse", "inventory")
    assert inventory.params == {
        "sources": ["erp", "wms"],
        "tolerance": 0,
        "stale_after": "2h",
        "oversell": {"source": "ecommerce", "tolerance": 0},
    }
    assert (invoice.owner, invoice.compare) == ("finance", "invoice")
    assert invoice.params == {
        "amount_tolerance_pct": 0.5,
        "quantity_tolerance": 0,
        "uninvoiced_after": "7d",
        "unmatched_after": "2h",
        "sources": {"orders": ["erp"], "shipments": ["wms"], "invoices": ["erp"]},
    }

    errors, silence = rules["integration-errors"], rules["source-silence"]
    assert isinstance(errors, ErrorRateRule) and isinstance(silence, SilenceRule)
    assert (errors.kind, errors.owner, silence.kind, silence.owner) == ("technical", "integration") * 2
    jobs = rules["tower-jobs"]
    assert isinstance(jobs, JobFailuresRule) and (jobs.kind, jobs.owner, jobs.params.failures) == (
        "technical",
        "integration",
        3,
    )
    assert (errors.params.window, errors.params.min_spans, errors.params.error_ratio) == (
        timedelta(minutes=15),
        20,
        0.05,
    )
    assert silence.params.window == timedelta(minutes=30) and silence.params.sources == []


def test_default_rules_dir_does_not_depend_on_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert len(load_rules(default_rules_dir())) == 12


# --- what a file may hold -----------------------------------------------------------------------


def test_a_list_file_and_yml_files_load_in_name_order(tmp_path: Path) -> None:
    write(tmp_path, "b.yml", ORDER_RELEASE.replace("order-release", "b-rule"))
    two = textwrap.indent(ORDER_RELEASE, "  ").replace("  id:", "- id:")
    write(tmp_path, "a.yaml", two.replace("order-release", "a-one") + two.replace("order-release", "a-two"))
    write(tmp_path, "notes.txt", "not a rule")
    write(tmp_path, ".hidden.yaml", "not: [a rule")
    write(tmp_path, "C.YAML", ORDER_RELEASE.replace("order-release", "c-rule"))  # as some editors name files
    assert [rule.id for rule in load_rules(tmp_path)] == ["c-rule", "a-one", "a-two", "b-rule"]
    entries = read_rule_file(tmp_path / "a.yaml")
    assert [(e.rule.id, e.line) for e in entries] == [("a-one", 1), ("a-two", 14)]
    assert entries[1].data["deadline"] == {"after": "2h"}


def test_unquoted_cutoff_time_is_a_time_not_a_base_60_number(tmp_path: Path) -> None:
    text = ORDER_RELEASE.replace("  after: 2h\n", "  cutoff:\n    time: 14:00\n").replace("warning: 30m\n", "")
    (rule,) = load_rules(Path(write(tmp_path, "r.yaml", text)).parent)
    assert isinstance(rule, SlaRule) and rule.deadline.cutoff is not None
    assert rule.deadline.cutoff.time == time(14, 0)
    assert read_rule_file(tmp_path / "r.yaml")[0].data["deadline"]["cutoff"]["time"] == "14:00"


def test_holidays_are_yaml_dates(tmp_path: Path) -> None:
    text = ORDER_RELEASE.replace(
        "  after: 2h\n", "  cutoff:\n    time: '14:00'\n    holidays: [2026-12-25, '2026-11-26']\n"
    ).replace("warning: 30m\n", "")
    (rule,) = load_rules(Path(write(tmp_path, "r.yaml", text)).parent)
    assert isinstance(rule, SlaRule) and rule.deadline.cutoff is not None
    assert rule.deadline.cutoff.holidays == [date(2026, 11, 26), date(2026, 12, 25)]


def test_text_that_looks_like_a_date_but_is_none_stays_text(tmp_path: Path) -> None:
    """safe_load raised a bare ValueError (no file, no line) for `2026-02-30`: a start-up traceback."""
    write(tmp_path, "r.yaml", ORDER_RELEASE.replace("title: Order released within 2 hours", "title: 2026-02-30"))
    (rule,) = load_rules(tmp_path)
    assert rule.title == "2026-02-30"


def test_a_filter_takes_one_value_or_a_list(tmp_path: Path) -> None:
    filters = "  types: [order.accepted]\n  where: {warehouse: DAL}\n  where_not: {customer_id: [C-1, C-2]}"
    write(tmp_path, "r.yaml", ORDER_RELEASE.replace("  types: [order.accepted]", filters))
    (rule,) = load_rules(tmp_path)
    assert isinstance(rule, SlaRule)
    assert (rule.start.where, rule.start.where_not) == ({"warehouse": ["DAL"]}, {"customer_id": ["C-1", "C-2"]})


def test_yes_no_on_off_are_text_and_still_read_as_booleans_where_one_is_wanted(tmp_path: Path) -> None:
    # YAML 1.1 reads ON (Ontario) and NO (Norway) as booleans: a warehouse code must stay what was written
    text = ORDER_RELEASE.replace(
        "  after: 2h\n",
        "  cutoff:\n    time: '14:00'\n    zone_by:\n      zones: {DAL: America/Chicago, ON: America/Toronto}\n",
    ).replace("warning: 30m\n", "enabled: no\n")
    text = text.replace("  types: [order.accepted]", "  types: [order.accepted]\n  where: {warehouse: [DAL, ON]}")
    text = text.replace("  types: [order.released]", "  types: [order.released]\n  where_not: {warehouse: NO}")
    write(tmp_path, "r.yaml", text)
    (rule,) = load_rules(tmp_path)
    assert isinstance(rule, SlaRule) and rule.deadline.cutoff is not None and rule.deadline.cutoff.zone_by is not None
    assert rule.start.where == {"warehouse": ["DAL", "ON"]} and rule.end.where_not == {"warehouse": ["NO"]}
    assert rule.deadline.cutoff.zone_by.zones == {"DAL": "America/Chicago", "ON": "America/Toronto"}
    assert rule.enabled is False
    write(tmp_path, "r.yaml", text.replace("enabled: no", "enabled: On"))
    assert load_rules(tmp_path)[0].enabled is True


def test_a_single_type_reads_as_a_list_of_one(tmp_path: Path) -> None:
    write(tmp_path, "r.yaml", ORDER_RELEASE.replace("[order.accepted]", "order.accepted"))
    (rule,) = load_rules(tmp_path)
    assert isinstance(rule, SlaRule) and rule.start.types == ["order.accepted"]


def test_a_single_business_day_or_holiday_reads_as_a_list_of_one(tmp_path: Path) -> None:
    cutoff = "  cutoff:\n    time: '14:00'\n    business_days: sat\n    holidays: 2026-12-26\n"
    write(tmp_path, "r.yaml", ORDER_RELEASE.replace("  after: 2h\n", cutoff).replace("warning: 30m\n", ""))
    (rule,) = load_rules(tmp_path)
    assert isinstance(rule, SlaRule) and rule.deadline.cutoff is not None
    assert rule.deadline.cutoff.business_days == ["sat"]
    assert rule.deadline.cutoff.holidays == [date(2026, 12, 26)]


# --- every kind of problem names file, line and field --------------------------------------------


@pytest.mark.parametrize(
    ("line", "replacement", "expected"),
    [
        (12, "  after: 2hours", "r.yaml:12: deadline.after: '2hours' is not a duration like 90s, 30m, 2h, 1d or 1w"),
        (13, "warning: soon", "r.yaml:13: warning: 'soon' is not a duration"),
        (
            12,
            "  cutoff: {time: '14:00', timezone: America/Chicag}",
            "r.yaml:12: deadline.cutoff.timezone: unknown time zone 'America/Chicag'",
        ),
        (
            12,
            "  after: 2h\n  cutoff: {time: '14:00'}",
            "r.yaml:11: deadline: give exactly one of `after` (a duration) or `cutoff`",
        ),
        (12, "", "r.yaml:11: deadline: expected a mapping, got nothing"),
        # YAML's .inf and a duration longer than a timedelta: a problem with its line, not a traceback
        (12, "  after: .inf", "r.yaml:12: deadline.after: inf is too long for a duration (at most 999999999 days)"),
        (13, "warning: 99999999999d", "r.yaml:13: warning: '99999999999d' is too long for a duration"),
        (12, "  after: .nan", "r.yaml:12: deadline.after: nan is not a duration like 90s, 30m, 2h, 1d or 1w"),
        (8, "  types: {a: b}", "r.yaml:8: start.types: expected a list, got a mapping"),
        # a type no event can have (the doors refuse it) would make the side match nothing, quietly
        (8, "  types: [order.accepted, '']", "r.yaml:8: start.types[1]: '' is not a type an event can have"),
        (10, "  types: 'order released'", "r.yaml:10: end.types[0]: 'order released' is not a type an event can have"),
        (6, "", "r.yaml:1: key: required"),
        (
            8,
            "  types: [order.accepted]\n  wher: {warehouse: DAL}",
            "r.yaml:9: start.wher: unknown field; expected one of types, sources, where",
        ),
        (8, "  types: [order.accepted]\n  sources: [erp, sap]", "r.yaml:9: start.sources[1]: unknown source 'sap'"),
        # a source no event can have (the door refuses it) would make the side match nothing, quietly
        (
            8,
            "  types: [order.accepted]\n  sources: [erp, wms/]",
            "r.yaml:9: start.sources[1]: 'wms/' is not a source an event can have: a system, optionally followed by"
            " /path",
        ),
        (8, "  types: [order.accepted]\n  sources: ['wms/a b']", "r.yaml:9: start.sources[0]: 'wms/a b' is not"),
        (
            8,
            "  types: [order.accepted]\n  where: {warehouse: [DAL, 7.5]}",
            "r.yaml:9: start.where.warehouse[1]: write the value in quotes, e.g. '7.5'",
        ),
        (8, "  types: [order.accepted]\n  where_not: {customer_id: []}", "r.yaml:9: start.where_not.customer_id: List"),
        (
            8,
            "  types: [order.accepted]\n  where_not: {colour: red}",
            "r.yaml:9: start.where_not.colour: cannot filter on 'colour'",
        ),
        (  # a side whose filters contradict each other would match nothing, quietly
            8,
            "  types: [order.accepted]\n  where: {warehouse: DAL}\n  where_not: {warehouse: [DAL, ATL]}",
            "r.yaml:7: start: where_not.warehouse excludes every value where.warehouse allows: the side matches no"
            " event",
        ),
        (3, "title: [a, list]", "r.yaml:3: title: Input should be a valid string"),
        (6, "key: po_number", "r.yaml:6: key: must be one of order_id"),
        (4, "kind: urgent", "r.yaml:4: kind: Input should be 'business' or 'technical' (got 'urgent')"),
        (13, "warning: 3h", "r.yaml:13: warning: the warning window must be shorter than the deadline"),
        (1, "id: Order_Release", "r.yaml:1: id: must be lowercase letters, digits and dashes"),
        (2, "", "r.yaml:1: type: required: one of sla, reconciliation, technical"),
        (2, "type: slo", "r.yaml:2: type: must be one of sla, reconciliation, technical (got 'slo')"),
        (14, "colour: red", "r.yaml:14: colour: unknown field; expected one of id, title, kind, owner"),
        (14, "runbook: wiki/order-release", "r.yaml:14: runbook: must be an http or https URL"),
        (14, "runbook: 'https://wiki/a|b'", "r.yaml:14: runbook: must be an http or https URL"),
        # a name or link ending in a newline (a quoted "\n") passed a `$` check: an id or owner no exception matches
        (14, 'runbook: "https://wiki/x\\n"', "r.yaml:14: runbook: must be an http or https URL"),
        (1, 'id: "order-release\\n"', "r.yaml:1: id: must be lowercase letters, digits and dashes"),
        (5, 'owner: "warehouse\\n"', "r.yaml:5: owner: 'warehouse\\n' is not an owner name"),
        (8, '  types: [order.accepted]\n  where: {"data.lane\\n": x}', "r.yaml:9: start.where.data.lane\n: cannot"),
        (3, "title: x\ntitle: y", "r.yaml:4: title: duplicate key"),
        (
            12,
            "  cutoff:\n    time: '14:00'\n    zone_by:\n      zones:\n        DAL: America/Chicago\n"
            "        RNO: America/Reno",
            "r.yaml:17: deadline.cutoff.zone_by.zones.RNO: unknown time zone 'America/Reno'",
        ),
        (  # a warehouse numbered 7 is a key of the mapping, not an index
            12,
            "  cutoff:\n    time: '14:00'\n    zone_by:\n      zones:\n        DAL: America/Chicago\n"
            "        7: America/Reno",
            "r.yaml:17: deadline.cutoff.zone_by.zones.7: unknown time zone 'America/Reno'",
        ),
        (12, "  cutoff: {time: 1400}", "r.yaml:12: deadline.cutoff.time: write the time as text 'HH:MM'"),
        (
            12,
            "  cutoff: {time: '14:00+02:00'}",
            "r.yaml:12: deadline.cutoff.time: write a local time without an offset, e.g. '14:00': the zone is"
            " `timezone` (or `zone_by`)",
        ),
        (12, "  cutoff: {time: '14:00Z'}", "r.yaml:12: deadline.cutoff.time: write a local time without an offset"),
        (
            12,
            "  cutoff:\n    time: '14:00'\n    holidays: [2026-11-26, 2026-11-31]",
            "r.yaml:14: deadline.cutoff.holidays[1]:",
        ),
        (
            12,
            "  cutoff:\n    time: '14:00'\n    holidays: [0001-01-01]",
            "r.yaml:14: deadline.cutoff.holidays: 0001-01-01 is outside 1970-02-01..2149-05-01",
        ),
    ],
)
def test_a_problem_names_file_line_and_field(tmp_path: Path, line: int, replacement: str, expected: str) -> None:
    write(tmp_path, "r.yaml", with_line(ORDER_RELEASE, line, replacement))
    found = problems(tmp_path)
    assert len(found) == 1, found
    assert found[0].startswith(f"{tmp_path}/{expected}"), found


def test_problems_are_collected_across_files_and_rules(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", with_line(ORDER_RELEASE, 12, "  after: 2hours"))
    write(
        tmp_path,
        "b.yaml",
        """\
        - id: errors
          type: technical
          title: Errors
          kind: business
          owner: integration
        - id: silence
          type: technical
          check: silence
          title: Silence
          kind: technical
          owner: integration
          params: {window: 30m, quiet: true}
        - just text
        """,
    )
    found = problems(tmp_path)
    assert found == [
        f"{tmp_path}/a.yaml:12: deadline.after: '2hours' is not a duration like 90s, 30m, 2h, 1d or 1w",
        f"{tmp_path}/b.yaml:1: check: required for technical rules: one of error-rate, silence, refusals, deliveries,"
        " id-reuse, job-failures",
        f"{tmp_path}/b.yaml:12: params.quiet: unknown field; expected one of window, sources",
        f"{tmp_path}/b.yaml:13: a rule must be a mapping of fields, not text",
    ]


def test_a_rules_problems_read_top_to_bottom(tmp_path: Path) -> None:
    # pydantic reports them in the order of the model's fields, unknown fields last; the file reads by line
    text = ORDER_RELEASE.replace("id: order-release", "id: order-release\ncolour: red")
    write(tmp_path, "r.yaml", text.replace("warning: 30m", "warning: soon") + "severity: urgent\n")
    assert [": ".join(line.split(": ")[:2]).removeprefix(f"{tmp_path}/") for line in problems(tmp_path)] == [
        "r.yaml:2: colour",
        "r.yaml:14: warning",
        "r.yaml:15: severity",
    ]


def test_a_technical_rule_has_kind_technical(tmp_path: Path) -> None:
    write(
        tmp_path,
        "t.yaml",
        "id: errors\ntype: technical\ncheck: error-rate\ntitle: Errors\nkind: business\nowner: integration\n",
    )
    assert problems(tmp_path) == [f"{tmp_path}/t.yaml:5: kind: technical rules have kind technical"]


def test_a_duplicate_id_names_both_files_and_lines(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", ORDER_RELEASE)
    write(tmp_path, "b.yaml", "# the same rule again\n\n" + ORDER_RELEASE)
    assert problems(tmp_path) == [
        f"{tmp_path}/b.yaml:3: id: duplicate rule id 'order-release', also in {tmp_path}/a.yaml:1"
    ]


def test_a_duplicate_id_inside_one_list_file(tmp_path: Path) -> None:
    item = textwrap.indent(ORDER_RELEASE, "  ").replace("  id:", "- id:")
    write(tmp_path, "a.yaml", item + item)
    assert problems(tmp_path) == [
        f"{tmp_path}/a.yaml:14: id: duplicate rule id 'order-release', also in {tmp_path}/a.yaml:1"
    ]
    # read alone (tower rules test validates the file it backtests so), the file has the same problem
    with pytest.raises(RuleFileError) as caught:
        read_rule_file(tmp_path / "a.yaml")
    assert caught.value.lines == [
        f"{tmp_path}/a.yaml:14: id: duplicate rule id 'order-release', also in {tmp_path}/a.yaml:1"
    ]


def test_yaml_syntax_errors_name_their_line(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "id: a\ntitle: [unclosed\nkind: business\n")
    write(tmp_path, "b.yaml", "id: b\n  title: bad indent\n")
    write(tmp_path, "c.yaml", "id: c\n---\nid: d\n")
    found = problems(tmp_path)
    assert [line.split(": ", 1)[0] for line in found] == [
        f"{tmp_path}/a.yaml:3",
        f"{tmp_path}/b.yaml:2",
        f"{tmp_path}/c.yaml:2",
    ]
    assert all("YAML syntax error" in line for line in found)


def test_empty_files_lists_and_folders(tmp_path: Path) -> None:
    assert problems(tmp_path) == [f"{tmp_path}: no rule files (*.yaml, *.yml)"]
    assert problems(tmp_path / "missing") == [f"{tmp_path}/missing: not a folder of rule files"]
    write(tmp_path, "a.yaml", "# nothing here\n")
    write(tmp_path, "b.yaml", "[]\n")
    write(tmp_path, "c.yaml", "- 3\n")
    assert problems(tmp_path) == [
        f"{tmp_path}/a.yaml:1: empty file; expected a rule (a mapping) or a list of rules",
        f"{tmp_path}/b.yaml:1: empty list; expected rules",
        f"{tmp_path}/c.yaml:1: a rule must be a mapping of fields, not a number",
    ]


def test_paths_below_the_working_directory_are_shown_relative(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "rules"
    folder.mkdir()
    write(folder, "r.yaml", with_line(ORDER_RELEASE, 13, "warning: soon"))
    monkeypatch.chdir(tmp_path)
    assert problems(Path("rules"))[0].startswith("rules/r.yaml:13: warning: ")


def test_parse_rule_validates_a_mapping_from_a_request() -> None:
    rule = parse_rule(
        {
            "id": "x",
            "type": "sla",
            "title": "X",
            "kind": "business",
            "owner": "finance",
            "key": "order_id",
            "start": {"types": ["a"]},
            "end": {"types": ["b"]},
            "deadline": {"after": "1h"},
        }
    )
    assert isinstance(rule, SlaRule) and rule.deadline.after == timedelta(hours=1)
    with pytest.raises(RuleFileError) as caught:
        parse_rule({"type": "sla", "id": "x"}, origin="body.rule")
    assert "body.rule: title: required" in caught.value.lines
    assert "body.rule: deadline: required" in caught.value.lines


# --- numbers, sides that cannot be told apart, zone fields, technical params ------------------------


def test_numbers_not_written_plainly_stay_as_written(tmp_path: Path) -> None:
    """YAML 1.1 reads 0000100042 as the octal 32802: the filter would have matched no event, silently."""
    filters = "  types: [order.accepted]\n  where: {customer_id: [0000100042, 1_000, 0x1F, +5, 10042], warehouse: 042}"
    text = ORDER_RELEASE.replace("  types: [order.accepted]", filters).replace("warning: 30m", "warning: 010")
    write(tmp_path, "r.yaml", text)
    (rule,) = load_rules(tmp_path)
    assert isinstance(rule, SlaRule)
    assert rule.start.where == {"customer_id": ["0000100042", "1_000", "0x1F", "+5", "10042"], "warehouse": ["042"]}
    assert rule.warning == timedelta(seconds=10)  # a number field reads the text in decimal, never as octal
    write(tmp_path, "r.yaml", ORDER_RELEASE.replace("  types: [order.accepted]", filters.replace(": 042", ": 4.20")))
    assert problems(tmp_path) == [
        f"{tmp_path}/r.yaml:9: start.where.warehouse[0]: write the value in quotes, e.g. '4.2': a number with a"
        " fraction is not kept as written"
    ]


def test_every_problem_of_a_filter_in_one_pass(tmp_path: Path) -> None:
    filters = "  types: [order.accepted]\n  where: {warehouse: 4.2, plant: X}"
    write(tmp_path, "r.yaml", ORDER_RELEASE.replace("  types: [order.accepted]", filters))
    found = [line.removeprefix(f"{tmp_path}/r.yaml:") for line in problems(tmp_path)]
    assert [line.split(": ", 2)[:2] for line in found] == [
        ["9", "start.where.warehouse[0]"],
        ["9", "start.where.plant"],
    ], found


def with_sides(start: str, end: str) -> str:
    """ORDER_RELEASE with other start and end sides."""
    sides = "start:\n  types: [order.accepted]\nend:\n  types: [order.released]\n"
    return ORDER_RELEASE.replace(sides, f"start:\n{start}\nend:\n{end}\n")


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("  types: [order.released]", "  types: [order.released]"),
        ("  types: [order.released, order.accepted]", "  types: [shipment.confirmed, order.accepted]"),
        # filters that differ but let one event match both sides: the start event of a DAL order ends its case
        ("  types: [order.released]\n  where: {warehouse: DAL}", "  types: [order.released]"),
        (
            "  types: [order.released]\n  where: {warehouse: [DAL, ATL]}",
            "  types: order.released\n  where_not: {warehouse: DAL}",
        ),
        ("  types: [order.released]\n  sources: [wms]", "  types: [order.released]\n  sources: [wms/reno]"),
    ],
)
def test_a_rule_whose_start_event_would_end_its_case_is_refused(tmp_path: Path, start: str, end: str) -> None:
    text = with_sides(start, end)
    write(tmp_path, "r.yaml", text)
    (found,) = problems(tmp_path)
    end_line = next(i for i, line in enumerate(text.splitlines(), 1) if line == "end:") + 1
    assert found.startswith(f"{tmp_path}/r.yaml:{end_line}: end.types: "), found
    assert "also starts a case and nothing tells the sides apart: a case would end at its own start event" in found


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (
            "  types: [order.released]\n  where: {warehouse: DAL}",
            "  types: [order.released]\n  where: {warehouse: RNO}",
        ),
        (
            "  types: [order.released]\n  where: {warehouse: DAL}",
            "  types: order.released\n  where_not: {warehouse: DAL}",
        ),
        ("  types: [order.released]\n  sources: [erp]", "  types: [order.released]\n  sources: [wms]"),
        ("  types: [order.released]\n  sources: [wms/dallas]", "  types: [order.released]\n  sources: [wms/reno]"),
    ],
)
def test_sides_of_one_type_that_exclude_each_other_load(tmp_path: Path, start: str, end: str) -> None:
    write(tmp_path, "r.yaml", with_sides(start, end))
    (rule,) = load_rules(tmp_path)
    assert isinstance(rule, SlaRule) and rule.ends_at_start() == []


def test_a_zone_field_is_a_known_field_or_says_data(tmp_path: Path) -> None:
    cutoff = "  cutoff:\n    time: '14:00'\n    zone_by:\n      field: {field}\n      zones: {{DAL: America/Chicago}}"
    base = ORDER_RELEASE.replace("warning: 30m\n", "")
    write(tmp_path, "r.yaml", base.replace("  after: 2h", cutoff.format(field="warehous")))
    assert problems(tmp_path) == [
        f"{tmp_path}/r.yaml:15: deadline.cutoff.zone_by.field: unknown field 'warehous'; one of order_id, shipment_id,"
        " invoice_id, customer_id, sku, location, warehouse, currency, or data.NAME for another field of the"
        " event's data (e.g. data.dock)"
    ]
    for field in ("location", "data.dock"):
        write(tmp_path, "r.yaml", base.replace("  after: 2h", cutoff.format(field=field)))
        (rule,) = load_rules(tmp_path)
        assert isinstance(rule, SlaRule) and rule.deadline.cutoff and rule.deadline.cutoff.zone_by
        assert rule.deadline.cutoff.zone_by.field == field


TECHNICAL = "id: t\ntype: technical\ntitle: T\nkind: technical\nowner: integration\ncheck: {check}\nparams: {params}\n"


@pytest.mark.parametrize(
    ("check", "params", "expected"),
    [
        (
            "silence",
            "{window: 0s, sources: [SAP, 'wms dallas', wms/reno]}",
            [
                "7: params.window: must be a positive duration, e.g. 30m",
                "7: params.sources[0]: unknown source 'SAP'; systems are erp, wms, tms, crm, ecommerce, edi,"
                " middleware",
                "7: params.sources[1]: unknown source 'wms dallas'; systems are erp, wms, tms, crm, ecommerce, edi,"
                " middleware",
            ],
        ),
        ("error-rate", "{window: 0m, min_spans: 0}", ["7: params.window: ", "7: params.min_spans: "]),
        ("refusals", "{window: 0s}", ["7: params.window: "]),
        ("deliveries", "{window: 0h, min_messages: 0}", ["7: params.window: ", "7: params.min_messages: "]),
        (
            "id-reuse",
            "{window: 0s, every: -5, min_ids: 0}",
            ["7: params.every: ", "7: params.min_ids: ", "7: params.window: "],
        ),
        ("job-failures", "{failures: 0}", ["7: params.failures: "]),
    ],
)
def test_technical_params_are_checked(tmp_path: Path, check: str, params: str, expected: list[str]) -> None:
    write(tmp_path, "t.yaml", TECHNICAL.format(check=check, params=params))
    found = [line.removeprefix(f"{tmp_path}/t.yaml:") for line in problems(tmp_path)]
    assert len(found) == len(expected) and all(
        line.startswith(want) for line, want in zip(sorted(found), sorted(expected), strict=True)
    ), found
    if check == "silence":  # a single source reads as a list of one, paths allowed
        write(tmp_path, "t.yaml", TECHNICAL.format(check=check, params="{window: 5m, sources: wms/reno}"))
        (rule,) = load_rules(tmp_path)
        assert isinstance(rule, SilenceRule) and rule.params.sources == ["wms/reno"]


def test_libyaml_and_the_pure_python_parser_read_files_alike() -> None:
    assert len(_LOADERS) == (2 if yaml.__with_libyaml__ else 1)
    tricky = "at: 14:00\nid: 0042\nwarehouse: ON\nflag: true\nday: 2026-11-31\nholiday: 2026-12-25\nn: 1_000\nk: 7\n"
    files = [p.read_text() for p in sorted(default_rules_dir().parent.rglob("*.yaml"))] + [tricky]
    read = []
    for loader_class in _LOADERS:
        seen = []
        for text in files:
            loader = loader_class(text)
            node = loader.get_single_node()
            seen.append(([key.start_mark.line for key, _ in node.value], loader.construct_document(node)))
            loader.dispose()
        read.append(seen)
    assert all(r == read[0] for r in read)
    assert read[0][-1][1] == {
        "at": "14:00",
        "id": "0042",
        "warehouse": "ON",
        "flag": True,
        "day": "2026-11-31",
        "holiday": date(2026, 12, 25),
        "n": "1_000",
        "k": 7,
    }


def test_keys_that_read_as_one_are_duplicates(tmp_path: Path) -> None:
    # true/True and 7/7.0 make one key of the mapping read (the last would win); '7' (text) and ON/on (codes,
    # text here) stay apart
    write(tmp_path, "a.yaml", "id: a\ntrue: 1\nTrue: 2\n7: x\n7.0: y\n'7': z\nON: 1\non: 2\n")
    assert problems(tmp_path) == [
        f"{tmp_path}/a.yaml:3: True: duplicate key: reads as the same key as 'true' on line 2",
        f"{tmp_path}/a.yaml:5: 7.0: duplicate key: reads as the same key as '7' on line 4",
    ]
