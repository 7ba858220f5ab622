"""`--record FILE`: write the recording format (docs/recordings.md) while listening."""

from __future__ import annotations

import contextlib
import os
import stat
import time
from pathlib import Path
from typing import IO, Any

from research_service.client.events import RunEvent
from research_service.errors import ClientError, NotAnEventStream
from research_service.events import dumps
from research_service.recording import RecordingError, check_header, event_line, header_fields


class Recorder:
    """Appends each event to a recording file as it arrives, flushed line by line.

    A recording's `t_ms` is the run's clock: an event that carries it (`elapsed_ms`, or
    `done.timings_ms.total`) gives it exactly; the others get the previous event's time plus
    the time between their arrivals. A run joined late therefore replays its past at once.
    """

    def __init__(self, path: Path) -> None:
        """Open the file at once, so a path that cannot be written fails before any run starts.

        An existing file is opened without truncating it: it is left as it was until the
        recording begins (`start`), and by `discard` when no run was found or started.
        """
        self.path = path
        try:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
                self._created = True
            except FileExistsError:
                fd = os.open(path, os.O_WRONLY)  # no O_TRUNC: untouched until `start`
                self._created = False
        except OSError as exc:
            raise self._failed(exc) from None
        # SIM115: the file stays open while the run is followed; close() or discard() closes it.
        self._file: IO[str] = open(fd, "w", encoding="utf-8", newline="\n")  # noqa: SIM115
        self._t_ms = 0
        self._seq = 0
        self._arrived = time.monotonic()
        self.complete = False

    def start(self, run: dict[str, Any]) -> None:
        """Begin the recording (an existing file is emptied now) with the run's header line.

        The header comes from the run's snapshot (or `POST /v1/runs` answer).
        """
        # Checked, as `replay` reads it, before the file is emptied: a file there before is
        # left as it was, and what is written can be replayed. The fields go in whatever their
        # types: the check says what is wrong.
        fields: dict[str, Any] = {"run_id": run.get("id")}
        fields.update((name, run.get(name)) for name in ("question", "options", "created_at"))
        try:
            header = check_header(header_fields(**fields), source="the service's run")
        except RecordingError as exc:
            raise NotAnEventStream(
                f"the service's run cannot head a recording ({exc.reason}); check --server "
                "(is it a research-service?)"
            ) from None
        self._arrived = time.monotonic()
        fd = self._file.fileno()
        if not self._created and stat.S_ISREG(os.fstat(fd).st_mode):
            try:
                os.ftruncate(fd, 0)
            except OSError as exc:
                raise self._failed(exc) from None
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
        # The ending of a run cut short by a crash may come with seqs this listener saw on
        # events the crash lost (docs/protocol.md, "After a crash"): a recording of what the
        # listener saw numbers it on from there, as its format requires.
        seq = max(event.seq, self._seq + 1) if event.ends_after_a_crash else event.seq
        self._seq = seq
        self._write(event_line(seq=seq, name=event.name, data=event.data, t_ms=self._t_ms))
        self.complete = event.is_final

    def close(self) -> None:
        """Close the file (a recording without `done` is incomplete: replay refuses it)."""
        with contextlib.suppress(OSError):  # a failed write was said already
            self._file.close()

    def discard(self) -> None:
        """Close the file, and delete it if this recorder made it: no run was found or started.

        A file that was there before is left exactly as it was.
        """
        self.close()
        if self._created:
            self.path.unlink(missing_ok=True)

    def _write(self, line: str) -> None:
        try:
            self._file.write(line)
            self._file.flush()
        except OSError as exc:
            raise self._failed(exc) from None

    def _failed(self, exc: OSError) -> ClientError:
        return ClientError(f"cannot write the recording {self.path} ({exc.strerror or exc})")
