"""The alert routing tree of the routing file: first match, `continue`, nested routes, the default route;
a bad `alerts:` section is refused naming file, line and field."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from kernel.routing import Destination, Routing
from sla_rules.loader import RuleFileError, load_routing
from tests.alerting.policy_support import shipped_routing

TREE = """\
owners:
  customer_service: {channel: "#cs-orders"}
  warehouse: {channel: "#ops-warehouse", oncall: S0WAREHOUSE}
  warehouse-dallas: {channel: "#ops-dallas", oncall: S0DALLAS1}
  finance: {channel: "#finance-ops"}
  integration: {channel: "#integration-oncall", oncall: S0ONCALL1}
  nochannel:
alerts:
  default: {}
  routes:
    - match: {kind: business, severity: critical}
      channel: "#ops-escalations"
      continue: true
    - match: {rule: ship-cutoff}
      owner: warehouse
      routes:
        - match: {warehouse: DAL}
          owner: warehouse-dallas
        - match: {warehouse: [ATL, RNO], customer_id: 10042}
          channel: ["#key-accounts", "#ops-warehouse"]
    - match: {owner: finance, key: INV-9}
      channel: "#finance-escalations"
    - match: {service: wms-connector}
      owner: warehouse
"""


def load(tmp_path: Path, text: str) -> Routing:
    path = tmp_path / "routing.yaml"
    path.write_text(textwrap.dedent(text))
    return load_routing(path)


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(RuleFileError) as caught:
        load(tmp_path, text)
    prefix = f"{tmp_path}/routing.yaml:"
    assert all(line.startswith(prefix) for line in caught.value.lines), caught.value.lines
    return [line.removeprefix(prefix) for line in caught.value.lines]


def where(routing: Routing, **values: Any) -> list[tuple[str | None, str, str | None]]:
    values.setdefault("kind", "business")
    values.setdefault("severity", "high")
    return [(d.channel, d.owner, d.oncall) for d in routing.destinations(values)]


def test_first_match_nested_routes_continue_and_default(tmp_path: Path) -> None:
    routing = load(tmp_path, TREE)
    # no route matches: the default, the exception owner's channel
    assert where(routing, rule="order-release", owner="customer_service") == [("#cs-orders", "customer_service", None)]
    # a route naming an owner: its channel and on-call group; a child without a match: the parent's target
    assert where(routing, rule="ship-cutoff", owner="customer_service", warehouse="ATL") == [
        ("#ops-warehouse", "warehouse", "S0WAREHOUSE")
    ]
    # the first matching child decides
    assert where(routing, rule="ship-cutoff", owner="warehouse", warehouse="DAL") == [
        ("#ops-dallas", "warehouse-dallas", "S0DALLAS1")
    ]
    assert where(routing, rule="ship-cutoff", owner="warehouse", warehouse="RNO", customer_id="10042") == [
        ("#key-accounts", "warehouse", "S0WAREHOUSE"),
        ("#ops-warehouse", "warehouse", "S0WAREHOUSE"),
    ]
    # continue: true adds the routes after it; nothing else matching, it stands alone (as in Alertmanager)
    assert where(routing, rule="ship-cutoff", owner="warehouse", warehouse="DAL", severity="critical") == [
        ("#ops-escalations", "warehouse", "S0WAREHOUSE"),
        ("#ops-dallas", "warehouse-dallas", "S0DALLAS1"),
    ]
    assert where(routing, rule="order-release", owner="customer_service", severity="critical") == [
        ("#ops-escalations", "customer_service", None)
    ]
    # owner, key and service are matchable
    assert where(routing, rule="invoice-match", owner="finance", key="INV-9") == [
        ("#finance-escalations", "finance", None)
    ]
    assert where(routing, rule="invoice-match", owner="finance", key="INV-8") == [("#finance-ops", "finance", None)]
    assert where(
        routing, rule="integration-errors", owner="integration", kind="technical", service="wms-connector"
    ) == [("#ops-warehouse", "warehouse", "S0WAREHOUSE")]
    # an owner without a channel: a destination without one (the dispatcher records it as unrouted)
    assert routing.destinations({"owner": "nochannel"}) == [Destination(None, "nochannel", None)]


def test_a_default_route_naming_a_channel(tmp_path: Path) -> None:
    routing = load(tmp_path, 'alerts:\n  default: {channel: "#all-alerts"}\n')
    assert where(routing, rule="order-release", owner="customer_service") == [("#all-alerts", "customer_service", None)]


def test_the_shipped_routing_file_sends_each_owner_to_its_channel() -> None:
    routing = shipped_routing()
    expected = {
        "customer_service": "#cs-orders",
        "warehouse": "#ops-warehouse",
        "transportation": "#ops-transport",
        "finance": "#finance-ops",
        "integration": "#integration-oncall",
    }
    assert {owner: [d.channel for d in routing.destinations({"owner": owner})] for owner in expected} == {
        owner: [channel] for owner, channel in expected.items()
    }
    assert [cause.source for cause in routing.alerts.root_causes] == ["wms/dallas", "wms/atlanta", "wms/reno"]
    assert routing.alerts.windows == []


def test_a_bad_alerts_section_names_file_line_and_field(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        owners:
          integration: {channel: "#integration-oncall", oncall: oncall-team}
        alerts:
          default: {chanel: "#x"}
          routes:
            - match: {severity: urgent}
              channel: "ops alerts"
              continue: maybe
            - match: {rule: ship-cutoff}
              routes:
                - match: {colour: red}
                  owner: Warehouse
          windows:
            - name: wms-sunday
              match: {source: sap}
              days: [sunday]
              start: 22:00
              end: 2200
              timezone: Mars/Olympus
          root_causes:
            - source: wms/dallas
        """,
    )
    assert found == [
        "2: owners.integration.oncall: 'oncall-team' is not a Slack user group id like S0123ABCD",
        "4: alerts.default.chanel: unknown field; expected one of channel, owner",
        "6: alerts.routes[0].match.severity[0]: Input should be 'low', 'medium', 'high' or 'critical' (got 'urgent')",
        "7: alerts.routes[0].channel[0]: 'ops alerts' is not a Slack channel: '#name' (lowercase) or a channel id "
        "like C0123ABCD",
        "8: alerts.routes[0].continue: Input should be a valid boolean, unable to interpret input (got 'maybe')",
        "11: alerts.routes[1].routes[0].match.colour: unknown field; expected one of rule, kind, severity, source, "
        "warehouse, customer_id, location, sku, order_id, shipment_id, invoice_id, owner, key, service, span_name",
        "12: alerts.routes[1].routes[0].owner: 'Warehouse' is not an owner name: lowercase letters, digits, '_', '-' "
        "or '.'",
        "15: alerts.windows[0].match.source[0]: unknown source 'sap'; systems are erp, wms, tms, crm, ecommerce, edi, "
        "middleware",
        "16: alerts.windows[0].days[0]: Input should be 'mon', 'tue', 'wed', 'thu', 'fri', 'sat' or 'sun' "
        "(got 'sunday')",
        "18: alerts.windows[0].end: write the time as text 'HH:MM', e.g. '22:00' (got the number 2200)",
        "19: alerts.windows[0].timezone: unknown time zone 'Mars/Olympus'",
        "21: alerts.root_causes[0].holds: required",
    ]


