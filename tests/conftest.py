"""Shared fixtures. chDB opens one data directory per process, so in-process tests share one
embedded store (truncated before each test); towers that must die or restart run as
subprocesses with their own data directories (see tests/support.py)."""

from __future__ import annotations

import functools
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx._config
import httpx._transports.default
import pytest
from xdist.scheduler import LoadScopeScheduling

from kernel.schema.migrations import migrate
from kernel.store import Store
from kernel.store.embedded import EmbeddedStore
from tests.support import RunningTower, start_in_process
from tower.case_days import case_days

pytest_plugins = ["tests.alerting.delivery_fixtures"]

TABLES = (
    "otel_traces",
    "otel_logs",
    "business_events",
    "dead_letters",
    "exceptions",
    "exception_audit",
    "sla_cases",
    "sla_runs",
    "sla_case_days",
    "alert_outbox",
    "alert_deliveries",
    "alert_state",
    "alert_digests",
    "alert_silences",
    "alert_cursors",
    "slack_interactions",
    "recon_runs",
    "recon_state",
    "replay_requests",
    "report_deliveries",
    "tower_leases",
    "event_ids",
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "server: needs a ClickHouse server (TOWER_TEST_CLICKHOUSE_URL)")
    config.addinivalue_line("markers", "slow: starts subprocesses or runs long")


# Packages whose modules share a package fixture (the dashboard's demo tower) run as one unit, so it is built once.
ONE_UNIT = ("tests/dashboard/",)


def unit_of(nodeid: str) -> str:
    """The unit of work a test belongs to: its module, or the package of ONE_UNIT it is in."""
    path = nodeid.split("::", 1)[0]
    return next((package for package in ONE_UNIT if path.startswith(package)), path)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests run unit by unit (unit_of), units with a `slow` test first, then the units with more tests: spread over
    workers (`make test` runs two, a unit to a worker at a time), the long ones start early and short ones end the
    run, instead of a long one ending it alone. A unit's tests keep their order."""
    units: dict[str, list[pytest.Item]] = {}
    for item in items:
        units.setdefault(unit_of(item.nodeid), []).append(item)
    slow = {unit for unit, tests in units.items() if any(t.get_closest_marker("slow") for t in tests)}
    order = sorted(units, key=lambda unit: (unit not in slow, -len(units[unit])))
    items[:] = [item for unit in order for item in units[unit]]


class UnitScheduling(LoadScopeScheduling):  # type: ignore[misc]  # pytest-xdist has no type information
    """pytest-xdist's `--dist loadfile`, by unit_of instead of by module, in the order collected (xdist would put
    the units with most tests first: the slow ones, with few tests each, then ended the run)."""

    def __init__(self, config: pytest.Config, log: Any = None) -> None:
        super().__init__(config, log)
        config.option.loadscopereorder = False

    def _split_scope(self, nodeid: str) -> str:
        return unit_of(nodeid)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> LoadScopeScheduling | None:
    """`--dist loadfile` (`make test`) schedules by unit; other modes as pytest-xdist does."""
    return UnitScheduling(config, log) if config.getoption("dist") == "loadfile" else None


@pytest.fixture(scope="session", autouse=True)
def one_tls_context() -> Iterator[None]:
    """One default TLS context for every httpx client the tests make in this process. httpx builds one per client
    (loading the CA bundle: about 0.1 s here) though tests speak plain HTTP to local servers; the suite makes
    over a thousand clients. Any other TLS setting still gets a context of its own."""
    build = httpx._config.create_ssl_context
    default = functools.cache(build)

    def create(verify: Any = True, cert: Any = None, trust_env: bool = True) -> ssl.SSLContext:
        if verify is True and cert is None and trust_env:
            return default()
        return build(verify=verify, cert=cert, trust_env=trust_env)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(httpx._transports.default, "create_ssl_context", create)
        yield


@pytest.fixture(scope="session")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStore]:
    store = EmbeddedStore(tmp_path_factory.mktemp("chdb"))
    migrate(store)
    yield store
    store.close()


def empty(store: Store) -> None:
    """Empty every table of `store`, and forget what this process kept of their content (the overview's readings
    of the cases, tower/case_days.py: the embedded engine numbers blocks from 1 again after a TRUNCATE)."""
    for table in TABLES:
        store.command(f"TRUNCATE TABLE IF EXISTS {table}")
    case_days.forget(store)


@pytest.fixture
def store(shared_store: EmbeddedStore) -> EmbeddedStore:
    """The embedded store, empty."""
    empty(shared_store)
    return shared_store


@pytest.fixture
def tower(store: EmbeddedStore, tmp_path: Path) -> Iterator[RunningTower]:
    """A tower serving HTTP and gRPC on free ports in this process, on the shared store."""
    with start_in_process(tmp_path, store) as running:
        yield running
