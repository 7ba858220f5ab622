"""A sync's progress on a terminal (one line redrawn in place) or in a log (a line now and then)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final, TextIO

# A terminal line redrawn more often than this only flickers.
REDRAW_EVERY_S: Final = 0.1
# Without a terminal (CI logs, a pipe) a new line at most this often, and one at the end.
LINE_EVERY_S: Final = 5.0
_ERASE: Final = "\r\x1b[K"  # carriage return, then clear to the end of the line


class ProgressLine:
    """A `ProgressCallback` that shows `label: done/total files (pct%)` on `stream`."""

    def __init__(
        self,
        stream: TextIO,
        *,
        label: str,
        tty: bool | None = None,
        every_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.label = label
        self.tty = stream.isatty() if tty is None else tty
        default = REDRAW_EVERY_S if self.tty else LINE_EVERY_S
        self.every_s = default if every_s is None else every_s
        self._clock = clock
        self._last = clock()
        self._shown = False  # a terminal line is on screen and must be erased before others

    def __call__(self, done: int, total: int) -> None:
        now = self._clock()
        if done < total and now - self._last < self.every_s:
            return
        self._last = now
        text = f"{self.label}: {done}/{total} files ({done * 100 // max(total, 1)}%)"
        if self.tty:
            self.stream.write(_ERASE + text)
            self._shown = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def clear(self) -> None:
        """Erase the terminal line, so another message starts on a clean line."""
        if self._shown:
            self.stream.write(_ERASE)
            self.stream.flush()
            self._shown = False
            self._last = float("-inf")  # redraw at the next update

    def log_handler(self) -> logging.Handler:
        """A handler writing log records to the same stream without garbling the line."""
        return _ClearingHandler(self)


class _ClearingHandler(logging.StreamHandler[TextIO]):
    """Writes each record on its own line, erasing the progress line first."""

    def __init__(self, progress: ProgressLine) -> None:
        super().__init__(progress.stream)
        self.progress = progress
        self.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.progress.clear()
        super().emit(record)
