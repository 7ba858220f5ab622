"""Log lines written by a thread of their own: a log reader that stops never stops the service.

Writing to stderr blocks when stderr is a pipe nobody reads (a paused `| less`, a stalled log
shipper): after 64 KiB the next write waits, and were it the event loop's, every request and
stream would wait with it. Here the loop formats a line and appends it to a list, nothing more:
no system call, and no thread woken but for the first line of a batch. The writer thread takes
all the lines waiting and writes them with one system call; the lines logged meanwhile make
the next batch. It holds the GIL only to join and encode a batch, never while it writes.

When 10,000 lines wait, further lines are dropped and counted, and a warning saying how many
follows the lines written before them. A line the stream refuses (a full disk) is counted the
same way and reported after the next write that succeeds. Lines go straight to the stream's
file descriptor, so a refused line is lost for good rather than kept in a buffer and written
later, out of turn.
"""

from __future__ import annotations

import atexit
import bisect
import itertools
import logging
import os
import threading
from typing import Final, TextIO

#: How many lines may wait for the writer before new ones are dropped (a few MB at most).
QUEUE_LINES: Final = 10_000
#: How long a batch gathers after its first line before it is written (none: at once).
LINGER_S: Final = 0.0
#: At exit, how long the lines still waiting may take to be written.
CLOSE_WAIT_S: Final = 2.0


class LineWriter:
    """A daemon thread that writes the lines handed to it to `stream`, in batches."""

    def __init__(
        self,
        stream: TextIO,
        notices: logging.Formatter,
        *,
        capacity: int = QUEUE_LINES,
        linger: float = LINGER_S,
    ) -> None:
        """`notices` formats the writer's own warnings (lines dropped, lines not written)."""
        self.stream = stream
        self.notices = notices
        self.capacity = capacity
        self.linger = linger
        self._fd = _descriptor(stream)
        self._encoding = getattr(stream, "encoding", None) or "utf-8"
        self._lock = threading.Lock()  # guards what put() and the writer both change
        self._lines: list[str] = []
        self._dropped = 0  # since the writer last took a batch
        self._closing = False
        self._ready = threading.Event()  # a batch has begun, or flush() or close() was called
        self._now = threading.Event()  # flush() or close(): cut the linger short
        self._flushes: list[threading.Event] = []  # set once what waits now is written
        self._lost = 0
        self._failed = 0  # lines refused since a write last succeeded
        self._torn = False  # a failed write cut a line off
        self._thread = threading.Thread(target=self._write_all, name="log-writer", daemon=True)
        self._thread.start()

    @property
    def lost(self) -> int:
        """Lines dropped (too many waited) or not written (the stream refused them)."""
        return self._lost

    def put(self, line: str) -> None:
        """Hand `line` (without its newline) to the writer, never waiting; drop it if full."""
        with self._lock:
            if len(self._lines) >= self.capacity:
                self._dropped += 1
                self._lost += 1
                return
            first = not self._lines
            self._lines.append(line)
        if first:
            self._ready.set()

    def flush(self, timeout: float) -> bool:
        """Write what waits now; whether it was written (or refused) within `timeout` s."""
        written = threading.Event()
        with self._lock:
            self._flushes.append(written)
        self._now.set()
        self._ready.set()
        return written.wait(timeout)

    def close(self, timeout: float = CLOSE_WAIT_S) -> None:
        """Write what waits, for at most `timeout` seconds; then stop."""
        with self._lock:
            self._closing = True
        self._now.set()
        self._ready.set()
        self._thread.join(timeout)

    def _write_all(self) -> None:
        while True:
            self._ready.wait()
            self._now.wait(self.linger)  # let the batch gather
            self._now.clear()
            self._ready.clear()
            with self._lock:
                lines, self._lines = self._lines, []
                dropped, self._dropped = self._dropped, 0
                flushes, self._flushes = self._flushes, []
                closing = self._closing
            if dropped:
                notice = f"{dropped} log line(s) dropped: the log's reader fell behind"
                lines.append(self._notice(notice))
            if lines:
                self._write(lines)
            for flushed in flushes:
                flushed.set()
            if closing:
                return

    def _write(self, lines: list[str]) -> None:
        written = self._write_lines(lines)
        refused = len(lines) - written
        if refused:
            self._failed += refused
            with self._lock:
                self._lost += refused
        elif self._failed:
            notice = f"{self._failed} log line(s) not written: the log's stream failed"
            if self._write_lines([self._notice(notice)]):
                self._failed = 0

    def _write_lines(self, lines: list[str]) -> int:
        """Write `lines`; how many of them were written whole."""
        if self._fd is None:
            try:
                self.stream.write(("\n" if self._torn else "") + "\n".join(lines) + "\n")
                self.stream.flush()
            except (OSError, ValueError):  # a closed stream
                return 0
            self._torn = False
            return len(lines)
        pieces = [(line + "\n").encode(self._encoding, "backslashreplace") for line in lines]
        if self._torn:  # the last write broke off mid-line: start on a line of our own
            pieces[0] = b"\n" + pieces[0]
        ends = list(itertools.accumulate(len(piece) for piece in pieces))
        data = memoryview(b"".join(pieces))
        done = 0
        try:
            while done < len(data):
                done += os.write(self._fd, data[done:])  # a view: no copy per partial write
        except OSError:  # a full disk, a closed pipe
            whole = bisect.bisect_right(ends, done)
            self._torn = self._torn if done == 0 else done not in ends
            return whole
        self._torn = False
        return len(lines)

    def _notice(self, message: str) -> str:
        record = logging.LogRecord(__name__, logging.WARNING, __file__, 0, message, None, None)
        return self.notices.format(record)


def lost_lines() -> int:
    """Log lines this process has lost so far (for `GET /metrics`)."""
    return 0 if current is None else current.lost


def start(stream: TextIO, notices: logging.Formatter) -> LineWriter:
    """The process's writer (one, as there is one root logger), made once, flushed at exit."""
    global current  # noqa: PLW0603 - one writer per process
    if current is None:
        current = LineWriter(stream, notices)
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
