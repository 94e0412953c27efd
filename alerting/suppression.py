"""Root-cause suppression: while a technical exception is open for a source, the business exceptions it
explains are held back instead of alerted one by one.

The source a technical exception is for:
- `source-silence` exceptions carry it (their key and context `source`: `wms`, `wms/dallas`);
- `integration-errors` exceptions carry the `tower.source` of their spans (the source of the ingest
  token that sent them) in context `source`. When that is empty, `AlertingSettings.service_sources`
  maps the span's service name to a source, and otherwise a service named like a source system
  (`wms`, `wms/dallas`) is that source. A technical exception with no source holds nothing back, nor does one
  whose context says `root_cause: false` (`ingest-refusals`: a source's refused records do not explain its
  business exceptions, and one bad record must not delay them).

It explains a business exception when its source covers the business exception's own context
`source` (`wms` covers `wms/dallas`), or when a `root_causes` entry of the routing file whose
`source` it covers (a failing `wms` covers the `wms/dallas` entry) `holds` the exception (for
example `{source: wms/dallas, holds: {warehouse: DAL}}`: Dallas's WMS explains Dallas's missed
cutoffs, whatever system started their cases).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kernel.exceptions import ExceptionRecord
from kernel.model.events import SOURCE_SYSTEMS, source_covers, source_system
from kernel.routing import RootCause


def _is_source(name: str) -> bool:
    return bool(name) and source_system(name) in SOURCE_SYSTEMS


class RootCauses:
    """Finds the open technical exception (if any) that explains a business exception."""

    def __init__(self, root_causes: Sequence[RootCause], service_sources: Mapping[str, str]) -> None:
        self.root_causes = list(root_causes)
        self.service_sources = dict(service_sources)

    def source_of(self, technical: ExceptionRecord) -> str | None:
        """The source a technical exception is for (see the module's docstring), None when unknown or when it
        is no root cause."""
        if technical.context.get("root_cause") is False:
            return None
        source = str(technical.context.get("source") or "")
        if _is_source(source):
            return source
        service = str(technical.context.get("service") or "")
        mapped = self.service_sources.get(service, "")
        if _is_source(mapped):
            return mapped
        return service if _is_source(service) else None

    def explains(self, source: str, values: Mapping[str, Any]) -> bool:
        """Whether a technical failure of `source` explains a business exception with these values."""
        own = str(values.get("source") or "")
        if own and source_covers(source, own):
            return True
        return any(source_covers(source, cause.source) and cause.holds.holds(values) for cause in self.root_causes)

    def holder(
        self, values: Mapping[str, Any], technical: Sequence[tuple[ExceptionRecord, str]]
    ) -> ExceptionRecord | None:
        """The first (oldest) of the open technical exceptions, with their sources, that explains a business
        exception with these values; None for a technical exception or when none explains it.

        Whether one explains depends on its source only, so pass `first_per_source(technical)` when deciding
        many exceptions: the answer is the same and the work grows with the sources, not the exceptions."""
        if values.get("kind") != "business":
            return None
        for record, source in technical:
            if self.explains(source, values):
                return record
        return None


def first_per_source(technical: Sequence[tuple[ExceptionRecord, str]]) -> tuple[tuple[ExceptionRecord, str], ...]:
    """The first technical exception of each source, in the order given (the later ones of a source can never be
    the first to explain anything)."""
    first: dict[str, tuple[ExceptionRecord, str]] = {}
    for record, source in technical:
        first.setdefault(source, (record, source))
    return tuple(first.values())
