"""Which run store is PostgreSQL, asked without loading asyncpg in a process that has none."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from research_service.runs.log import EventLog

if TYPE_CHECKING:
    from research_service.runs.postgres_log import PostgresEventLog

#: Loaded once a PostgreSQL store is opened (`postgres_log.open`), and only then.
_MODULE = "research_service.runs.postgres_log"


def postgres_store(store: EventLog) -> PostgresEventLog | None:
    """The PostgreSQL run store `store` is, or that a cluster's log keeps; else None.

    A process on SQLite or in memory never loads `postgres_log` (nor asyncpg, 30 ms at every
    start): no PostgreSQL store can exist before its module does. Duck-typed for the cluster's
    log, so that a single process never loads cluster mode's modules either.
    """
    module = sys.modules.get(_MODULE)
    if module is None:
        return None
    kind = module.PostgresEventLog
    inner = store if isinstance(store, kind) else getattr(store, "store", None)
    found: PostgresEventLog | None = inner if isinstance(inner, kind) else None
    return found
