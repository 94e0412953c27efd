"""The store seam: every read and write of ClickHouse goes through a Store.

Two backends share one SQL dialect: `EmbeddedStore` (chDB, in-process, the default) and
`ServerStore` (a ClickHouse server through clickhouse-connect). Values are always bound as
typed parameters (`{name:Type}` in the SQL); rows are inserted as JSONEachRow batches.
"""

from kernel.store.base import Params, Row, Store, StoreError, StoreUnavailable
from kernel.store.factory import open_store

__all__ = ["Params", "Row", "Store", "StoreError", "StoreUnavailable", "open_store"]
