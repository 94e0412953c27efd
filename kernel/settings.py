"""Settings, one pydantic-settings model per area, each read from `TOWER_<AREA>_*` variables.

Secrets (ingest and API tokens, the server URL with its password) never have working
defaults: with none configured, `tower serve` generates random ones into the data directory
and prints them once.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from kernel.model.events import SOURCE_SYSTEMS, checked_source

Role = Literal["viewer", "operator", "finance", "admin"]


class StoreSettings(BaseSettings):
    """Where the tower keeps its data."""

    model_config = SettingsConfigDict(env_prefix="TOWER_STORE_")

    backend: Literal["embedded", "server"] = Field(
        "embedded", description="`embedded` (chDB in the data directory) or `server` (ClickHouse over HTTP)."
    )
    data_dir: Path = Field(Path("var/tower"), description="Data directory: embedded database, spool, generated tokens.")
    url: SecretStr | None = Field(
        None, description="ClickHouse server URL, http[s]://user:password@host:8123 (server backend)."
    )
    database: str = Field("tower", description="Database on the ClickHouse server (server backend).")
    backup_dir: Path | None = Field(
        None, description="Folder of the embedded store's backups (`tower backup`); default: <data dir>/backups."
    )
    min_free_mib: int = Field(
        512,
        ge=0,
        description="The embedded store and the spool refuse writes while the data directory's disk has less free"
        " than this (MiB): the doors answer 503 + Retry-After, other writes fail and are tried again. The engine's"
        " merges need room, and a disk that fills up loses data already stored. 0 turns the guard off.",
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: SecretStr | None) -> SecretStr | None:
        """http:// or https:// (what the server backend speaks) with a host; no part of it is repeated (a
        `user:password@host` without a scheme would read as the scheme `user`)."""
        if value is None:
            return value
        try:
            parts = urlsplit(value.get_secret_value())
            valid = parts.scheme in ("http", "https") and bool(parts.hostname)
            _ = parts.port  # a port that is not a number
        except ValueError:
            valid = False
        if not valid:
            raise ValueError("not a URL the server backend can use: http[s]://user:password@host:port")
        return value

    @model_validator(mode="after")
    def _server_has_a_url(self) -> StoreSettings:
        if self.backend == "server" and self.url is None:
            raise ValueError("TOWER_STORE_URL is required when TOWER_STORE_BACKEND=server")
        return self


class CollectorSettings(BaseSettings):
    """The doors integrations send through: OTLP/HTTP, OTLP/gRPC and CloudEvents."""

    model_config = SettingsConfigDict(env_prefix="TOWER_COLLECTOR_")

    host: str = Field("127.0.0.1", description="Address the HTTP server (OTLP/HTTP, CloudEvents, API) binds.")
    http_port: int = Field(
        4318, ge=0, le=65535, description="Port of the HTTP server: /v1/traces, /v1/logs, /v1/events and /api."
    )
    grpc_port: int = Field(4317, ge=0, le=65535, description="Port of the OTLP/gRPC server; 0 disables it.")
    max_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1, description="Largest request body accepted, as sent (compressed)."
    )
    max_decompressed_bytes: int = Field(
        32 * 1024 * 1024, ge=1, description="Largest body accepted after decompression."
    )
    batch_max_rows: int = Field(50_000, ge=1, description="Rows the writer puts in one insert at most.")
    batch_max_wait_ms: int = Field(
        20, ge=0, description="How long the writer waits to gather a batch once rows arrive."
    )
    queue_max_rows: int = Field(
        400_000, ge=1, description="Rows waiting for the writer before requests get 503 + Retry-After."
    )
    retry_after_seconds: int = Field(2, ge=0, description="Retry-After sent with 429/503 answers.")
    spool_max_bytes: int = Field(
        2 * 1024**3, ge=0, description="Disk the spool may use while the store is unavailable."
    )
    drain_interval_seconds: float = Field(1.0, gt=0, description="How often the spool is retried into the store.")
    event_max_age_days: int = Field(
        3650,
        ge=0,
        description="Business events whose time is more than this many days before the tower's clock are refused "
        "(an unset or epoch time); 0 accepts any age the store holds (1970 on). Raise it to import older history.",
    )
    event_max_ahead_minutes: int = Field(
        1440,
        ge=0,
        description="Business events whose time is more than this many minutes after the tower's clock are "
        "refused (a sender's clock or time zone gone wrong); 0 accepts any time up to 2262.",
    )
    dead_letter_repeat_seconds: float = Field(
        600,
        ge=0,
        description="A refused record identical to one stored from the same token and door within this many "
        "seconds is answered and counted the same but not stored again (a sender retrying a bad batch); 0 stores "
        "every copy.",
    )
    max_records_per_request: int = Field(
        50_000,
        ge=1,
        description="Records one request may carry (business events of /v1/events, OTLP log records, OTLP spans); a "
        "request with more is refused whole (413, gRPC RESOURCE_EXHAUSTED) before any record is read, and kept as "
        "one dead letter. The default takes tower import's largest --batch-size and one writer batch.",
    )
    max_rejections_listed: int = Field(
        1_000,
        ge=1,
        description="Refused records a /v1/events answer lists with their reasons; past it the answer counts them "
        "(rejected_total, rejected_truncated) and the dead letters keep every one.",
    )
    key_aliases: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "order.id": ["order_id", "erp.order.id", "sales_order.id"],
            "shipment.id": ["shipment_id", "wms.shipment.id"],
            "invoice.id": ["invoice_id"],
            "customer.id": ["customer_id"],
        },
        description="Span attribute aliases normalised to the business keys (order.id, shipment.id, ...).",
    )


class IngestSettings(BaseSettings):
    """Ingest tokens: each token may send for the sources it names (a source covers its sub-paths)."""

    model_config = SettingsConfigDict(env_prefix="TOWER_INGEST_")

    tokens: dict[str, list[str]] = Field(
        default_factory=dict,
        description="JSON map of token (at least 16 characters) to the sources it may send,"
        ' e.g. {"s3cr3t...": ["wms"]}. No default.',
    )

    @field_validator("tokens")
    @classmethod
    def _known_sources(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for position, (token, sources) in enumerate(value.items(), 1):
            if len(token) < 16:
                raise ValueError("ingest tokens must be at least 16 characters")
            if not sources:  # the token itself is never repeated: its place among the keys says which
                raise ValueError(
                    f"ingest token {position} (in the map's order) may send for no source: name the sources it may"
                    f' send for, e.g. ["wms"]; systems are {", ".join(SOURCE_SYSTEMS)}'
                )
            for source in sources:
                checked_source(source)  # a grant of `wms/` would cover no source
        return value


class ApiSettings(BaseSettings):
    """The HTTP API used by the dashboard, Slack and scripts."""

    model_config = SettingsConfigDict(env_prefix="TOWER_API_")

    tokens: dict[str, Role] = Field(
        default_factory=dict,
        description="JSON map of bearer token (at least 16 characters) to role,"
        ' e.g. {"t0k3n...": "admin"}. No default.',
    )

    @field_validator("tokens")
    @classmethod
    def _long_enough(cls, value: dict[str, Role]) -> dict[str, Role]:
        if any(len(token) < 16 for token in value):
            raise ValueError("API tokens must be at least 16 characters")
        return value


class TelemetrySettings(BaseSettings):
    """The tower's own traces (self-observability); off by default."""

    model_config = SettingsConfigDict(env_prefix="TOWER_TELEMETRY_")

    exporter: Literal["none", "otlp", "console"] = Field("none", description="Where the tower's own spans go.")
    endpoint: str = Field("http://127.0.0.1:4318/v1/traces", description="OTLP/HTTP traces endpoint for `otlp`.")
    service_name: str = Field("control-tower", description="service.name of the tower's own spans.")


