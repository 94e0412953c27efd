"""`tower tokens list|new`: the tokens a tower accepts, by id only, and new ones whose entry a setting takes."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner, Result

from kernel.api_auth import token_id
from kernel.settings import ApiSettings, IngestSettings, Settings, StoreSettings
from tower.bootstrap import load_or_create_tokens, tokens_file
from tower.cli import main

UNSET = {"TOWER_INGEST_TOKENS": None, "TOWER_API_TOKENS": None}


def tokens(*args: str, data_dir: Path, **env: str | None) -> Result:
    return CliRunner().invoke(main, ["tokens", *args], env={**UNSET, "TOWER_STORE_DATA_DIR": str(data_dir), **env})


def test_list_names_each_token_by_id_and_never_shows_one(tmp_path: Path) -> None:
    settings = Settings(store=StoreSettings(data_dir=tmp_path))
    generated = load_or_create_tokens(settings)  # the first start's file
    result = tokens("list", "--json", data_dir=tmp_path)
    assert result.exit_code == 0, result.output
    listed = orjson.loads(result.output)
    file = str(tokens_file(settings))
    assert [(e["kind"], e["grants"], e["from"]) for e in listed] == [
        *(("ingest", sources, file) for sources in generated["ingest"].values()),
        ("api", ["admin"], file),
    ]
    assert {e["token_id"] for e in listed} == {token_id(t) for t in [*generated["ingest"], *generated["api"]]}

    # a configured kind wins over the file, as at start; the other kind still comes from the file
    operator = "operator-token-0123456789"
    table = tokens("list", data_dir=tmp_path, TOWER_API_TOKENS=json.dumps({operator: "operator"})).output
    lines = table.splitlines()
    assert lines[0].split() == ["KIND", "TOKEN", "ID", "GRANTS", "FROM"]
    assert lines[-1].split() == ["api", token_id(operator), "operator", "TOWER_API_TOKENS"]
    assert len(lines) == 1 + len(generated["ingest"]) + 1
    for value in [operator, *generated["ingest"], *generated["api"]]:
        assert value not in table


def test_list_says_when_there_is_none(tmp_path: Path) -> None:
    result = tokens("list", data_dir=tmp_path / "new")
    assert result.exit_code == 0 and result.output.startswith("no tokens: set TOWER_INGEST_TOKENS")


def test_a_new_token_comes_with_an_entry_its_setting_takes(tmp_path: Path) -> None:
    api = tokens("new", "--role", "finance", data_dir=tmp_path).output.splitlines()
    token = api[0].split()[1]
    assert api[1] == f"token id  {token_id(token)}" and api[2].startswith("add to TOWER_API_TOKENS: ")
    entry = json.loads("{" + api[2].removeprefix("add to TOWER_API_TOKENS: ") + "}")
    assert ApiSettings.model_validate({"tokens": entry}).tokens == {token: "finance"}

    ingest = tokens("new", "--source", "wms/dallas", "--source", "erp", data_dir=tmp_path).output.splitlines()
    entry = json.loads("{" + ingest[2].removeprefix("add to TOWER_INGEST_TOKENS: ") + "}")
    assert IngestSettings.model_validate({"tokens": entry}).tokens == {ingest[0].split()[1]: ["wms/dallas", "erp"]}
    assert ingest[0].split()[1] != token
    assert not tokens_file(Settings(store=StoreSettings(data_dir=tmp_path))).exists()  # nothing written


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give either --role or at least one --source"),
        (["--role", "admin", "--source", "wms"], "give either --role or at least one --source"),
        (["--source", "wms/"], "'wms/' is not a source an event can have"),
        (["--role", "root"], "'root' is not one of 'viewer', 'operator', 'finance', 'admin'"),
    ],
)
def test_new_refuses_what_no_setting_would_take(tmp_path: Path, args: list[str], message: str) -> None:
    result = tokens("new", *args, data_dir=tmp_path)
    assert result.exit_code == 2 and message in result.output and "token id" not in result.output
