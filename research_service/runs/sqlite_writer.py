"""The SQLite store's write-behind queue: each batch one transaction, in a worker thread."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from research_service.errors import StoreUnavailable
from research_service.runs.batch_writer import BatchWriter
from research_service.runs.sqlite_db import Database, Row, unavailable


class EventWriter(BatchWriter):
    """Commits queued events to the store file from a worker thread (the loop never waits)."""

    errors = (sqlite3.Error, OSError)

    def __init__(
        self,
        db: Database,
        *,
        path: Path,
        on_written: Callable[[list[Row]], None],
        **options: Any,
    ) -> None:
        super().__init__(name=str(path), on_written=on_written, **options)
        self._db = db
        self.path = path

    async def _write(self, batch: list[Row]) -> None:
        await self._db.call(self._db.insert_events, batch)

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        assert isinstance(exc, sqlite3.Error | OSError)
        return unavailable(self.path, exc)