class SlaSettings(BaseSettings):
    """Rules, owner routing and the technical rules' expectations."""

    model_config = SettingsConfigDict(env_prefix="TOWER_SLA_")

    rules_dir: Path | None = Field(
        None, description="Folder of rule files (*.yaml); default: the rules shipped in sla_rules/rules."
    )
    routing_file: Path | None = Field(None, description="Owner routing file; default: sla_rules/routing.yaml.")
    expected_sources: list[str] = Field(
        default_factory=list,
        description="Sources source-silence watches; empty: every source system seen within expect_seen_within.",
    )
    expect_seen_within_hours: float = Field(
        168, gt=0, description="With no expected_sources: watch systems seen this recently."
    )

    @field_validator("expected_sources")
    @classmethod
    def _known_systems(cls, value: list[str]) -> list[str]:
        for source in value:
            checked_source(source)
        return value


class Settings(BaseSettings):
    """All areas together; each area still reads its own prefix."""

    store: StoreSettings = Field(default_factory=lambda: StoreSettings())
    collector: CollectorSettings = Field(default_factory=lambda: CollectorSettings())
    ingest: IngestSettings = Field(default_factory=lambda: IngestSettings())
    api: ApiSettings = Field(default_factory=lambda: ApiSettings())
    telemetry: TelemetrySettings = Field(default_factory=lambda: TelemetrySettings())
    sla: SlaSettings = Field(default_factory=lambda: SlaSettings())


