"""Reconciliation params: typed, validated at load time with `file:line: params.field: message`, and a tower
with a bad one does not start."""

from __future__ import annotations

import shutil
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from kernel.store import Store
from reconcilers.config import (
    OVERSELL_TITLE,
    PARAMS_MODELS,
    STALE_TITLE,
    InventoryParams,
    InvoiceParams,
    check_finding_rules,
    params_context,
    rule_config,
)
from reconcilers.settings import ReconcileSettings
from sla_rules.loader import ParamsModels, RuleFileError, default_routing_file, default_rules_dir, load_rule_set
from sla_rules.model import ReconciliationRule
from tests.factories import make_settings
from tests.reconcilers.factories import inventory_rule, invoice_rule
from tower.app import build_tower


def rules_with(tmp_path: Path, name: str, text: str) -> Path:
    """A copy of the shipped rules with one file replaced."""
    folder = tmp_path / "rules"
    shutil.copytree(default_rules_dir(), folder)
    (folder / name).write_text(text)
    return folder


INVENTORY = """\
id: inventory-sync
type: reconciliation
title: ERP and WMS inventory agree
kind: business
owner: warehouse
compare: inventory
params:
  sources: [erp, wms]
  tolerance: {tolerance}
  stale_after: 2h
{extra}"""


def load(folder: Path, databases: tuple[str, ...] = ()) -> list[ReconciliationRule]:
    rules = load_rule_set(folder, default_routing_file(), ParamsModels(PARAMS_MODELS, params_context(databases)))
    return [r for r in rules.rules if isinstance(r, ReconciliationRule)]


def test_the_shipped_params_load_into_typed_configs() -> None:
    rules = {r.id: r for r in load(default_rules_dir())}
    inventory = rule_config(
        "inventory-sync", "t", "business", "warehouse", "medium", "inventory", rules["inventory-sync"].params
    )
    assert isinstance(inventory.params, InventoryParams)
    assert inventory.params.sources == ["erp", "wms"] and inventory.params.tolerance == 0
    assert inventory.params.stale_after == timedelta(hours=2)
    assert inventory.params.oversell is not None and inventory.params.oversell.source == "ecommerce"
    assert [f.id for f in inventory.finding_rules()] == ["inventory-sync", "inventory-oversell", "inventory-stale"]
    invoice = rule_config("invoice-match", "t", "business", "finance", "high", "invoice", rules["invoice-match"].params)
    assert isinstance(invoice.params, InvoiceParams)
    assert invoice.params.amount_tolerance_pct == Decimal("0.5") and invoice.params.quantity_tolerance == 0
    assert invoice.params.uninvoiced_after == timedelta(days=7)
    sources = invoice.params.sources
    assert (sources.orders, sources.shipments, sources.invoices) == (["erp"], ["wms"], ["erp"])  # DESIGN.md


@pytest.mark.parametrize(
    ("tolerance", "extra", "problem"),
    [
        ("-1", "", "9: params.tolerance: Input should be greater than or equal to 0 (got -1)"),
        ("yes", "", "9: params.tolerance: expected a number, got 'yes'"),
        (
            "0",
            "  stale_after_x: 1h\n",
            "11: params.stale_after_x: unknown field; expected one of sources, tolerance, stale_after, lookback,"
            " oversell, stale_rule, stale_title, pull",
        ),
        ("0", "  lookback: soon\n", "11: params.lookback: 'soon' is not a duration like 90s, 30m, 2h, 1d or 1w"),
        (
            "0",
            "  pull:\n    wms: {database: wms_replica, query: 'SELECT sku, location, qty AS quantity FROM s'}\n",
            "12: params.pull.wms.database: unknown database 'wms_replica'; TOWER_RECONCILE_SOURCES names x",
        ),
        (
            "0",
            "  pull:\n    tms: {database: x, query: SELECT 1}\n",
            "7: params: pull names 'tms', which is not a side (erp, wms)",
        ),
        (
            "0",
            "  oversell: {source: wms/dallas}\n",
            "7: params: sources 'wms' and 'wms/dallas' overlap; each side needs",
        ),
    ],
    ids=["negative", "boolean", "unknown field", "bad duration", "unknown database", "pull not a side", "overlap"],
)
def test_a_bad_param_names_the_file_line_and_field(tmp_path: Path, tolerance: str, extra: str, problem: str) -> None:
    folder = rules_with(tmp_path, "inventory-sync.yaml", INVENTORY.format(tolerance=tolerance, extra=extra))
    with pytest.raises(RuleFileError) as raised:
        load(folder, ("x",))
    (line,) = raised.value.lines
    assert line.startswith(str(folder / "inventory-sync.yaml") + ":" + problem), line


def test_an_unknown_reconciler_is_named(tmp_path: Path) -> None:
    text = INVENTORY.format(tolerance=0, extra="").replace("compare: inventory", "compare: stock")
    folder = rules_with(tmp_path, "inventory-sync.yaml", text)
    with pytest.raises(RuleFileError) as raised:
        load(folder)
    assert raised.value.lines[0].endswith(":6: compare: unknown reconciler 'stock'; one of inventory, invoice")


def test_a_pull_naming_a_configured_database_loads(tmp_path: Path) -> None:
    extra = "  pull:\n    wms: {database: wms_replica, query: 'SELECT sku, location, qty AS quantity FROM s'}\n"
    folder = rules_with(tmp_path, "inventory-sync.yaml", INVENTORY.format(tolerance=0, extra=extra))
    (inventory,) = [r for r in load(folder, ("wms_replica",)) if r.id == "inventory-sync"]
    assert inventory.params["pull"]["wms"]["database"] == "wms_replica"


