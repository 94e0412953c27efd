"""Open the configured store backend."""

from __future__ import annotations

from kernel.settings import StoreSettings
from kernel.store.base import Store


def open_store(settings: StoreSettings) -> Store:
    """The store the settings name: embedded chDB in `data_dir`, or a ClickHouse server at `url`."""
    if settings.backend == "server":
        from kernel.store.server import ServerStore

        if not settings.url:
            raise ValueError("TOWER_STORE_URL is required when TOWER_STORE_BACKEND=server")
        return ServerStore(settings.url.get_secret_value(), settings.database)
    from kernel.store.embedded import EmbeddedStore

    return EmbeddedStore(
        settings.data_dir / "clickhouse",
        settings.backup_dir or settings.data_dir / "backups",
        min_free_bytes=settings.min_free_mib * 2**20,
    )
