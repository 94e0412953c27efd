"""Settings: read from TOWER_* variables, validated, no working default secrets."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from kernel.settings import ApiSettings, CollectorSettings, IngestSettings, Settings, StoreSettings, settings_problems


def test_defaults_have_no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TOWER_INGEST_TOKENS", "TOWER_API_TOKENS", "TOWER_STORE_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.ingest.tokens == {} and settings.api.tokens == {} and settings.store.url is None
    assert settings.store.backend == "embedded" and settings.collector.http_port == 4318


def test_areas_read_their_prefixes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOWER_INGEST_TOKENS", '{"0123456789abcdef0123": ["wms/dallas", "edi"]}')
    monkeypatch.setenv("TOWER_API_TOKENS", '{"some-admin-token-value": "admin"}')
    monkeypatch.setenv("TOWER_COLLECTOR_MAX_BODY_BYTES", "1024")
    monkeypatch.setenv("TOWER_STORE_BACKEND", "server")
    monkeypatch.setenv("TOWER_STORE_URL", "http://default:pw@127.0.0.1:8123")
    assert IngestSettings().tokens == {"0123456789abcdef0123": ["wms/dallas", "edi"]}
    assert ApiSettings().tokens == {"some-admin-token-value": "admin"}
    assert CollectorSettings().max_body_bytes == 1024
    store = StoreSettings()
    assert store.url is not None and "pw" not in repr(store)


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        ({"short": ["erp"]}, "at least 16 characters"),
        ({"0123456789abcdef0123": ["sap"]}, "unknown source 'sap'"),
    ],
)
def test_bad_tokens_are_refused_at_start(tokens: dict[str, list[str]], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        IngestSettings(tokens=tokens)


def test_unknown_role_is_refused() -> None:
    with pytest.raises(ValidationError):
        ApiSettings.model_validate({"tokens": {"some-admin-token-value": "superuser"}})


def test_api_tokens_are_at_least_16_characters() -> None:
    with pytest.raises(ValidationError, match="API tokens must be at least 16 characters"):
        ApiSettings(tokens={"short": "admin"})
    assert ApiSettings(tokens={"a" * 16: "viewer"}).tokens == {"a" * 16: "viewer"}


def test_settings_problems_name_the_variable_and_hide_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOWER_COLLECTOR_HTTP_PORT", "abc")
    monkeypatch.setenv("TOWER_COLLECTOR_MAX_BODY_BYTES", "-1")
    with pytest.raises(ValidationError) as bad_port:
        CollectorSettings()
    problems = settings_problems(bad_port.value)
    assert problems is not None and len(problems) == 2
    assert problems[0].startswith("TOWER_COLLECTOR_HTTP_PORT='abc': Input should be a valid integer")
    assert problems[1].startswith("TOWER_COLLECTOR_MAX_BODY_BYTES='-1': ")

    monkeypatch.setenv("TOWER_API_TOKENS", '{"sh0rt-s3cret": "admin"}')
    with pytest.raises(ValidationError) as short:
        ApiSettings()
    assert settings_problems(short.value) == [
        "TOWER_API_TOKENS: Value error, API tokens must be at least 16 characters"
    ]

    monkeypatch.setenv("TOWER_INGEST_TOKENS", '{"not json')
    with pytest.raises(Exception) as unparsable:
        IngestSettings()
    (line,) = settings_problems(unparsable.value) or []
    assert line.startswith("TOWER_INGEST_TOKENS: not valid JSON (")  # TOWER_API_TOKENS is set too, but parses


class _NotSettings(BaseModel):
    n: int


def test_settings_problems_leave_other_errors_alone() -> None:
    assert settings_problems(ValueError("x")) is None
    with pytest.raises(ValidationError) as other:
        _NotSettings.model_validate({"n": "x"})
    assert settings_problems(other.value) is None