# Parts of a variable's name that mark a secret (or a URL that may carry one): its value is never echoed.
_SECRET_PARTS = ("TOKEN", "SECRET", "PASSWORD", "URL", "KEY")


def loaded_settings_models() -> dict[str, type[BaseSettings]]:
    """Every settings model this process has imported, by class name."""
    found: dict[str, type[BaseSettings]] = {}
    pending: list[type[BaseSettings]] = [BaseSettings]
    while pending:
        for model in pending.pop().__subclasses__():
            found.setdefault(model.__name__, model)
            pending.append(model)
    return found


def env_names(model: type[BaseSettings], name: str) -> list[str]:
    """The variables that set field `name` of `model` (the prefix and the field name, or its aliases), upper case."""
    field = model.model_fields[name]
    alias = field.validation_alias
    if isinstance(alias, str):
        return [alias.upper()]
    choices = getattr(alias, "choices", None)
    if choices:
        return [str(c).upper() for c in choices if isinstance(c, str)]
    return [f"{model.model_config.get('env_prefix', '')}{name}".upper()]


def unknown_variables(environ: dict[str, str], models: list[type[BaseSettings]], known: set[str]) -> list[str]:
    """The TOWER_* variables of `environ` that no model of `models` reads and `known` does not name, each with the
    closest name when one is near (`TOWER_COLECTOR_HTTP_PORT`: did you mean TOWER_COLLECTOR_HTTP_PORT?)."""
    import difflib

    names = set(known)
    for model in models:
        if model.model_config.get("env_prefix"):
            names.update(n for field in model.model_fields for n in env_names(model, field))
    out = []
    for variable in sorted(v for v in environ if v.startswith("TOWER_") and v not in names):
        close = difflib.get_close_matches(variable, names, n=1, cutoff=0.8)
        out.append(f"{variable} is not a setting: ignored" + (f" (did you mean {close[0]}?)" if close else ""))
    return out


def _holds_secret(annotation: Any, seen: frozenset[type] = frozenset()) -> bool:
    """Whether a field's type holds a SecretStr anywhere (a map of URLs, a model with a secret field): its value, or
    any part of it, is never echoed whatever the variable is called."""
    if annotation is SecretStr:
        return True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel) and annotation not in seen:
        inner = seen | {annotation}
        return any(_holds_secret(field.annotation, inner) for field in annotation.model_fields.values())
    return any(_holds_secret(arg, seen) for arg in get_args(annotation))


def _mapping(value: object) -> dict[object, object]:
    return value if isinstance(value, dict) else {}


def _parses(value: str | None) -> bool:
    """Whether an environment value is absent or valid JSON (which variable held the unparsable value)."""
    if value is None:
        return True
    try:
        json.loads(value)
    except ValueError:
        return False
    return True


def _env_json(name: str) -> object:
    """The parsed JSON of variable `name`, or None."""
    try:
        return json.loads(os.environ.get(name) or "null")
    except ValueError:
        return None


