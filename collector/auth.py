"""Ingest tokens: who may send, and for which sources."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from kernel.api_auth import token_id
from kernel.model.events import source_covers
from kernel.settings import IngestSettings


@dataclass(frozen=True)
class Grant:
    """What one token may do: send records whose source is one of `sources` (or below it)."""

    token_id: str
    sources: tuple[str, ...]

    def allows(self, source: str) -> bool:
        return any(source_covers(s, source) for s in self.sources)

    @property
    def primary_source(self) -> str:
        """The source recorded for records that carry none of their own (spans, plain logs)."""
        return self.sources[0] if self.sources else ""


class TokenRegistry:
    """Looks bearer tokens up in constant time per candidate."""

    def __init__(self, settings: IngestSettings) -> None:
        self._grants = {token: Grant(token_id(token), tuple(sources)) for token, sources in settings.tokens.items()}
        self._by_id = {g.token_id: g for g in self._grants.values()}

    def authenticate(self, authorization: str | None) -> Grant | None:
        """The grant for an `Authorization: Bearer <token>` header, or None."""
        if not authorization:
            return None
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        token = token.strip()
        for candidate, grant in self._grants.items():
            if hmac.compare_digest(candidate.encode(), token.encode()):
                return grant
        return None

    def by_id(self, token_id: str) -> Grant | None:
        """The grant a token id names now (used when replaying dead letters)."""
        return self._by_id.get(token_id)

    def __len__(self) -> int:
        return len(self._grants)
