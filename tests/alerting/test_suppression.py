"""Root-cause suppression: while a technical exception is open for a source, the business exceptions it
explains are held back; its alert says how many; those still open when it resolves are alerted then."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path
from typing import Any

from alerting.policy import Conditions
from alerting.suppression import RootCauses
from kernel.clock import FixedClock
from kernel.exceptions import ExceptionRecord, ExceptionStore
from kernel.store import Store
from tests.alerting.policy_support import (
    ROUTING,
    T0,
    TITLES,
    block_text,
    by_key,
    dispatcher,
    messages,
    open_exception,
    routing_from,
    shipped_routing,
    state_of,
)


def silence_of(exceptions: ExceptionStore, source: str) -> ExceptionRecord:
    return open_exception(
        exceptions, "source-silence", source, owner="integration", kind="technical", severity="medium", source=source
    )


def business(exceptions: ExceptionStore, rule: str, key: str, **context: Any) -> ExceptionRecord:
    return open_exception(exceptions, rule, key, owner="warehouse", severity="medium", **context)


def test_a_failing_source_holds_back_what_it_explains_and_says_how_many(store: Store) -> None:
    clock = FixedClock(T0)
    exceptions = ExceptionStore(store, clock)
    dallas = silence_of(exceptions, "wms/dallas")
    cutoff_dal = business(
        exceptions, "ship-cutoff", "SO-1", warehouse="DAL", source="erp"
    )  # routing: wms/dallas -> DAL
    asn_dal = business(exceptions, "asn-sent", "SH-1", source="wms/dallas")  # its own source is covered
    cutoff_atl = business(exceptions, "ship-cutoff", "SO-2", warehouse="ATL", source="erp")
    alerts = dispatcher(store, clock, shipped_routing())

    report = alerts.run()

    assert (report.posted, report.held_back) == (2, {"held": 2})
    found = by_key(alerts.outbox)
    assert set(found) == {f"exc:{dallas.id}:post", f"exc:{cutoff_atl.id}:post"}
    assert "Holding back *2* business exceptions" in block_text(found[f"exc:{dallas.id}:post"])
    for held in (cutoff_dal, asn_dal):
        state = state_of(store, held.id)
        assert (state.decision, state.reason) == ("held", dallas.id)
    assert state_of(store, dallas.id).held == 2

    # The count follows: one more held back, one resolved meanwhile.
    clock.advance(timedelta(minutes=5))
    more = business(exceptions, "ship-cutoff", "SO-3", warehouse="DAL", source="erp")
    alerts.run()
    assert "Holding back *3* business" in block_text(messages(alerts.outbox)[-1])
    exceptions.resolve(more.id, actor="ann")
    alerts.run()
    update = messages(alerts.outbox)[-1]
    assert (update.action, update.parent) == ("update", f"exc:{dallas.id}:post")
    assert "Holding back *2* business" in block_text(update)

    # The WMS recovers: what it held back and is still open is alerted, one message each.
    clock.advance(timedelta(minutes=10))
    exceptions.resolve_many([dallas], "recovered", {}, actor="engine")
    report = alerts.run()
    assert (report.released, report.posted) == (2, 2)
    found = by_key(alerts.outbox)
    assert {f"exc:{cutoff_dal.id}:post", f"exc:{asn_dal.id}:post"} <= set(found)
    assert f"exc:{more.id}:post" not in found
    tech_update = [m for m in messages(alerts.outbox) if m.parent == f"exc:{dallas.id}:post"][-2:]
    assert {m.action for m in tech_update} == {"update", "reply"}
    assert "Holding back" not in block_text(next(m for m in tech_update if m.action == "update"))
    line = next(m for m in found.values() if m.parent == f"exc:{cutoff_dal.id}:post" and m.action == "reply")
    assert line.text == (
        f":hourglass: This alert was held back since 16:00 UTC while {TITLES['source-silence']} (wms/dallas) "
        "was open; that is resolved and this is still open."
    )
    assert alerts.run().enqueued == 0


def test_held_back_exceptions_outliving_it_in_a_burst_come_as_a_digest(store: Store) -> None:
    clock = FixedClock(T0)
    exceptions = ExceptionStore(store, clock)
    outage = silence_of(exceptions, "wms")  # the whole WMS: covers every warehouse's relation
    for n in range(8):
        business(exceptions, "ship-cutoff", f"SO-{n}", warehouse=["DAL", "ATL", "RNO"][n % 3], source="erp")
    alerts = dispatcher(store, clock, shipped_routing(), group_threshold=5)
    assert alerts.run().held_back == {"held": 8}
    clock.advance(timedelta(minutes=30))
    exceptions.resolve_many([outage], "recovered", {}, actor="engine")
    report = alerts.run()
    assert (report.released, report.digests, report.digested, report.posted) == (8, 1, 8, 0)


def test_integration_errors_find_their_source(store: Store, tmp_path: Path) -> None:
    clock = FixedClock(T0)
    exceptions = ExceptionStore(store, clock)

    def errors(service: str, source: str = "") -> ExceptionRecord:
        return open_exception(
            exceptions,
            "integration-errors",
            f"{service}|POST /wms/orders",
            owner="integration",
            kind="technical",
            severity="medium",
            service=service,
            span_name="POST /wms/orders",
            source=source,
            spans=40,
            errors=12,
            ratio=0.3,
            window="15m",
        )

    tagged, mapped, named, unknown = (
        errors("wms-connector", source="wms/dallas"),  # the ingest token's source on its spans
        errors("wms-bridge"),  # mapped by service_sources
        errors("wms"),  # a service named like a source
        errors("mystery"),
    )
    causes = RootCauses([], {"wms-bridge": "wms/reno"})
    assert [causes.source_of(r) for r in (tagged, mapped, named, unknown)] == ["wms/dallas", "wms/reno", "wms", None]
    # an exception that says it is no root cause (ingest-refusals) holds nothing back, whatever its source
    refusals = dataclasses.replace(tagged, rule="ingest-refusals", context={"source": "wms", "root_cause": False})
    assert causes.source_of(refusals) is None

    routing = routing_from(
        tmp_path,
        ROUTING + "alerts:\n  root_causes:\n    - source: wms/reno\n      holds: {warehouse: RNO}\n",
    )
    exceptions.resolve_many([tagged, named], "recovered", {}, actor="engine")
    reno = business(exceptions, "ship-cutoff", "SO-1", warehouse="RNO", source="erp")
    dallas = business(exceptions, "ship-cutoff", "SO-2", warehouse="DAL", source="erp")
    alerts = dispatcher(store, clock, routing, service_sources={"wms-bridge": "wms/reno"})
    alerts.run()
    assert (state_of(store, reno.id).decision, state_of(store, reno.id).reason) == ("held", mapped.id)
    assert state_of(store, dallas.id).decision == "posted"
    post = by_key(alerts.outbox)[f"exc:{mapped.id}:post"]
    assert "Holding back *1* business exception this failure explains" in block_text(post)
    assert "*Errors when opened*\n12 of 40 spans (30%) in 15m" in block_text(post)


def test_technical_exceptions_are_never_held_back(store: Store) -> None:
    clock = FixedClock(T0)
    exceptions = ExceptionStore(store, clock)
    silence_of(exceptions, "wms")
    silence_of(exceptions, "wms/dallas")
    alerts = dispatcher(store, clock, shipped_routing())
    assert alerts.run().posted == 2


def errors_of(exceptions: ExceptionStore, service: str, source: str) -> ExceptionRecord:
    return open_exception(
        exceptions,
        "integration-errors",
        f"{service}|POST /orders",
        owner="integration",
        kind="technical",
        severity="medium",
        service=service,
        span_name="POST /orders",
        source=source,
    )


def test_the_oldest_technical_exception_of_each_source_holds_back_whatever_many_are_open(store: Store) -> None:
    clock = FixedClock(T0)
    exceptions = ExceptionStore(store, clock)
    middleware: list[ExceptionRecord] = []
    for n in range(40):  # the middleware's: they explain no cutoff
        middleware.append(errors_of(exceptions, f"bridge-{n}", "middleware"))
        clock.advance(timedelta(seconds=1))
    whole_wms = silence_of(exceptions, "wms")
    clock.advance(timedelta(minutes=1))
    dallas = silence_of(exceptions, "wms/dallas")  # younger: the whole WMS explains Dallas first
    clock.advance(timedelta(minutes=1))
    cutoff_dal = business(exceptions, "ship-cutoff", "SO-1", warehouse="DAL", source="erp")
    from_middleware = business(exceptions, "asn-sent", "SH-1", source="middleware/edi")
    cutoff_other = business(exceptions, "ship-cutoff", "SO-2", warehouse="XYZ", source="erp")
    alerts = dispatcher(store, clock, shipped_routing(), group_threshold=100)

    report = alerts.run()

    assert report.held_back == {"held": 2}
    assert (state_of(store, cutoff_dal.id).decision, state_of(store, cutoff_dal.id).reason) == ("held", whole_wms.id)
    held = state_of(store, from_middleware.id)
    assert (held.decision, held.reason) == ("held", middleware[0].id)  # the oldest of the forty
    assert state_of(store, cutoff_other.id).decision == "posted"
    assert state_of(store, whole_wms.id).held == 1 and state_of(store, middleware[0].id).held == 1
    assert state_of(store, dallas.id).held == 0 and state_of(store, middleware[1].id).held == 0


def test_conditions_decide_against_the_first_technical_exception_of_each_source(store: Store) -> None:
    clock = FixedClock(T0)
    exceptions = ExceptionStore(store, clock)
    first_wms, first_erp, second_wms, dallas, second_erp = (
        errors_of(exceptions, f"service-{n}", source)
        for n, source in enumerate(("wms", "erp", "wms", "wms/dallas", "erp"))
    )
    technical = [(first_wms, "wms"), (first_erp, "erp"), (second_wms, "wms"), (dallas, "wms/dallas")]
    technical.append((second_erp, "erp"))

    conditions = Conditions(T0, technical=technical)

    assert conditions.technical == technical  # every one, for the held-back counts
    assert conditions.holders == ((first_wms, "wms"), (first_erp, "erp"), (dallas, "wms/dallas"))
    causes = RootCauses(shipped_routing().alerts.root_causes, {})
    values = {"kind": "business", "warehouse": "DAL", "source": "erp"}
    assert causes.holder(values, conditions.holders) == causes.holder(values, technical) == first_wms


def test_the_released_line_escapes_what_senders_named(store: Store) -> None:
    # a span name is the sender's text: `<!channel>` in the holder's key must not page a business channel
    clock = FixedClock(T0)
    exceptions = ExceptionStore(store, clock)
    errors = open_exception(
        exceptions,
        "integration-errors",
        "mule-sync|erp->wms order sync <!channel>",
        owner="integration",
        kind="technical",
        severity="high",
        source="wms/dallas",
    )
    held = business(exceptions, "ship-cutoff", "SO-1", warehouse="DAL", source="erp")
    alerts = dispatcher(store, clock, shipped_routing())
    assert alerts.run().held_back == {"held": 1}
    clock.advance(timedelta(minutes=10))
    exceptions.resolve_many([errors], "recovered", {}, actor="engine")
    assert alerts.run().released == 1
    line = next(m for m in messages(alerts.outbox) if m.parent == f"exc:{held.id}:post" and m.action == "reply")
    assert "<!channel>" not in line.text and "&lt;!channel&gt;" in line.text
    assert "erp-&gt;wms order sync" in line.text
