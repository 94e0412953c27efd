"""The generated docs cannot go stale: the configuration reference in docs/operations.md and the cluster DDL in
docs/scale-out.md equal what the code generates now; every setting is described; no secret shows a value; the
cluster DDL parses."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings

from kernel.lease import LeaseSettings
from kernel.model.text import Name
from kernel.schema.retention import RetentionSettings
from kernel.settings import Settings, StoreSettings, env_names
from kernel.store.embedded import EmbeddedStore
from tower.docs_config import (
    OPERATIONS,
    Cluster,
    cluster_statements,
    default_text,
    replace_section,
    section,
    settings_models,
    stale,
    type_text,
)
from tower.roles import RoleSettings


def test_the_committed_docs_are_what_the_code_generates(store: EmbeddedStore) -> None:
    assert stale(store) == [], "run: .venv/bin/python -m tower.docs_config (and commit the docs)"


def test_every_settings_model_is_in_the_reference_and_every_field_described() -> None:
    models = settings_models()
    assert Settings not in models, "the aggregate is not a settings area"
    for model in (StoreSettings, LeaseSettings, RetentionSettings, RoleSettings):
        assert model in models
    assert models[0] is StoreSettings
    undescribed = [f"{m.__name__}.{name}" for m in models for name, f in m.model_fields.items() if not f.description]
    assert undescribed == [], "describe these settings (Field(description=...))"
    reference = section(OPERATIONS.read_text(), "settings")
    assert "`TOWER_ROLE`" in reference and "`TOWER_LEASE_TTL_SECONDS`" in reference
    assert "`TOWER_RETENTION_OTEL_TRACES_DAYS` | int | `30` |" in reference


def test_a_constrained_type_reads_as_its_type() -> None:
    # the constraints (and a validator's address, which changes every run) are for the description to say
    assert type_text(dict[str, Name]) == "dict[str, str]"


def test_secrets_show_only_whether_they_are_required() -> None:
    class Demo(BaseSettings):
        """A model with every kind of secret."""

        url: SecretStr | None = None
        signing_secret: SecretStr
        tokens: dict[str, str] = {"leaked": "admin"}
        plain: str = "shown"

    fields = Demo.model_fields
    assert default_text("url", fields["url"]) == "none"
    assert default_text("signing_secret", fields["signing_secret"]) == "required"
    assert default_text("tokens", fields["tokens"]) == "none"
    assert default_text("plain", fields["plain"]) == "`shown`"
    assert env_names(StoreSettings, "url") == ["TOWER_STORE_URL"]


def test_a_section_is_replaced_between_its_markers_only() -> None:
    text = "intro\n<!-- generated:x:start -->\nold\n<!-- generated:x:end -->\noutro\n"
    assert (
        replace_section(text, "x", "new\n")
        == "intro\n<!-- generated:x:start -->\nnew\n<!-- generated:x:end -->\noutro\n"
    )


def test_the_cluster_ddl_parses_and_covers_every_table(store: EmbeddedStore) -> None:
    statements = cluster_statements(Cluster("prod", "tower"))
    for statement in statements:
        store.query(f"EXPLAIN AST {statement}")  # parses (nothing runs: chDB has no cluster)
    text = "\n".join(statements)
    found = store.query("SELECT name, engine FROM system.tables WHERE database = currentDatabase()")
    views = {r["name"] for r in found if r["engine"] == "MaterializedView"}
    tables = {r["name"] for r in found} - views
    for table in tables - {"otel_traces", "otel_logs"}:
        if table.startswith("retention_copy_") or table == "size_probe":
            continue
        assert f"CREATE TABLE IF NOT EXISTS tower.{table} ON CLUSTER 'prod'" in text, table
    assert views == {"event_ids_view"}
    assert "CREATE MATERIALIZED VIEW IF NOT EXISTS tower.event_ids_view ON CLUSTER 'prod' TO tower.event_ids AS" in text
    # the view and the backfill of its table read the replicated table, not a bare name
    assert text.count("FROM tower.business_events") == 2 and "FROM business_events" not in text
    assert "INSERT INTO tower.event_ids (source, id, lo, hi, last_at)" in text
    assert "ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/tower/otel_traces_local', '{replica}')" in text
    assert "ENGINE = Distributed('prod', 'tower', 'otel_traces_local', cityHash64(TraceId))" in text
    assert (
        "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/all/tower/tower_leases', '{replica}', version)"
        in text
    )
    assert "ALTER TABLE tower.business_events ON CLUSTER 'prod' ADD PROJECTION IF NOT EXISTS sla_by_order" in text
