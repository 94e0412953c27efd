"""First-run tokens: with none configured, generate random ones into the data directory.

Nothing works with a default secret: a fresh tower gets one random ingest token per source
system and one admin API token, written to `<data_dir>/tokens.json` (mode 0600) and printed
in the start banner. Configured tokens (TOWER_INGEST_TOKENS, TOWER_API_TOKENS) always win.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from kernel.model.events import SOURCE_SYSTEMS, source_covers
from kernel.settings import Settings


def owner_only() -> int:
    """From now on, what this process creates (the data directory, the store's files, the spool's raw batches,
    dead letters, backups) is for its user alone (umask 077 added to the process's): raw business records are
    no other local user's to read. `tower serve` and `tower restore` set it before they create anything. Answers
    the umask it replaced."""
    previous = os.umask(0o077)
    os.umask(previous | 0o077)
    return previous


def tokens_file(settings: Settings) -> Path:
    return settings.store.data_dir / "tokens.json"


def load_or_create_tokens(settings: Settings) -> dict[str, Any]:
    """Fill empty token settings from the data directory, creating the file on first run. With both kinds of
    token configured nothing is read or written: generated tokens no one uses are stray credentials."""
    path = tokens_file(settings)
    if settings.ingest.tokens and settings.api.tokens:
        return {"ingest": {}, "api": {}}
    if path.exists():
        data = read_tokens(path)
    else:
        data = {
            "ingest": {secrets.token_urlsafe(24): [system] for system in SOURCE_SYSTEMS},
            "api": {secrets.token_urlsafe(24): "admin"},
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        # written whole beside it, flushed, then renamed into place: a crash leaves no empty or half file that
        # would stop every later start; a second first start at once keeps the file the first one wrote
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(temporary, path)  # fails if another process made it meanwhile: theirs stands
        except FileExistsError:
            data = read_tokens(path)
        finally:
            temporary.unlink(missing_ok=True)
    if not settings.ingest.tokens:
        settings.ingest.tokens = {k: list(v) for k, v in data["ingest"].items()}
    if not settings.api.tokens:
        settings.api.tokens = dict(data["api"])
    return data


class TokensFileError(RuntimeError):
    """The tokens file cannot be read; the message names it and what to do."""


def read_tokens(path: Path) -> dict[str, Any]:
    """The tokens file; TokensFileError naming it and what to do when it is not one (emptied by a crash, edited)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TokensFileError(
            f"{path} cannot be read as the tower's tokens ({exc}): restore it from a backup, or remove it to"
            " generate new ones (every sender then needs its new token), or set TOWER_INGEST_TOKENS and"
            " TOWER_API_TOKENS"
        ) from exc
    if not isinstance(data, dict) or not isinstance(data.get("ingest"), dict) or not isinstance(data.get("api"), dict):
        raise TokensFileError(f"{path} is not the tower's tokens file: it needs 'ingest' and 'api' maps")
    return data


def token_for(settings: Settings, source: str) -> str | None:
    """An ingest token that may send for `source` (from settings or the tokens file)."""
    candidates = dict(settings.ingest.tokens)
    path = tokens_file(settings)
    if not candidates and path.exists():
        candidates = read_tokens(path)["ingest"]
    for token, sources in candidates.items():
        if any(source_covers(s, source) for s in sources):
            return token
    return None


def admin_token(settings: Settings) -> str | None:
    """An admin API token (from settings or the tokens file)."""
    candidates = dict(settings.api.tokens)
    path = tokens_file(settings)
    if not candidates and path.exists():
        candidates = read_tokens(path)["api"]
    return next((t for t, role in candidates.items() if role == "admin"), None)
