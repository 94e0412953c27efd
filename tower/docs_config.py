"""The generated parts of the docs, so they cannot go stale: the configuration reference in
docs/operations.md (every settings model's variables, types, defaults and descriptions, and every
scheduled job) and the ClickHouse cluster DDL in docs/scale-out.md (from the migrations).

    python -m tower.docs_config                 # rewrite the generated sections
    python -m tower.docs_config --check         # exit 1 when a committed section differs
    python -m tower.docs_config cluster-ddl --cluster NAME --database DB   # the DDL to run on a cluster

Each section sits between `<!-- generated:NAME:start -->` and `<!-- generated:NAME:end -->` markers;
tests/tower/test_docs_generated.py fails when a section is out of date with the code.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import os
import pkgutil
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, NoneType, UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import click
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from kernel.jobs import JobRegistry
from kernel.schema.migrations import _LEDGER, MIGRATIONS
from kernel.settings import env_names
from kernel.store import Store

ROOT = Path(__file__).resolve().parents[1]
OPERATIONS = ROOT / "docs" / "operations.md"
SCALE_OUT = ROOT / "docs" / "scale-out.md"
# the packages whose settings make up the tower's configuration, in layer order; the dashboard's
# settings module only (its other modules are Streamlit pages that run on import)
PACKAGES = ("kernel", "collector", "sla_rules", "alerting", "reconcilers", "tower")
EXTRA_MODULES = ("dashboard.settings",)
SECRET_NAMES = re.compile(r"token|secret|password", re.IGNORECASE)


# --- the configuration reference ---------------------------------------------------------------


def _modules() -> Iterator[ModuleType]:
    for package in PACKAGES:
        root = importlib.import_module(package)
        yield root
        for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
            if info.name.rsplit(".", 1)[-1] == "__main__":
                continue
            yield importlib.import_module(info.name)
    for name in EXTRA_MODULES:
        yield importlib.import_module(name)


def settings_models() -> list[type[BaseSettings]]:
    """Every settings model read from TOWER_* variables, in package and definition order (the aggregate
    `Settings`, whose fields are other models, and prefix-less bases are left out)."""
    found: list[type[BaseSettings]] = []
    for module in _modules():
        for value in vars(module).values():
            if not (inspect.isclass(value) and issubclass(value, BaseSettings) and value.__module__ == module.__name__):
                continue
            if not value.model_config.get("env_prefix") or value in found:
                continue
            if value.model_fields and all(_is_settings(f.annotation) for f in value.model_fields.values()):
                continue
            found.append(value)
    # the store, the doors and the API first: what every deployment sets
    return sorted(found, key=lambda m: (m.__module__ != "kernel.settings", found.index(m)))


def _is_settings(annotation: Any) -> bool:
    return inspect.isclass(annotation) and issubclass(annotation, BaseSettings)


def type_text(annotation: Any) -> str:
    """A readable type: `int`, `str \\| None`, `embedded \\| server`, `dict[str, list[str]]`."""
    origin = get_origin(annotation)
    if origin is Annotated:  # the constraints are the description's to say
        return type_text(get_args(annotation)[0])
    if origin is Literal:
        return " | ".join(f"`{a}`" for a in get_args(annotation))
    if origin in (Union, UnionType):
        return " | ".join(type_text(a) for a in get_args(annotation))
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(type_text(a) for a in get_args(annotation))}]"
    if annotation is NoneType:
        return "None"
    if annotation is SecretStr:
        return "secret"
    return getattr(annotation, "__name__", str(annotation))


def _is_secret(name: str, field: FieldInfo) -> bool:
    return "SecretStr" in repr(field.annotation) or bool(SECRET_NAMES.search(name))


def default_text(name: str, field: FieldInfo) -> str:
    """The default as an operator writes it; secrets only say whether one is required."""
    if field.is_required():
        return "required"
    if _is_secret(name, field):
        return "none"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, (dict, list, tuple, set, frozenset)):
        if not value:
            return "`{}`" if isinstance(value, dict) else "`[]`"
        return f"`{json.dumps(value, default=str, sort_keys=False)}`"
    return f"`{value}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _source(model: type) -> str:
    path = Path(inspect.getfile(model)).resolve()
    return str(path.relative_to(ROOT))


def render_settings(models: Sequence[type[BaseSettings]]) -> str:
    """One table per settings model: variable, type, default, description."""
    out: list[str] = []
    for model in models:
        prefix = str(model.model_config.get("env_prefix", ""))
        doc = " ".join((inspect.getdoc(model) or "").split())
        out += [f"### `{prefix}*` — {model.__name__} (`{_source(model)}`)", "", doc, ""]
        out += ["| variable | type | default | description |", "| --- | --- | --- | --- |"]
        for name, field in model.model_fields.items():
            variables = "<br>".join(f"`{v}`" for v in env_names(model, name))
            type_cell = _cell(type_text(field.annotation))
            description = _cell(field.description or "")
            out.append(f"| {variables} | {type_cell} | {_cell(default_text(name, field))} | {description} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def render_jobs(registry: JobRegistry) -> str:
    """The scheduled jobs: name, what they do, their variables and defaults."""
    out = ["| job | what it does | variables (defaults) |", "| --- | --- | --- |"]
    for job in sorted(registry, key=lambda j: j.name):
        model = job.settings_model
        settings = [
            f"`{env_names(model, name)[0]}` ({_cell(default_text(name, field))})"
            for name, field in model.model_fields.items()
        ]
        what = job.description
        if job.after:
            what += " Also runs right after each run of " + ", ".join(f"`{name}`" for name in job.after) + "."
        out.append(f"| `{job.name}` | {_cell(what)} | {'<br>'.join(settings)} |")
    return "\n".join(out) + "\n"


def job_registry(store: Store) -> JobRegistry:
    """The jobs a tower registers, built on `store` with the defaults (every TOWER_* variable ignored) and
    Slack configured, so jobs that exist only with Slack are listed too."""
    from kernel.jobs import SchedulerSettings
    from tower.app import build_tower

    with (
        tempfile.TemporaryDirectory() as tmp,
        _clean_environment({"TOWER_SLACK_WEBHOOK_URL": "https://example.invalid"}),
    ):
        from kernel.settings import Settings, StoreSettings

        settings = Settings(store=StoreSettings(data_dir=Path(tmp)))
        return build_tower(settings, store=store, scheduler=SchedulerSettings(enabled=False)).jobs


@contextlib.contextmanager
def _clean_environment(extra: dict[str, str]) -> Iterator[None]:
    saved = {k: v for k, v in os.environ.items() if k.startswith("TOWER_")}
    for key in saved:
        del os.environ[key]
    os.environ.update(extra)
    try:
        yield
    finally:
        for key in extra:
            os.environ.pop(key, None)
        os.environ.update(saved)


# --- the cluster DDL -------------------------------------------------------------------------------

# Spans and logs are sharded (Distributed over per-shard replicated tables); every other table is
# small next to them and read with FINAL and joins, so it is replicated whole to every node.
SHARDED: dict[str, str] = {"otel_traces": "cityHash64(TraceId)", "otel_logs": "rand()"}
_CREATE = re.compile(r"CREATE TABLE IF NOT EXISTS (?P<name>\w+)")
_ENGINE = re.compile(r"ENGINE = (?P<engine>\w+)(?:\((?P<args>[^)]*)\))?")
_ALTER = re.compile(r"^ALTER TABLE (?P<name>\w+) ")
_VIEW = re.compile(
    r"CREATE MATERIALIZED VIEW IF NOT EXISTS (?P<name>\w+) TO (?P<target>\w+) AS(?P<select>.*\bFROM )(?P<source>\w+)$",
    re.DOTALL,
)
_BACKFILL = re.compile(
    r"^INSERT INTO (?P<target>\w+) (?P<select>.*\bFROM )(?P<source>\w+)(?P<rest>.*)$",
    re.DOTALL,
)


@dataclass(frozen=True)
class Cluster:
    """Where the DDL goes: the cluster's name (remote_servers) and the tower's database."""

    name: str = "tower_cluster"
    database: str = "tower"


def _replicated(statement: str, path: str) -> str:
    def engine(match: re.Match[str]) -> str:
        args = [f"'{path}'", "'{replica}'"]
        if match.group("args"):
            args.append(match.group("args"))
        return f"ENGINE = Replicated{match.group('engine')}({', '.join(args)})"

    return _ENGINE.sub(engine, statement, count=1)


def _replicated_only(match: re.Match[str] | None, text: str) -> re.Match[str] | None:
    """`match` (a view or a backfill reading `source` into `target`), refused when either table is sharded: the
    statement would then need DDL of its own per shard."""
    if match is not None and (match.group("source") in SHARDED or match.group("target") in SHARDED):
        raise ValueError(f"a statement between sharded tables needs its own cluster DDL: {text[:80]}")
    return match


def cluster_statements(cluster: Cluster) -> list[str]:
    """Every migration (and the migration ledger) as DDL for a replicated, sharded cluster, then the ledger rows
    that record them as applied; idempotent."""
    db, on = cluster.database, f"ON CLUSTER '{cluster.name}'"
    out = [f"CREATE DATABASE IF NOT EXISTS {db} {on}"]
    for statement in [_LEDGER, *(s for m in sorted(MIGRATIONS, key=lambda m: m.version) for s in m.statements)]:
        text = statement.strip()
        create = _CREATE.match(text)
        alter = _ALTER.match(text)
        if create:
            name = create.group("name")
            if name in SHARDED:
                local = f"{name}_local"
                body = text.replace(f"IF NOT EXISTS {name} (", f"IF NOT EXISTS {db}.{local} {on} (", 1)
                out.append(_replicated(body, f"/clickhouse/tables/{{shard}}/{db}/{local}"))
                out.append(
                    f"CREATE TABLE IF NOT EXISTS {db}.{name} {on} AS {db}.{local}\n"
                    f"ENGINE = Distributed('{cluster.name}', '{db}', '{local}', {SHARDED[name]})"
                )
            else:
                body = text.replace(f"IF NOT EXISTS {name} (", f"IF NOT EXISTS {db}.{name} {on} (", 1)
                out.append(_replicated(body, f"/clickhouse/tables/all/{db}/{name}"))
        elif alter:
            name = alter.group("name")
            target = f"{name}_local" if name in SHARDED else name
            out.append(text.replace(f"ALTER TABLE {name} ", f"ALTER TABLE {db}.{target} {on} ", 1))
        elif view := _replicated_only(_VIEW.match(text), text):
            # a view fires on the node an insert reaches; its target, replicated whole, carries its rows to the others
            out.append(
                f"CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{view.group('name')} {on} TO {db}.{view.group('target')}"
                f" AS{view.group('select')}{db}.{view.group('source')}"
            )
        elif backfill := _replicated_only(_BACKFILL.match(text), text):
            # run on one node: the target, replicated whole, carries the rows to the others (and again: min/max)
            out.append(
                f"INSERT INTO {db}.{backfill.group('target')} {backfill.group('select')}{db}.{backfill.group('source')}"
                f"{backfill.group('rest')}"
            )
        else:
            raise ValueError(f"cannot translate this migration statement for a cluster: {text[:80]}")
    # record the migrations as applied, so the tower's processes do not run them again on one node
    applied = ",\n    ".join(
        f"({m.version}, '{m.name.replace(chr(39), chr(39) * 2)}', now64(3))"
        for m in sorted(MIGRATIONS, key=lambda m: m.version)
    )
    out.append(f"INSERT INTO {db}.tower_schema_migrations (version, name, applied_at) VALUES\n    {applied}")
    return out


def render_cluster_ddl(cluster: Cluster) -> str:
    """The cluster DDL as one SQL block for the docs."""
    return "```sql\n" + ";\n\n".join(cluster_statements(cluster)) + ";\n```\n"


# --- sections --------------------------------------------------------------------------------------


def sections(store: Store) -> dict[Path, dict[str, str]]:
    """Each doc's generated sections by name."""
    return {
        OPERATIONS: {
            "settings": render_settings(settings_models()),
            "jobs": render_jobs(job_registry(store)),
        },
        SCALE_OUT: {"cluster-ddl": render_cluster_ddl(Cluster())},
    }


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- generated:{name}:start -->\n", f"<!-- generated:{name}:end -->"


