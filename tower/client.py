"""A small HTTP client of the running tower, for the CLI commands (the server owns the store)."""

from __future__ import annotations

import os

import click
import httpx

from kernel.settings import Settings
from tower.bootstrap import admin_token, token_for

DEFAULT_URL = "http://127.0.0.1:4318"


def tower_url(url: str | None) -> str:
    """The tower's base URL: --url, TOWER_URL, or the local default."""
    return (url or os.environ.get("TOWER_URL") or DEFAULT_URL).rstrip("/")


def resolve_admin_token(token: str | None) -> str:
    """--token, TOWER_TOKEN, or the admin token generated into the local data directory."""
    found = token or os.environ.get("TOWER_TOKEN") or admin_token(Settings())
    if not found:
        raise click.UsageError("no API token: pass --token or set TOWER_TOKEN")
    return found


def resolve_ingest_token(token: str | None, source: str) -> str:
    """--token, TOWER_INGEST_TOKEN, or a local generated token that may send for `source`."""
    found = token or os.environ.get("TOWER_INGEST_TOKEN") or token_for(Settings(), source)
    if not found:
        raise click.UsageError(f"no ingest token for {source!r}: pass --token or set TOWER_INGEST_TOKEN")
    return found


def client(url: str | None, token: str, timeout: float = 60.0) -> httpx.Client:
    return httpx.Client(base_url=tower_url(url), headers={"Authorization": f"Bearer {token}"}, timeout=timeout)