def _secret_location(name: str, annotation: Any, parts: list[str | int]) -> str:
    """Where in the value of secret variable `name` a problem is, never showing a map's keys (those of
    TOWER_API_TOKENS are the tokens): a key is `<token 2>` (its place among the map's keys, when the variable's JSON
    holds it), a list's index and a model's field name are shown as they are, anything else is `<...>`."""
    word = "token" if "TOKEN" in name else "key"
    raw = _env_json(name)
    shown: list[str] = []
    for part in parts:
        while get_origin(annotation) in (Union, UnionType):  # `X | None`: X; a real union is not walked
            members = [arg for arg in get_args(annotation) if arg is not type(None)]
            annotation = members[0] if len(members) == 1 else None
        origin = get_origin(annotation) or annotation
        if part == "[key]":  # pydantic's mark of a problem with a key itself: the key before it was hidden
            shown.append(part)
            annotation = raw = None
        elif isinstance(origin, type) and issubclass(origin, Mapping):
            keys = list(raw) if isinstance(raw, dict) else []
            shown.append(f"<{word} {keys.index(part) + 1}>" if part in keys else f"<{word}>")
            raw = raw.get(part) if isinstance(raw, dict) else None
            annotation = get_args(annotation)[1] if len(get_args(annotation)) == 2 else None
        elif isinstance(origin, type) and issubclass(origin, list | tuple | set | frozenset) and isinstance(part, int):
            shown.append(str(part))
            raw = raw[part] if isinstance(raw, list) and 0 <= part < len(raw) else None
            annotation = next(iter(get_args(annotation)), None)
        elif isinstance(origin, type) and issubclass(origin, BaseModel) and part in origin.model_fields:
            shown.append(str(part))
            raw = raw.get(part) if isinstance(raw, dict) else None
            annotation = origin.model_fields[str(part)].annotation
        else:  # a part this walk cannot place (a union's member, an unknown shape): not shown, it may be a key
            shown.append("<...>")
            annotation = raw = None
    return ".".join(shown)


class InvalidSettings(ValueError):
    """Values the settings models refuse, every model read (check_settings): one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def check_settings(
    models: Iterable[type[BaseSettings]], prefixed: Mapping[str, type[BaseSettings]] | None = None
) -> None:
    """Read each of `models` from the environment now, and each model of `prefixed` with its prefix (a job's
    settings model made when the job is registered): InvalidSettings listing every problem of every one, so that a
    refused value stops a command before it creates or opens anything, all of them named at once."""
    problems: list[str] = []
    reads: list[tuple[type[BaseSettings], str | None]] = [(model, None) for model in models]
    reads += [(model, prefix) for prefix, model in (prefixed or {}).items()]
    for model, prefix in reads:
        try:
            if prefix is None:
                model()
            else:
                model(_env_prefix=prefix)
        except (ValidationError, SettingsError) as exc:
            found = settings_problems(exc, prefix) or [str(exc)]
            problems += [line for line in found if line not in problems]
    if problems:
        raise InvalidSettings(problems)


def settings_problems(exc: BaseException, prefix: str | None = None) -> list[str] | None:
    """What is wrong with the environment when a settings model did not load, one line per problem naming the
    variable (`TOWER_COLLECTOR_HTTP_PORT='abc': Input should be a valid integer, ...`); None when `exc` is not
    about settings. The values of secrets (tokens, passwords, URLs, keys) are not shown, nor the keys of their
    maps (`TOWER_API_TOKENS (at <token 2>)`). `prefix`: the one the model was read with, when not its own."""
    if isinstance(exc, InvalidSettings):
        return exc.problems
    if isinstance(exc, SettingsError):  # a value pydantic-settings could not even parse (the JSON of a map, a list)
        named = re.search(r'field "(\w+)"', str(exc))
        field = named.group(1) if named else ""
        candidates = sorted(
            str(model.model_config.get("env_prefix", "")).upper() + field.upper()
            for model in loaded_settings_models().values()
            if field in model.model_fields
        )
        candidates = [name for name in candidates if not _parses(os.environ.get(name))] or candidates
        return [f"{' or '.join(candidates) or 'a TOWER_* variable'}: not valid JSON ({exc})"]
    if not isinstance(exc, ValidationError):
        return None
    model = loaded_settings_models().get(exc.title)
    if model is None:
        return None
    prefix = (prefix if prefix is not None else str(model.model_config.get("env_prefix", ""))).upper()
    lines = []
    for error in exc.errors():
        if not error["loc"]:  # a check across fields: name the variables it read, never their values
            read = sorted(prefix + str(key).upper() for key in _mapping(error.get("input")))
            lines.append(f"{', '.join(read) or prefix + '*'}: {error['msg']}")
            continue
        first, *rest = error["loc"]
        name = prefix + str(first).upper()
        field = model.model_fields.get(str(first))
        annotation = field.annotation if field is not None else None
        secret = any(part in name for part in _SECRET_PARTS) or _holds_secret(annotation)
        located = _secret_location(name, annotation, rest) if secret else ".".join(str(part) for part in rest)
        where = f" (at {located})" if rest else ""
        shown = "" if secret else f"={error.get('input')!r}"
        lines.append(f"{name}{shown}{where}: {error['msg']}")
    return lines
