"""Owner routing: first match wins, data fields match, technical rules go to integration, else the rule's owner."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sla_rules.loader import (
    RuleFileError,
    default_routing_file,
    default_rules_dir,
    load_routing,
    load_rule_set,
    load_rules,
)
from sla_rules.model import Rule
from sla_rules.routing import Routing

RULES = {rule.id: rule for rule in load_rules(default_rules_dir())}


def routing_from(tmp_path: Path, text: str) -> Routing:
    path = tmp_path / "routing.yaml"
    path.write_text(textwrap.dedent(text))
    return load_routing(path)


def routing_problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(RuleFileError) as caught:
        routing_from(tmp_path, text)
    prefix = f"{tmp_path}/routing.yaml:"
    assert all(line.startswith(prefix) for line in caught.value.lines), caught.value.lines
    return [line.removeprefix(prefix) for line in caught.value.lines]


def rule(rule_id: str) -> Rule:
    return RULES[rule_id]


def test_first_matching_route_wins(tmp_path: Path) -> None:
    routing = routing_from(
        tmp_path,
        """\
        routes:
          - match: {rule: ship-cutoff, warehouse: RNO}
            owner: warehouse-reno
          - match: {warehouse: [RNO, ATL]}
            owner: west-and-east
          - match: {severity: high}
            owner: escalations
        """,
    )
    cutoff = rule("ship-cutoff")
    assert routing.owner_for(cutoff, {"warehouse": "RNO"}) == "warehouse-reno"
    assert routing.owner_for(cutoff, {"warehouse": "ATL"}) == "west-and-east"
    assert routing.owner_for(rule("order-release"), {"warehouse": "RNO"}) == "west-and-east"
    assert routing.owner_for(cutoff, {"warehouse": "DAL"}) == "escalations"  # ship-cutoff is high
    assert routing.owner_for(rule("order-release"), {"warehouse": "DAL"}) == "customer_service"


def test_data_fields_kind_and_sources_match(tmp_path: Path) -> None:
    routing = routing_from(
        tmp_path,
        """\
        routes:
          - match: {customer_id: 10042, kind: business}
            owner: key-accounts
          - match: {source: wms, rule: [asn-sent, invoice-posting]}
            owner: warehouse
          - match: {source: edi/partner-a}
            owner: transportation
        """,
    )
    release, asn = rule("order-release"), rule("asn-sent")
    assert routing.owner_for(release, {"customer_id": "10042"}) == "key-accounts"  # a YAML number matches as text
    assert routing.owner_for(release, {"customer_id": "10043"}) == "customer_service"
    assert routing.owner_for(release, {}) == "customer_service"  # a field the case lacks never matches
    assert routing.owner_for(asn, {"source": "wms/reno"}) == "warehouse"  # a system covers its paths
    assert routing.owner_for(asn, {"source": "wmsx"}) == "transportation"  # but not a longer name: rule default
    assert routing.owner_for(release, {"source": "wms"}) == "customer_service"
    assert routing.owner_for(release, {"source": "edi/partner-a/inbound"}) == "transportation"
    assert routing.owner_for(release, {"source": "edi/partner-b"}) == "customer_service"


def test_technical_rules_always_go_to_integration(tmp_path: Path) -> None:
    routing = routing_from(tmp_path, "routes:\n  - owner: everyone\n")
    assert routing.owner_for(rule("order-release"), {}) == "everyone"  # an empty match matches everything
    assert routing.owner_for(rule("integration-errors"), {"source": "wms"}) == "integration"
    assert routing.owner_for(rule("source-silence"), {}) == "integration"


def test_no_routes_means_each_rule_keeps_its_owner(tmp_path: Path) -> None:
    routing = routing_from(tmp_path, "# nothing routed yet\n")
    assert {rule_id: routing.owner_for(r, {"warehouse": "RNO"}) for rule_id, r in RULES.items()} == {
        "order-release": "customer_service",
        "ship-cutoff": "warehouse",
        "asn-sent": "transportation",
        "invoice-posting": "finance",
        "inventory-sync": "warehouse",
        "invoice-match": "finance",
        "integration-errors": "integration",
        "source-silence": "integration",
        "tower-jobs": "integration",
        "ingest-refusals": "integration",
        "slack-delivery": "integration",
        "event-id-reuse": "integration",
    }


def test_the_shipped_routing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    routing = load_routing(default_routing_file())
    assert set(routing.owners) == {"customer_service", "warehouse", "transportation", "finance", "integration"}
    assert routing.owner_for(rule("ship-cutoff"), {"warehouse": "RNO"}) == "warehouse"
    assert routing.owner_for(rule("asn-sent"), {"warehouse": "RNO"}) == "transportation"
    assert routing.owner_for(rule("integration-errors"), {"warehouse": "RNO"}) == "integration"
    assert routing.channel_for("warehouse") == "#ops-warehouse"
    loaded = load_rule_set()
    assert len(loaded.rules) == len(loaded.enabled) == 12 and loaded.routing == routing


def test_owners_declare_channels(tmp_path: Path) -> None:
    routing = routing_from(
        tmp_path,
        """\
        owners:
          warehouse: {channel: "#ops-warehouse"}
          integration:
        routes:
          - match: {warehouse: DAL}
            owner: warehouse
        """,
    )
    assert routing.channel_for("warehouse") == "#ops-warehouse"
    assert routing.channel_for("integration") is None and routing.channel_for("nobody") is None
    assert routing.owners_without_channel() == ["integration"]  # its alerts would be recorded unrouted


def test_an_alerts_route_or_default_gives_owners_a_channel(tmp_path: Path) -> None:
    by_route = routing_from(
        tmp_path,
        """        owners:
          warehouse: {channel: "#ops-warehouse"}
          integration:
        alerts:
          routes:
            - match: {owner: integration}
              channel: "#oncall"
        """,
    )
    assert by_route.owners_without_channel() == []
    by_default = routing_from(
        tmp_path,
        """        owners:
          warehouse:
          integration:
        alerts:
          default: {channel: "#alerts"}
        """,
    )
    assert by_default.owners_without_channel() == []
    assert routing_from(tmp_path, "owners:\n  integration:\n  warehouse:\n").owners_without_channel() == [
        "integration",
        "warehouse",
    ]


def test_routing_problems_name_line_and_field(tmp_path: Path) -> None:
    found = routing_problems(
        tmp_path,
        """\
        routes:
          - match: {rule: ship-cutoff, warehose: RNO}
            owner: warehouse
          - match:
              severity: [high, urgent]
            owner: Warehouse Team
          - match: {source: sap}
          - match: {kind: technical}
            owner: transportation
          - match: {source: wms/}
            owner: warehouse
        routs: []
        """,
    )
    assert found == [
        "2: routes[0].match.warehose: unknown field; expected one of rule, kind, severity, source, warehouse, "
        "customer_id, location, sku, order_id, shipment_id, invoice_id",
        "5: routes[1].match.severity[1]: Input should be 'low', 'medium', 'high' or 'critical' (got 'urgent')",
        "6: routes[1].owner: 'Warehouse Team' is not an owner name: lowercase letters, digits, '_', '-' or '.'",
        "7: routes[2].match.source[0]: unknown source 'sap'; systems are erp, wms, tms, crm, ecommerce, edi, "
        "middleware",
        "7: routes[2].owner: required",
        "10: routes[4].match.source[0]: 'wms/' is not a source an event can have: a system, optionally followed by "
        "/path (letters, digits, '.', '_', '~', '-'), e.g. wms/dallas",
        "12: routs: unknown field; expected one of owners, routes, alerts",
    ]


def test_routing_semantic_problems(tmp_path: Path) -> None:
    found = routing_problems(
        tmp_path,
        """\
        owners:
          warehouse: {channel: ops warehouse}
          finance: {channel: "#finance\\n", oncall: "S0FINANCE\\n"}
        routes:
          - match: {kind: technical}
            owner: warehouse
        """,
    )
    # a name ending in a newline (quoted "\n") passed a `$` check: Slack answers channel_not_found at the first alert
    assert found == [
        "2: owners.warehouse.channel: 'ops warehouse' is not a Slack channel: '#name' (lowercase) "
        "or a channel id like C0123ABCD",
        "3: owners.finance.channel: '#finance\\n' is not a Slack channel: '#name' (lowercase) "
        "or a channel id like C0123ABCD",
        "3: owners.finance.oncall: 'S0FINANCE\\n' is not a Slack user group id like S0123ABCD",
    ]
    found = routing_problems(
        tmp_path,
        """\
        owners:
          warehouse: {channel: "#ops-warehouse"}
        routes:
          - match: {kind: technical}
            owner: warehouse
          - match: {warehouse: RNO}
            owner: warehouse-reno
        """,
    )
    assert found == [
        "1: owners: declare 'integration': technical exceptions always go to it",
        "4: routes[0].match.kind: technical exceptions always go to 'integration'; this route never applies",
        "7: routes[1].owner: owner 'warehouse-reno' is not declared under owners:",
    ]
    (syntax,) = routing_problems(tmp_path, "routes: [\n")
    assert syntax.startswith("2: YAML syntax error: ") and "<stream end>" in syntax


def test_routing_file_must_exist_and_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(RuleFileError, match=r"missing\.yaml: cannot read"):
        load_routing(tmp_path / "missing.yaml")
    assert routing_problems(tmp_path, "- owner: x\n") == ["1: expected a mapping with routes: (and owners:)"]


def test_rules_and_routing_are_checked_together(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(
        (default_rules_dir() / "order-release.yaml")
        .read_text()
        .replace("owner: customer_service", "owner: customer-service")
    )
    routing = tmp_path / "routing.yaml"
    routing.write_text(
        "owners:\n  integration:\n  customer_service:\nroutes:\n"
        "  - match: {rule: [order-release, ship-cutof]}\n    owner: customer_service\n"
    )
    with pytest.raises(RuleFileError) as caught:
        load_rule_set(rules, routing)
    owner_line = next(
        i for i, line in enumerate((rules / "r.yaml").read_text().splitlines(), 1) if line.startswith("owner:")
    )
    assert caught.value.lines == [
        f"{routing}:5: routes[0].match.rule: unknown rule 'ship-cutof'",
        f"{rules}/r.yaml:{owner_line}: owner: owner 'customer-service' is not declared under owners: in {routing}",
    ]
    # A bad rules folder and a bad routing file are reported together.
    routing.write_text("routes: {}\n")
    with pytest.raises(RuleFileError) as caught:
        load_rule_set(tmp_path / "none", routing)
    assert caught.value.lines == [
        f"{tmp_path}/none: not a folder of rule files",
        f"{routing}:1: routes: expected a list, got a mapping",
    ]


def test_a_route_to_a_broken_rule_is_not_called_unknown(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    shipped = (default_rules_dir() / "ship-cutoff.yaml").read_text()
    (rules / "ship-cutoff.yaml").write_text(shipped.replace("warning: 2h", "warning: two hours"))
    with pytest.raises(RuleFileError) as caught:
        load_rule_set(rules, default_routing_file())
    (only,) = caught.value.lines
    assert only.startswith(f"{rules}/ship-cutoff.yaml:") and ": warning: 'two hours' is not a duration" in only


def test_numbers_match_as_written(tmp_path: Path) -> None:
    """YAML 1.1 reads 0000100042 as the octal 32802 and [042] as 34: such routes never matched, silently."""
    routing = routing_from(
        tmp_path,
        """\
        routes:
          - match: {customer_id: 0000100042}
            owner: key-accounts
          - match: {warehouse: [042, 1_000, 0x1F, +5, 7]}
            owner: odd-warehouses
        """,
    )
    release = rule("order-release")
    assert routing.routes[0].match.customer_id == ["0000100042"]
    assert routing.routes[1].match.warehouse == ["042", "1_000", "0x1F", "+5", "7"]
    assert routing.owner_for(release, {"customer_id": "0000100042"}) == "key-accounts"
    assert routing.owner_for(release, {"warehouse": "042"}) == "odd-warehouses"
    assert routing.owner_for(release, {"warehouse": "7"}) == "odd-warehouses"
    assert routing.owner_for(release, {"warehouse": "34"}) == "customer_service"
    assert routing_problems(tmp_path, "routes:\n  - match: {customer_id: 100.50}\n    owner: x\n") == [
        "2: routes[0].match.customer_id[0]: write the value in quotes, e.g. '100.5': a number with a fraction is"
        " not kept as written"
    ]


def rule_set_problems(tmp_path: Path, routing_text: str, rule_ids: tuple[str, ...] = ()) -> list[str]:
    """The problems of `routing_text` checked with the shipped rules (or only those of `rule_ids`)."""
    folder = default_rules_dir()
    if rule_ids:
        folder = tmp_path / "rules"
        folder.mkdir(exist_ok=True)
        for rule_id in rule_ids:
            (folder / f"{rule_id}.yaml").write_text((default_rules_dir() / f"{rule_id}.yaml").read_text())
    path = tmp_path / "routing.yaml"
    path.write_text(textwrap.dedent(routing_text))
    try:
        load_rule_set(folder, path)
    except RuleFileError as caught:
        return [line.removeprefix(f"{path}:") for line in caught.lines]
    return []


def test_alert_matches_name_known_rules(tmp_path: Path) -> None:
    found = rule_set_problems(
        tmp_path,
        """\
        alerts:
          routes:
            - match: {rule: ship-cutoff}
              channel: "#ops"
              routes:
                - match: {rule: [ship-cutoff, asn-sen]}
                  channel: "#ops-asn"
            - match: {rule: ship-cutof}
              channel: "#ops"
          windows:
            - name: wms-sunday
              match: {rule: ship-cutof}
              days: [sun]
              start: "22:00"
              end: "02:00"
          root_causes:
            - source: wms/reno
              holds: {rule: ship-cutof}
        """,
        ("ship-cutoff", "asn-sent"),
    )
    assert found == [
        "6: alerts.routes[0].routes[0].match.rule: unknown rule 'asn-sen'",
        "8: alerts.routes[1].match.rule: unknown rule 'ship-cutof'",
        "12: alerts.windows[0].match.rule: unknown rule 'ship-cutof'",
        "18: alerts.root_causes[0].holds.rule: unknown rule 'ship-cutof'",
    ]


def test_a_route_on_a_field_the_rules_cases_never_carry_is_reported(tmp_path: Path) -> None:
    found = rule_set_problems(
        tmp_path,
        """\
        routes:
          - match: {rule: order-release, order_id: SO-R1}
            owner: order-desk
          - match: {rule: asn-sent, shipment_id: SH-1, warehouse: DAL, customer_id: C-1, source: edi}
            owner: asn-desk
          - match: {rule: [order-release, inventory-sync], location: DAL-A1}
            owner: warehouse
          - match: {location: DAL-A1}
            owner: warehouse
          - match: {rule: order-release, location: DAL-A1}
            owner: warehouse
          - match: {rule: [asn-sent, ship-cutoff], invoice_id: IN-1, order_id: SO-1}
            owner: finance
        alerts:
          routes:
            - match: {rule: invoice-posting, sku: S-1}
              channel: "#finance"
        """,
    )
    assert found == [
        "10: routes[4].match.location: the cases of order-release carry no location (only customer_id, order_id,"
        " source, warehouse): this route never applies",
        "12: routes[5].match.invoice_id: the cases of asn-sent, ship-cutoff carry no invoice_id (only customer_id,"
        " order_id, shipment_id, source, warehouse): this route never applies",
        "16: alerts.routes[0].match.sku: the cases of invoice-posting carry no sku (only customer_id, order_id,"
        " source, warehouse): this route never applies",
    ]
