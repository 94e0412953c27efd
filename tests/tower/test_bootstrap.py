"""First-run tokens: random, private, stable across restarts, and never overriding configuration."""

from __future__ import annotations

import stat
from pathlib import Path

from kernel.model.events import SOURCE_SYSTEMS
from kernel.settings import ApiSettings, IngestSettings, Settings, StoreSettings
from tower.bootstrap import admin_token, load_or_create_tokens, token_for, tokens_file


def _settings(data_dir: Path, **kw: object) -> Settings:
    return Settings(
        store=StoreSettings(data_dir=data_dir),
        ingest=IngestSettings(tokens=kw.get("ingest", {})),
        api=ApiSettings(tokens=kw.get("api", {})),
    )


def test_generated_once_private_and_reused(tmp_path: Path) -> None:
    first = _settings(tmp_path)
    load_or_create_tokens(first)
    path = tokens_file(first)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(s[0] for s in first.ingest.tokens.values()) == sorted(SOURCE_SYSTEMS)
    assert list(first.api.tokens.values()) == ["admin"]
    assert all(len(t) >= 24 for t in [*first.ingest.tokens, *first.api.tokens])

    second = _settings(tmp_path)
    load_or_create_tokens(second)
    assert second.ingest.tokens == first.ingest.tokens and second.api.tokens == first.api.tokens
    wms = token_for(second, "wms/dallas")
    assert wms is not None and second.ingest.tokens[wms] == ["wms"]
    assert admin_token(second) in second.api.tokens


def test_configured_tokens_win(tmp_path: Path) -> None:
    settings = _settings(tmp_path, ingest={"configured-token-0123456": ["erp"]}, api={"configured-admin-01": "admin"})
    load_or_create_tokens(settings)
    assert settings.ingest.tokens == {"configured-token-0123456": ["erp"]}
    assert settings.api.tokens == {"configured-admin-01": "admin"}
    assert token_for(settings, "wms") is None
    assert not tokens_file(settings).exists()  # no generated tokens beside configured ones: stray credentials

    only_api = _settings(tmp_path, api={"configured-admin-01": "admin"})  # the other kind is still generated
    load_or_create_tokens(only_api)
    assert tokens_file(only_api).exists() and only_api.api.tokens == {"configured-admin-01": "admin"}
    assert sorted(s[0] for s in only_api.ingest.tokens.values()) == sorted(SOURCE_SYSTEMS)


def test_a_damaged_tokens_file_stops_with_what_to_do_not_a_traceback(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from tests.support import free_port
    from tower.cli import main

    data = tmp_path / "data"
    data.mkdir()
    (data / "tokens.json").write_text("")  # a crash between creating the file and writing it (before: no rename)
    args = ["serve", "--no-dashboard", "--data-dir", str(data), "--port", str(free_port()), "--grpc-port", "0"]
    result = CliRunner().invoke(main, args, env={"TOWER_API_TOKENS": None, "TOWER_INGEST_TOKENS": None})
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "cannot be read as the tower's tokens" in result.output and "remove it to generate new ones" in result.output


def test_the_tokens_file_is_written_whole_and_a_second_first_start_keeps_the_first(tmp_path: Path) -> None:
    first = load_or_create_tokens(_settings(tmp_path))
    assert [p.name for p in tmp_path.iterdir()] == ["tokens.json"]  # no temporary file left behind
    second = load_or_create_tokens(_settings(tmp_path))
    assert second == first
