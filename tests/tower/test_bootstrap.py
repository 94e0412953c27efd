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