def replace_section(text: str, name: str, body: str) -> str:
    """`text` with the section `name` replaced by `body` (ValueError when its markers are missing)."""
    start, end = _markers(name)
    head, sep, rest = text.partition(start)
    if not sep or end not in rest:
        raise ValueError(f"markers of the generated section {name!r} are missing")
    _, _, tail = rest.partition(end)
    return head + start + body + end + tail


def section(text: str, name: str) -> str:
    """The current body of the section `name`."""
    start, end = _markers(name)
    return text.partition(start)[2].partition(end)[0]


def stale(store: Store) -> list[str]:
    """`file: section` for every generated section that differs from what the code generates now."""
    out = []
    for path, wanted in sections(store).items():
        text = path.read_text()
        out += [f"{path.relative_to(ROOT)}: {name}" for name, body in wanted.items() if section(text, name) != body]
    return out


def write(store: Store) -> list[str]:
    """Rewrite every generated section; returns the ones that changed."""
    changed = []
    for path, wanted in sections(store).items():
        text = original = path.read_text()
        for name, body in wanted.items():
            text = replace_section(text, name, body)
        if text != original:
            path.write_text(text)
            changed.append(str(path.relative_to(ROOT)))
    return changed


@contextlib.contextmanager
def _scratch_store() -> Iterator[Store]:
    from kernel.schema.migrations import migrate
    from kernel.store.embedded import EmbeddedStore

    with tempfile.TemporaryDirectory() as tmp:
        store = EmbeddedStore(Path(tmp))
        migrate(store)
        try:
            yield store
        finally:
            store.close()


