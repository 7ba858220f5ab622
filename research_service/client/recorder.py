"""`--record FILE`: write the recording format (docs/recordings.md) while listening."""

from __future__ import annotations

import time
from pathlib import Path
from typing import IO, Any

from research_service.client.events import RunEvent
from research_service.errors import ClientError
from research_service.events import dumps
from research_service.recording import event_line, header_fields


class Recorder:
    """Appends each event to a recording file as it arrives, flushed line by line.

    A recording's `t_ms` is the run's clock: an event that carries it (`elapsed_ms`, or
    `done.timings_ms.total`) gives it exactly; the others get the previous event's time plus
    the time between their arrivals. A run joined late therefore replays its past at once.
    """

    def __init__(self, path: Path) -> None:
        """Open the file at once, so a path that cannot be written fails before any run starts."""
        self.path = path
        try:
            self._file: IO[str] = path.open("w", encoding="utf-8", newline="\n")
        except OSError as exc:
            raise ClientError(f"cannot write the recording {path} ({exc.strerror})") from exc
        self._t_ms = 0
        self._arrived = time.monotonic()
        self.complete = False

    def start(self, run: dict[str, Any]) -> None:
        """Write the header line from the run's snapshot (or `POST /v1/runs` answer)."""
        self._arrived = time.monotonic()
        header = header_fields(
            run_id=run["id"],
            question=run["question"],
            options=run["options"],
            created_at=run["created_at"],
        )
        self._write(dumps(header) + "\n")

    def event(self, event: RunEvent) -> None:
        """Append one event."""
        now = time.monotonic()
        clock = event.data.get("elapsed_ms")
        if event.is_final:
            clock = (event.data.get("timings_ms") or {}).get("total")
        if not isinstance(clock, int):  # tokens: the time since the previous event
            clock = self._t_ms + int((now - self._arrived) * 1000)
        self._t_ms, self._arrived = max(self._t_ms, clock), now
        self._write(event_line(seq=event.seq, name=event.name, data=event.data, t_ms=self._t_ms))
        self.complete = event.is_final

    def close(self) -> None:
        """Close the file (a recording without `done` is incomplete: replay refuses it)."""
        self._file.close()

    def discard(self) -> None:
        """Close and delete the file: no run was found or started to record."""
        self._file.close()
        self.path.unlink(missing_ok=True)

    def _write(self, line: str) -> None:
        self._file.write(line)
        self._file.flush()
