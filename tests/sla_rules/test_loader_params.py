"""The loader checks reconciliation params with the models it is handed (`ParamsModels`): problems carry the
file, the line and `params.<field>`; the validation context reaches the models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from sla_rules.loader import ParamsModels, RuleFileError, load_rule_set

RULE = """\
id: stock-check
type: reconciliation
title: Stock agrees
kind: business
owner: warehouse
compare: {compare}
params:
  limit: {limit}
  site: {site}
"""


class StockParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int
    site: str = "DAL"

    @field_validator("site")
    @classmethod
    def _known(cls, value: str, info: ValidationInfo) -> str:
        sites = (info.context or {}).get("sites", ())
        if value not in sites:
            raise ValueError(f"unknown site {value!r}")
        return value


def load(tmp_path: Path, **fields: Any) -> None:
    folder = tmp_path / "rules"
    folder.mkdir(exist_ok=True)
    (folder / "stock.yaml").write_text(RULE.format(**{"compare": "stock", "limit": 3, "site": "DAL", **fields}))
    routing = tmp_path / "routing.yaml"
    routing.write_text("routes: []\n")
    load_rule_set(folder, routing, ParamsModels({"stock": StockParams}, {"sites": ("DAL", "RNO")}))


def problems(tmp_path: Path, **fields: Any) -> list[str]:
    with pytest.raises(RuleFileError) as raised:
        load(tmp_path, **fields)
    return [line.split("stock.yaml", 1)[1] for line in raised.value.lines]


def test_valid_params_load(tmp_path: Path) -> None:
    load(tmp_path, site="RNO")


def test_each_bad_param_is_reported_with_its_line(tmp_path: Path) -> None:
    assert problems(tmp_path, limit="many", site="ATL") == [
        ":8: params.limit: Input should be a valid integer, unable to parse string as an integer (got 'many')",
        ":9: params.site: unknown site 'ATL'",
    ]


def test_an_unknown_compare_is_reported(tmp_path: Path) -> None:
    assert problems(tmp_path, compare="ledger") == [":6: compare: unknown reconciler 'ledger'; one of stock"]