@click.group(invoke_without_command=True)
@click.option("--check", is_flag=True, help="Exit 1 when a generated section is out of date; write nothing.")
@click.pass_context
def main(ctx: click.Context, check: bool) -> None:
    """Regenerate the configuration reference (docs/operations.md) and the cluster DDL (docs/scale-out.md)."""
    if ctx.invoked_subcommand is not None:
        return
    with _scratch_store() as store:
        if check:
            out_of_date = stale(store)
            for item in out_of_date:
                click.echo(f"out of date: {item}", err=True)
            if out_of_date:
                click.echo("run: .venv/bin/python -m tower.docs_config", err=True)
                sys.exit(1)
            click.echo("generated docs are up to date")
            return
        changed = write(store)
    click.echo(f"rewrote {', '.join(changed)}" if changed else "generated docs were up to date")


@main.command("cluster-ddl")
@click.option("--cluster", default="tower_cluster", show_default=True, help="Cluster name from remote_servers.")
@click.option("--database", default="tower", show_default=True, help="The tower's database (TOWER_STORE_DATABASE).")
def cluster_ddl(cluster: str, database: str) -> None:
    """Print the DDL that creates (or completes) the tower's schema on a ClickHouse cluster; run it before a
    tower (new or upgraded) starts against the cluster."""
    for statement in cluster_statements(Cluster(cluster, database)):
        click.echo(statement + ";\n")


if __name__ == "__main__":
    main()
