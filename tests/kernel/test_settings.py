"""Settings: read from TOWER_* variables, validated, no working default secrets."""

from __future__ import annotations

import re

import pytest
from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kernel.settings import (
    ApiSettings,
    CollectorSettings,
    IngestSettings,
    InvalidSettings,
    Settings,
    SlaSettings,
    StoreSettings,
    check_settings,
    settings_problems,
    unknown_variables,
)


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
        ({"0123456789abcdef0123": ["wms/"]}, "'wms/' is not a source an event can have"),  # would cover none
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


class _Hook(BaseModel):
    url: str
    secret: SecretStr

    @field_validator("secret")
    @classmethod
    def _long(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 16:
            raise ValueError("secrets must be at least 16 characters")
        return value


class _HiddenSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TOWER_HIDDEN_")

    databases: dict[str, SecretStr] = {}
    hooks: dict[str, _Hook] = {}
    low: int = 1
    high: int = 2

    @field_validator("databases")
    @classmethod
    def _urls(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        if any("://" not in url.get_secret_value() for url in value.values()):
            raise ValueError("not a URL")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> _HiddenSettings:
        if self.low >= self.high:
            raise ValueError("low must be below high")
        return self


def test_settings_problems_hide_values_whose_type_holds_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """A variable's name need not say secret: a map of URLs or a model with a secret field is never echoed."""
    monkeypatch.setenv("TOWER_HIDDEN_DATABASES", '{"replica": "postgresql//reader:S3cretPass99@db/wms"}')
    monkeypatch.setenv("TOWER_HIDDEN_HOOKS", '{"wms": {"url": "https://x.example", "secret": "almost-16-chars"}}')
    with pytest.raises(ValidationError) as bad:
        _HiddenSettings()
    problems = settings_problems(bad.value) or []
    assert problems == [
        "TOWER_HIDDEN_DATABASES: Value error, not a URL",
        # a secret map's keys are not shown either (those of TOWER_API_TOKENS are the tokens): its place is
        "TOWER_HIDDEN_HOOKS (at <key 1>.secret): Value error, secrets must be at least 16 characters",
    ]
    assert not any("S3cretPass99" in line or "almost-16-chars" in line for line in problems)


def test_settings_problems_never_show_a_token_that_is_a_key_of_the_map(monkeypatch: pytest.MonkeyPatch) -> None:
    """A token is the key of TOWER_API_TOKENS and TOWER_INGEST_TOKENS: where a problem is says which token by its
    place among the keys, never by the token, nor any part of it."""
    monkeypatch.setenv("TOWER_API_TOKENS", '{"0123456789abcdef-ok": "admin", "SECRETtoken-0123456789": 5}')
    with pytest.raises(ValidationError) as role:
        ApiSettings()
    assert settings_problems(role.value) == [
        "TOWER_API_TOKENS (at <token 2>): Input should be 'viewer', 'operator', 'finance' or 'admin'"
    ]
    for tokens, expected in [
        ('{"bbbbbbbbbbbbbbbbbbbbbbbb": "wms"}', "TOWER_INGEST_TOKENS (at <token 1>): Input should be a valid list"),
        ('{"bbbbbbbbbbbbbbbbbbbbbbbb": [5]}', "TOWER_INGEST_TOKENS (at <token 1>.0): Input should be a valid string"),
    ]:
        monkeypatch.setenv("TOWER_INGEST_TOKENS", tokens)
        with pytest.raises(ValidationError) as bad:
            IngestSettings()
        assert settings_problems(bad.value) == [expected]
    monkeypatch.delenv("TOWER_INGEST_TOKENS")
    with pytest.raises(ValidationError) as given:  # not from the environment: no place to give
        IngestSettings(tokens={"SECRETtoken-0123456789": "wms"})
    (line,) = settings_problems(given.value) or []
    assert line == "TOWER_INGEST_TOKENS (at <token>): Input should be a valid list"
    assert "SECR" not in line


def test_an_ingest_token_with_no_source_is_refused_without_showing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOWER_INGEST_TOKENS", '{"0123456789abcdef-ok": ["wms"], "SECRETtoken-0123456789": []}')
    with pytest.raises(ValidationError) as empty:
        IngestSettings()
    (line,) = settings_problems(empty.value) or []
    assert line.startswith(
        "TOWER_INGEST_TOKENS: Value error, ingest token 2 (in the map's order) may send for no source: name the"
        ' sources it may send for, e.g. ["wms"]'
    )
    assert "SECRET" not in line


def test_check_settings_names_every_refused_value_of_every_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOWER_COLLECTOR_HTTP_PORT", "abc")
    monkeypatch.setenv("TOWER_API_TOKENS", '{"SECRETtoken-0123456789": "root"}')
    monkeypatch.setenv("TOWER_HIDDEN_LOW", "-1")  # read with the prefix given: a job's model made at registration
    with pytest.raises(InvalidSettings) as refused:
        check_settings([CollectorSettings, ApiSettings, StoreSettings], {"TOWER_HIDDEN_": _Lows})
    assert settings_problems(refused.value) == [
        "TOWER_COLLECTOR_HTTP_PORT='abc': Input should be a valid integer, unable to parse string as an integer",
        "TOWER_API_TOKENS (at <token 1>): Input should be 'viewer', 'operator', 'finance' or 'admin'",
        "TOWER_HIDDEN_LOW='-1': Input should be greater than 0",
    ]
    monkeypatch.delenv("TOWER_COLLECTOR_HTTP_PORT")
    monkeypatch.delenv("TOWER_API_TOKENS")
    monkeypatch.delenv("TOWER_HIDDEN_LOW")
    check_settings([CollectorSettings, ApiSettings, StoreSettings], {"TOWER_HIDDEN_": _Lows})


class _Lows(BaseSettings):
    low: int = Field(1, gt=0)


def test_settings_problems_name_the_variables_of_a_check_across_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOWER_HIDDEN_LOW", "5")
    with pytest.raises(ValidationError) as crossed:
        _HiddenSettings()
    assert settings_problems(crossed.value) == ["TOWER_HIDDEN_LOW: Value error, low must be below high"]


def test_unknown_variables_name_the_setting_a_typo_meant() -> None:
    environ = {
        "TOWER_COLECTOR_HTTP_PORT": "4539",  # a letter missing: the default port stays in force
        "TOWER_COLLECTOR_GRPC_PORT": "0",
        "TOWER_URL": "http://tower:4318",
        "TOWER_NOTHING_LIKE_IT": "1",
        "HOME": "/root",
    }
    assert unknown_variables(environ, [CollectorSettings, StoreSettings], {"TOWER_URL"}) == [
        "TOWER_COLECTOR_HTTP_PORT is not a setting: ignored (did you mean TOWER_COLLECTOR_HTTP_PORT?)",
        "TOWER_NOTHING_LIKE_IT is not a setting: ignored",
    ]


def test_the_server_backend_needs_its_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOWER_STORE_BACKEND", "server")
    with pytest.raises(ValidationError) as missing:
        StoreSettings()
    assert settings_problems(missing.value) == [
        "TOWER_STORE_BACKEND: Value error, TOWER_STORE_URL is required when TOWER_STORE_BACKEND=server"
    ]
    monkeypatch.setenv("TOWER_STORE_URL", "http://tower:secret@clickhouse:8123")
    assert StoreSettings().backend == "server"


@pytest.mark.parametrize(
    "url",
    ["notaurl://tower:S3cretPass99@clickhouse", "tower:S3cretPass99@clickhouse:8123", "http://tower:S3cretPass99@h:x"],
)
def test_the_server_url_is_http_or_https_and_never_shown(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("TOWER_STORE_BACKEND", "server")
    monkeypatch.setenv("TOWER_STORE_URL", url)
    with pytest.raises(ValidationError) as refused:
        StoreSettings()
    assert settings_problems(refused.value) == [
        "TOWER_STORE_URL: Value error, not a URL the server backend can use: http[s]://user:password@host:port"
    ]
    monkeypatch.setenv("TOWER_STORE_URL", "https://tower:S3cretPass99@clickhouse.example:8443")
    assert StoreSettings().url is not None


def test_expected_sources_are_source_systems() -> None:
    assert SlaSettings(expected_sources=["wms/dallas", "erp"]).expected_sources == ["wms/dallas", "erp"]
    for wrong in ["sap", "wms dallas", "WMS", "wms\n"]:
        with pytest.raises(ValidationError, match=re.escape(f"unknown source {wrong!r}; systems are erp, wms")):
            SlaSettings(expected_sources=[wrong])
