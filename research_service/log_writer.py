"""Log lines written by a thread of their own: a log reader that stops never stops the service.

Writing to stderr blocks when stderr is a pipe nobody reads (a paused `| less`, a stalled log
shipper): after 64 KiB the next write waits, and were it the event loop's, every request and
stream would wait with it. Here the loop only hands a record to a bounded queue. A thread
formats and writes it. When the queue is full (10,000 lines behind) a line is dropped and
counted, and the next line that fits is preceded by a warning saying how many were lost. A
line the stream refuses (a full disk) is counted the same way and reported after the next line
that is written. Lines go straight to the stream's file descriptor, so a refused line is lost
for good rather than kept in a buffer and written later, out of turn.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
from typing import Final, TextIO

from research_service.own_thread import lower_current_thread

#: How many lines may wait for the writer before new ones are dropped (a few MB at most).
QUEUE_LINES: Final = 10_000
#: At exit, how long the lines still queued may take to be written.
CLOSE_WAIT_S: Final = 2.0


class LineWriter:
    """A daemon thread that formats queued records and writes them to `stream`, a line each."""

    def __init__(
        self,
        stream: TextIO,
        formatter: logging.Formatter,
        *,
        capacity: int = QUEUE_LINES,
        nice: int = 0,
    ) -> None:
        self.stream = stream
        self.formatter = formatter
        self._queue: queue.Queue[logging.LogRecord | None] = queue.Queue(capacity)
        self._nice = nice
        self._fd = _descriptor(stream)
        self._encoding = getattr(stream, "encoding", None) or "utf-8"
        self._torn = False  # a line was cut off by a failed write
        # Counted by the threads that log (under the handler's lock) and by the writer.
        self._dropped = 0
        self._unreported = 0
        self._unwritten = 0
        self._thread = threading.Thread(target=self._write_all, name="log-writer", daemon=True)
        self._thread.start()

    @property
    def lost(self) -> int:
        """Lines dropped (the queue was full) or not written (the stream refused them)."""
        return self._dropped + self._unwritten

    def put(self, record: logging.LogRecord) -> None:
        """Queue `record` without ever waiting; drop it when the queue is full."""
        if self._unreported and self._offer(_lost_lines(self._unreported, "dropped")):
            self._unreported = 0
        if not self._offer(record):
            self._dropped += 1
            self._unreported += 1

    def close(self, timeout: float = CLOSE_WAIT_S) -> None:
        """Write what is queued, waiting at most `timeout` seconds in all; then stop."""
        deadline = time.monotonic() + timeout
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(max(0.0, deadline - time.monotonic()))

    def _offer(self, record: logging.LogRecord) -> bool:
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            return False
        return True

    def _write_all(self) -> None:
        lower_current_thread(self._nice)
        failed = 0  # lines the stream refused since one was last written
        while (record := self._queue.get()) is not None:
            if self._write(record):
                if failed and self._write(_lost_lines(failed, "not written")):
                    failed = 0
            else:
                failed += 1
                self._unwritten += 1

    def _write(self, record: logging.LogRecord) -> bool:
        try:
            line = self.formatter.format(record) + "\n"
        except Exception:  # noqa: BLE001 - a formatter's bug must not end the writer
            line = f"{record.levelname} {record.name}: {record.msg} (a line the format failed)\n"
        if self._torn:  # the last line broke off: this one starts on a line of its own
            line = "\n" + line
        try:
            if self._fd is None:
                self.stream.write(line)
                self.stream.flush()
            else:
                self._write_fd(self._fd, line.encode(self._encoding, "backslashreplace"))
        except (OSError, ValueError):  # a full disk, a closed stream
            return False
        self._torn = False
        return True

    def _write_fd(self, fd: int, data: bytes) -> None:
        """Write all of `data` to `fd`, or raise.

        Straight to the descriptor: a line the stream refused is then not kept in its buffer
        and written, out of turn, later after all.
        """
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(fd, view) :]
            except OSError:
                if len(view) < len(data):
                    self._torn = True
                raise


def lost_lines() -> int:
    """Log lines this process has lost so far (for `GET /metrics`)."""
    return 0 if current is None else current.lost


def start(stream: TextIO, formatter: logging.Formatter, *, nice: int = 0) -> LineWriter:
    """The process's writer (one, as there is one root logger), made once, flushed at exit."""
    global current  # noqa: PLW0603 - one writer per process
    if current is None:
        current = LineWriter(stream, formatter, nice=nice)
        atexit.register(current.close)
    return current


#: The process's writer, once `start` made it.
current: LineWriter | None = None


def _descriptor(stream: TextIO) -> int | None:
    """The file descriptor under `stream` (its buffer flushed), or None if it has none."""
    try:
        stream.flush()
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return None


def _lost_lines(count: int, how: str) -> logging.LogRecord:
    reason = "the log's reader fell behind" if how == "dropped" else "the log's stream failed"
    message = f"{count} log line(s) {how}: {reason}"
    return logging.LogRecord(__name__, logging.WARNING, __file__, 0, message, None, None)