def test_alerts_problems_across_the_file(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        owners:
          integration: {channel: "#integration-oncall"}
          warehouse: {channel: "#ops-warehouse"}
        alerts:
          default: {owner: nobody}
          routes:
            - match: {owner: [warehouse, ghost]}
              routes:
                - owner: phantom
          windows:
            - {name: wms, days: [sun], start: "22:00", end: "22:00"}
            - {name: edi, days: [sat], start: "01:00", end: "02:00"}
            - {name: edi, days: [sun], start: "01:00", end: "02:00"}
          root_causes:
            - source: wms
              holds: {}
        """,
    )
    assert found == [
        "11: alerts.windows[0]: start and end are equal: the window would last no time (or a whole day)",
    ]
    found = problems(
        tmp_path,
        """\
        owners:
          integration: {channel: "#integration-oncall"}
          warehouse: {channel: "#ops-warehouse"}
        alerts:
          default: {owner: nobody}
          routes:
            - match: {owner: [warehouse, ghost]}
              routes:
                - owner: phantom
          windows:
            - {name: edi, days: [sat], start: "01:00", end: "02:00"}
            - {name: edi, days: [sun], start: "01:00", end: "02:00"}
          root_causes:
            - source: wms
              holds: {}
        """,
    )
    assert found == [
        "5: alerts.default.owner: owner 'nobody' is not declared under owners:",
        "7: alerts.routes[0].match.owner: owner 'ghost' is not declared under owners:",
        "9: alerts.routes[0].routes[0].owner: owner 'phantom' is not declared under owners:",
        "12: alerts.windows[1].name: duplicate window name 'edi'",
        "15: alerts.root_causes[0].holds: give at least one condition: an empty `holds` would hold back every "
        "business exception",
    ]