def test_the_loader_without_params_models_accepts_any_params(tmp_path: Path) -> None:
    text = INVENTORY.format(tolerance="-5", extra="").replace("compare: inventory", "compare: stock")
    folder = rules_with(tmp_path, "inventory-sync.yaml", text)
    assert load_rule_set(folder, default_routing_file()).rules  # issue-3 behaviour kept for callers without models


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"sources": ["erp"]}, "List should have at least 2 items"),
        ({"sources": ["erp", "sap"]}, "unknown source 'sap'"),
        ({"stale_after": "0s"}, "must be a positive duration"),
        ({"lookback": "1h"}, "`lookback` must be at least `stale_after`"),
        ({"pull": {"wms": {"database": "db", "query": "DELETE FROM stock"}}}, "must be a SELECT"),
        ({"pull": {"wms": {"database": "db", "query": "SELECT 1; DROP TABLE x"}}}, "must be one statement"),
    ],
)
def test_inventory_params_are_checked(params: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        InventoryParams.model_validate(params)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"amount_tolerance_pct": -0.1}, "greater than or equal to 0"),
        ({"amount_tolerance_pct": "half"}, "expected a number"),
        ({"uninvoiced_after": "40d"}, "`lookback` must be longer than `uninvoiced_after`"),
        ({"quantity_tolerance": True}, "expected a number"),
        ({"sources": {"orders": ["sap"]}}, "unknown source 'sap'"),
        ({"sources": {"orders": ["wms/dallas\n"]}}, "'wms/dallas\\\\n' is not a source an event can have"),
        ({"sources": {"shipments": []}}, "List should have at least 1 item"),
        ({"sources": {"invoice": ["erp"]}}, "Extra inputs are not permitted"),
    ],
)
def test_invoice_params_are_checked(params: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        InvoiceParams.model_validate(params)


def test_every_finding_rule_has_a_title() -> None:
    shipped = inventory_rule()
    assert [(f.id, f.title) for f in shipped.finding_rules()] == [
        ("inventory-sync", "ERP and WMS agree"),  # the rule file's title
        ("inventory-oversell", OVERSELL_TITLE),
        ("inventory-stale", STALE_TITLE),
    ]
    assert (OVERSELL_TITLE, STALE_TITLE) == (
        "Storefront sells more than the warehouse has",
        "Inventory snapshots stale",
    )
    renamed = inventory_rule(
        oversell={"rule": "store-oversell", "title": "Store oversells"},
        stale_rule="store-stale",
        stale_title="Store counts stopped",
    )
    assert [(f.id, f.title) for f in renamed.finding_rules()[1:]] == [
        ("store-oversell", "Store oversells"),
        ("store-stale", "Store counts stopped"),
    ]
    assert [(f.id, f.title) for f in invoice_rule().finding_rules()] == [("invoice-match", "Invoice matches")]
    with pytest.raises(ValidationError, match="stale_title"):
        InventoryParams.model_validate({"stale_title": ""})
    with pytest.raises(ValidationError, match="oversell.title"):
        InventoryParams.model_validate({"oversell": {"title": "x" * 151}})


def test_two_rules_cannot_share_a_finding_rule() -> None:
    second = rule_config("inventory-reno", "t", "business", "warehouse", "medium", "inventory", {})
    with pytest.raises(
        ValueError, match="rules inventory-sync and inventory-reno both open exceptions under 'inventory-stale'"
    ):
        check_finding_rules([inventory_rule(), second])


def test_a_tower_with_a_bad_param_does_not_start(store: Store, tmp_path: Path) -> None:
    extra = "  pull:\n    wms: {database: wms_replica, query: 'SELECT sku, location, qty AS quantity FROM s'}\n"
    settings = make_settings(tmp_path / "data")
    settings.sla.rules_dir = rules_with(tmp_path, "inventory-sync.yaml", INVENTORY.format(tolerance=0, extra=extra))
    with pytest.raises(RuleFileError, match=r"inventory-sync\.yaml:12: params\.pull\.wms\.database: unknown database"):
        build_tower(settings, store=store, reconcile=ReconcileSettings())
    configured = ReconcileSettings(sources={"wms_replica": SecretStr("sqlite:///" + str(tmp_path / "wms.db"))})
    tower = build_tower(settings, store=store, reconcile=configured)
    assert tower.reconcile is not None and tower.reconcile.rules == ["inventory-sync", "invoice-match"]
    assert "reconcile" in tower.jobs
    assert tower.jobs.get("reconcile").settings().interval_seconds == 300


def test_whole_numbers_not_written_plainly_read_in_decimal(tmp_path: Path) -> None:
    """The rule loader keeps `010` and `1_000` as written (never YAML 1.1's octal): a number param reads them in
    decimal, a duration as seconds."""
    text = INVENTORY.format(tolerance="010", extra="  lookback: 100_000\n")
    (inventory,) = [r for r in load(rules_with(tmp_path, "inventory-sync.yaml", text)) if r.id == "inventory-sync"]
    config = rule_config("inventory-sync", "t", "business", "warehouse", "medium", "inventory", inventory.params)
    assert isinstance(config.params, InventoryParams)
    assert config.params.tolerance == 10 and config.params.lookback == timedelta(seconds=100_000)
