"""Owner routing: which team owns a rule's exception, from the rule and the case's data.

The model lives in `kernel.routing` (the alerting package reads the same file for its alert
routing); this module re-exports it so rules and routing keep loading from sla_rules. See
kernel/routing.py and sla_rules/routing.yaml for the file's format.
"""

from __future__ import annotations

from kernel.routing import (
    DATA_FIELDS,
    INTEGRATION,
    AlertRoute,
    Alerts,
    AlertTarget,
    Destination,
    ExceptionMatch,
    MaintenanceWindow,
    OwnerConfig,
    OwnerName,
    RootCause,
    Route,
    RouteMatch,
    Routing,
    RuleLike,
    Values,
)

__all__ = [
    "DATA_FIELDS",
    "INTEGRATION",
    "AlertRoute",
    "AlertTarget",
    "Alerts",
    "Destination",
    "ExceptionMatch",
    "MaintenanceWindow",
    "OwnerConfig",
    "OwnerName",
    "RootCause",
    "Route",
    "RouteMatch",
    "Routing",
    "RuleLike",
    "Values",
]
