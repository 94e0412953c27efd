"""Invoice matching: what the ERP billed against what was ordered and what was shipped.

One rule (`invoice-match`, business, finance) opens one exception per invoice id, listing every
check the invoice fails, with both sides' values:

- `amount`: the order's invoices together differ from the accepted order amount by more than
  `amount_tolerance_pct` percent of it (exactly at the tolerance: no finding). With one invoice
  per order (the usual case) this is the invoice against the order; an order billed in parts is
  a finding until its invoices add up. An invoice in another currency than the order's is not added;
- `currency`: the invoice's currency is not the order's (its amount is then not compared, nor added);
- `quantity`: the invoiced quantity differs from the shipped quantity by more than
  `quantity_tolerance` units: against the invoice's own shipment (`shipment_id`), or, when the
  invoice names none (or another order's shipment), the order's invoices together against its shipments together;
- `not-shipped`: invoiced, but no shipment of the order is known `unmatched_after` (2h) later;
- `no-order`: no accepted order is known `unmatched_after` after the invoice;
- `incomplete`: the invoice has no amount or no quantity, so it cannot be compared (the door refuses
  an invoice only without its ids; a sender that drops a field would otherwise pass unseen). A missing
  currency is not a finding: the amount is then compared in the order's currency;

and one exception per order id for:

- `not-invoiced`: shipped `uninvoiced_after` (7 days) ago and never invoiced (shipments adding up
  to 0 units shipped nothing to bill: no finding). Lateness is the invoice-posting SLA's business
  (24h); this finding is revenue that was never billed.

Each document is read only from the systems that send it (`sources`: orders and invoices from the
ERP, shipments from the WMS, as DESIGN.md says), so another system's ingest token cannot amend it.
The latest event per document wins (an order re-accepted with a new amount, a corrected
invoice); a redelivered event changes nothing. Invoices and shipments of the last `lookback`
(30 days) are compared, with their orders' documents of any age.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from kernel.store import Store
from reconcilers.config import InvoiceParams, RuleConfig
from reconcilers.inventory import fmt
from reconcilers.model import Comparison, Observation, RunContext
from reconcilers.sql import Binder, T, iso, materialized_cte, newest, parse_time, source_condition, watch_condition

CHECKS = ("amount", "currency", "quantity", "not-shipped", "no-order", "incomplete", "not-invoiced")


class InvoiceReconciler:
    """Matches invoices with accepted orders and shipments for one `compare: invoice` rule."""

    def __init__(self, store: Store, config: RuleConfig, materialize: bool | None = None) -> None:
        """`materialize`: compute each document set once (None: where the store supports it)."""
        assert isinstance(config.params, InvoiceParams)
        self.store = store
        self.materialize = materialize
        self.config = config
        self.params: InvoiceParams = config.params
        self.rule = config.finding_rules()[0]

    def phases(self) -> list[str]:
        """One comparison."""
        return ["compare"]

    def compare(self, run: RunContext) -> list[Comparison]:
        """Every invoice and every shipped order of the lookback, in one statement."""
        run.progress("compare", "invoices, orders and shipments")
        sql, params = self.statement(run)
        rows = self.store.query(sql, params)
        comparison = Comparison(self.rule, checked=True, compared=int(rows[0]["compared"]) if rows else 0)
        comparison.observations = [self._observation(row) for row in rows]
        return [comparison]

    def statement(self, run: RunContext) -> tuple[str, dict[str, Any]]:
        """The matching statement: invoice rows and never-invoiced order rows that fail a check or are
        watched (and one more, for the count compared).

        The documents (orders, shipments, invoices, and the orders' shipped and invoiced totals) are each
        read by several parts of the statement. Where the store supports it they are computed once each
        (materialized CTEs): a plain CTE is computed again wherever it is read (bench/invoice.py)."""
        materialize = materialized_cte(self.store) if self.materialize is None else self.materialize
        once = "MATERIALIZED " if materialize else ""
        bind = Binder()
        p = self.params
        since = bind.bind(run.now - p.lookback, T)
        unmatched = bind.bind(run.now - p.unmatched_after, T)
        uninvoiced = bind.bind(run.now - p.uninvoiced_after, T)
        pct = bind.bind(p.amount_tolerance_pct, "Decimal(12, 4)")
        qty = bind.bind(float(p.quantity_tolerance), "Float64")
        watch_invoice = watch_condition("i.invoice_id", run.watch, bind)
        watch_order = watch_condition("os.order_id", run.watch, bind)
        # each document only from the systems that send it: another system's token cannot amend it
        sent_by = {
            "order.accepted": _from(p.sources.orders, bind),
            "shipment.confirmed": _from(p.sources.shipments, bind),
            "invoice.posted": _from(p.sources.invoices, bind),
        }
        sender = "multiIf(" + ", ".join(f"type = '{kind}', {cond}" for kind, cond in sent_by.items()) + ", 0)"
        sql = f"""
WITH
    in_window AS (
        SELECT DISTINCT order_id FROM business_events
        WHERE type IN ('invoice.posted', 'shipment.confirmed') AND time >= {since} AND order_id != ''
            AND {sender}
    ),
    ev AS (
        SELECT type, order_id, shipment_id, invoice_id, amount, quantity, toString(currency) AS currency,
            customer_id, toString(warehouse) AS warehouse, time, {newest("time", "received_at")} AS v
        FROM business_events
        WHERE type IN ('order.accepted', 'shipment.confirmed', 'invoice.posted') AND {sender}
            AND (order_id IN in_window OR (type = 'invoice.posted' AND time >= {since}))
    ),
    orders AS {once}(
        SELECT order_id, argMax(amount, v) AS amount, argMax(currency, v) AS currency,
            argMax(customer_id, v) AS customer_id, argMax(warehouse, v) AS warehouse, max(time) AS accepted_at
        FROM ev WHERE type = 'order.accepted' AND order_id != '' GROUP BY order_id
    ),
    shipments AS {once}(
        SELECT shipment_id, argMax(order_id, v) AS order_id, argMax(quantity, v) AS quantity,
            argMax(warehouse, v) AS warehouse, min(time) AS shipped_at
        FROM ev WHERE type = 'shipment.confirmed' AND shipment_id != '' GROUP BY shipment_id
    ),
    invoices AS {once}(
        SELECT invoice_id, argMax(order_id, v) AS order_id, argMax(shipment_id, v) AS shipment_id,
            argMax(amount, v) AS amount, argMax(quantity, v) AS quantity, argMax(currency, v) AS currency,
            argMax(customer_id, v) AS customer_id, max(time) AS posted_at
        FROM ev WHERE type = 'invoice.posted' AND invoice_id != '' GROUP BY invoice_id
    ),
    order_shipped AS {once}(
        -- one shipment without a quantity makes the order's shipped quantity unknown: summing the others
        -- would compare a part with the invoice, and a 0 beside it would read as nothing shipped
        SELECT order_id, if(countIf(quantity IS NULL) > 0, NULL, sum(quantity)) AS quantity, count() AS shipments,
            groupArray(shipment_id) AS shipment_ids,
            min(shipped_at) AS first_shipped, any(warehouse) AS warehouse
        FROM shipments WHERE order_id != '' GROUP BY order_id
    ),
    order_invoiced AS {once}(
        -- an invoice in another currency than the order's is a finding of its own, and not money towards the
        -- order's amount: adding it would let USD 60 + CAD 40 pass for a USD 100 order
        SELECT i.order_id AS order_id,
            sumIf(i.amount, i.currency = '' OR ifNull(o.currency, '') IN ('', i.currency)) AS amount,
            sum(i.quantity) AS quantity, count() AS invoices, groupArray(i.invoice_id) AS invoice_ids
        FROM invoices AS i LEFT JOIN orders AS o ON o.order_id = i.order_id
        WHERE i.order_id != '' GROUP BY i.order_id
    ),
    matched AS (
        SELECT
            i.invoice_id AS key,
            'invoice' AS subject,
            i.invoice_id AS invoice_id, i.order_id AS order_id, i.shipment_id AS shipment_id,
            i.amount AS invoice_amount, i.quantity AS invoice_quantity, i.currency AS invoice_currency,
            i.posted_at AS posted_at,
            o.order_id IS NOT NULL AS has_order, o.amount AS order_amount, o.currency AS order_currency,
            o.accepted_at AS accepted_at,
            coalesce(nullIf(o.customer_id, ''), i.customer_id) AS customer_id,
            coalesce(nullIf(o.warehouse, ''), s.warehouse, os.warehouse, '') AS warehouse,
            ifNull(oi.amount, i.amount) AS invoiced_amount, ifNull(oi.invoices, 1) AS invoices,
            ifNull(oi.invoice_ids, [i.invoice_id]) AS invoice_ids,
            s.shipment_id IS NOT NULL AND (i.order_id = '' OR ifNull(s.order_id, '') = i.order_id) AS own_shipment,
            if(own_shipment, i.quantity, oi.quantity) AS compared_invoiced_quantity,
            if(own_shipment, s.quantity, os.quantity) AS shipped_quantity,
            own_shipment OR os.order_id IS NOT NULL AS shipped,
            ifNull(os.shipment_ids, if(own_shipment, [s.shipment_id], [])) AS shipment_ids,
            if(own_shipment, s.shipped_at, os.first_shipped) AS shipped_at,
            has_order AND invoice_currency != '' AND order_currency != '' AND invoice_currency != order_currency
                AS currency_bad,
            has_order AND NOT currency_bad AND invoiced_amount IS NOT NULL AND order_amount IS NOT NULL
                AND abs(toDecimal128(invoiced_amount, 4) - toDecimal128(order_amount, 4)) * 100
                    > abs(toDecimal128(order_amount, 4)) * {pct} AS amount_bad,
            shipped AND compared_invoiced_quantity IS NOT NULL AND shipped_quantity IS NOT NULL
                AND abs(round(compared_invoiced_quantity - shipped_quantity, 6)) > {qty} AS quantity_bad,
            NOT shipped AND posted_at <= {unmatched} AS not_shipped,
            NOT has_order AND posted_at <= {unmatched} AS no_order,
            arrayFilter(f -> f != '', [if(i.amount IS NULL, 'amount', ''), if(i.quantity IS NULL, 'quantity', '')])
                AS missing,
            arrayFilter(c -> c != '', [if(amount_bad, 'amount', ''), if(currency_bad, 'currency', ''),
                if(quantity_bad, 'quantity', ''), if(not_shipped, 'not-shipped', ''),
                if(no_order, 'no-order', ''), if(notEmpty(missing), 'incomplete', '')]) AS checks,
            {watch_invoice} AS watched
        FROM invoices AS i
        LEFT JOIN orders AS o ON o.order_id = i.order_id
        LEFT JOIN shipments AS s ON s.shipment_id = i.shipment_id
        LEFT JOIN order_shipped AS os ON os.order_id = i.order_id
        LEFT JOIN order_invoiced AS oi ON oi.order_id = i.order_id
    ),
    unbilled AS (
        SELECT
            os.order_id AS key,
            'order' AS subject,
            '' AS invoice_id, os.order_id AS order_id, '' AS shipment_id,
            CAST(NULL AS Nullable(Decimal(18, 4))) AS invoice_amount,
            CAST(NULL AS Nullable(Float64)) AS invoice_quantity, '' AS invoice_currency,
            CAST(NULL AS Nullable({T})) AS posted_at,
            o.order_id IS NOT NULL AS has_order, o.amount AS order_amount, o.currency AS order_currency,
            o.accepted_at AS accepted_at, ifNull(o.customer_id, '') AS customer_id,
            coalesce(nullIf(o.warehouse, ''), os.warehouse, '') AS warehouse,
            oi.amount AS invoiced_amount, ifNull(oi.invoices, 0) AS invoices,
            ifNull(oi.invoice_ids, []) AS invoice_ids,
            0 AS own_shipment, oi.quantity AS compared_invoiced_quantity, os.quantity AS shipped_quantity,
            1 AS shipped, os.shipment_ids AS shipment_ids, os.first_shipped AS shipped_at,
            0 AS currency_bad, 0 AS amount_bad, 0 AS quantity_bad, 0 AS not_shipped, 0 AS no_order,
            CAST([] AS Array(String)) AS missing,
            if(oi.order_id IS NULL AND os.first_shipped <= {uninvoiced} AND ifNull(os.quantity, 1) != 0,
                ['not-invoiced'], []) AS checks,
            {watch_order} AS watched
        FROM order_shipped AS os
        LEFT JOIN orders AS o ON o.order_id = os.order_id
        LEFT JOIN order_invoiced AS oi ON oi.order_id = os.order_id
        WHERE os.first_shipped >= {since} AND (oi.order_id IS NULL OR watched)
    )
SELECT * FROM (
    SELECT *, count() OVER () AS compared, row_number() OVER () AS n
    FROM (SELECT * FROM matched UNION ALL SELECT * FROM unbilled)
)
WHERE notEmpty(checks) OR watched OR n = 1
SETTINGS join_use_nulls = 1{", enable_materialized_cte = 1" if materialize else ""}
"""
        return sql, bind.params

    def _observation(self, row: dict[str, Any]) -> Observation:
        checks: list[str] = list(row["checks"])
        order = {
            "order_id": row["order_id"],
            "amount": _amount(row["order_amount"]),
            "currency": row["order_currency"] or None,
            "accepted_at": iso(parse_time(row["accepted_at"])),
        }
        shipped = {
            "shipment_ids": list(row["shipment_ids"] or []),
            "quantity": _number(row["shipped_quantity"]),
            "shipped_at": iso(parse_time(row["shipped_at"])),
        }
        invoiced = {
            "invoice_ids": list(row["invoice_ids"] or []),
            "amount": _amount(row["invoiced_amount"]),
            "quantity": _number(row["compared_invoiced_quantity"]),
        }
        tolerance = {"amount_pct": float(self.params.amount_tolerance_pct), "quantity": self.params.quantity_tolerance}
        values: dict[str, Any] = {"check": checks, "order": order, "shipped": shipped, "tolerance": tolerance}
        if row["subject"] == "invoice":
            values["invoice"] = {
                "invoice_id": row["invoice_id"],
                "amount": _amount(row["invoice_amount"]),
                "quantity": _number(row["invoice_quantity"]),
                "currency": row["invoice_currency"] or None,
                "shipment_id": row["shipment_id"] or None,
                "posted_at": iso(parse_time(row["posted_at"])),
                "missing": list(row["missing"]),
            }
        values["invoiced"] = invoiced
        values["differences"] = _differences(order, shipped, invoiced)
        route = {
            "order_id": row["order_id"],
            "customer_id": row["customer_id"] or "",
            "warehouse": row["warehouse"] or "",
        }
        if row["invoice_id"]:
            route["invoice_id"] = row["invoice_id"]
        return Observation(row["key"], bool(checks), values, route, self._summary(row["key"], checks, values))

    def _summary(self, key: str, checks: list[str], values: dict[str, Any]) -> str:
        order, shipped, invoiced = values["order"], values["shipped"], values["invoiced"]
        parts: list[str] = []
        for check in checks or ["none"]:
            if check == "amount":
                parts.append(
                    f"invoiced {invoiced['amount']} vs order {order['amount']} {order['currency'] or ''}".rstrip()
                    + f" (tolerance {values['tolerance']['amount_pct']:g}%)"
                )
            elif check == "currency":
                parts.append(f"invoice in {values['invoice']['currency']}, order in {order['currency']}")
            elif check == "quantity":
                parts.append(
                    f"invoiced {fmt(invoiced['quantity'])} units vs shipped {fmt(shipped['quantity'])}"
                    f" (tolerance {fmt(values['tolerance']['quantity'])})"
                )
            elif check == "not-shipped":
                parts.append(f"invoiced, no shipment of order {order['order_id'] or '(none)'}")
            elif check == "no-order":
                parts.append(f"no accepted order {order['order_id'] or '(none named)'}")
            elif check == "incomplete":
                missing = " and ".join(values["invoice"]["missing"])
                parts.append(f"the invoice has no {missing}: it cannot be compared")
            elif check == "not-invoiced":
                parts.append(f"shipped {shipped['shipped_at']} ({', '.join(shipped['shipment_ids'])}), never invoiced")
            else:
                parts.append(
                    f"agrees: invoiced {invoiced['amount']} / {fmt(invoiced['quantity'])} units,"
                    f" order {order['amount']}, shipped {fmt(shipped['quantity'])}"
                )
        return f"{key}: " + "; ".join(parts)


def _from(sources: list[str], bind: Binder) -> str:
    """Rows of one of `sources` (a system covers its paths)."""
    return "(" + " OR ".join(source_condition(source, bind) for source in sources) + ")"


def _amount(value: Any) -> str | None:
    """Amounts travel as text (exact decimals)."""
    if value is None:
        return None
    exact = Decimal(str(value))
    cents = exact.quantize(Decimal("0.01"))
    return str(cents) if cents == exact else str(exact.normalize())


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def _differences(order: dict[str, Any], shipped: dict[str, Any], invoiced: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if invoiced["amount"] is not None and order["amount"] is not None:
        diff = Decimal(invoiced["amount"]) - Decimal(order["amount"])
        out["amount"] = str(diff)
        if Decimal(order["amount"]) != 0:
            out["amount_pct"] = round(float(diff / Decimal(order["amount"]) * 100), 4)
    if invoiced["quantity"] is not None and shipped["quantity"] is not None:
        out["quantity"] = round(invoiced["quantity"] - shipped["quantity"], 6)
    return out
