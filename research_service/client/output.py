"""What the client writes: text made inert for a terminal, on a stdout whose failure is one line."""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import replace
from typing import Any, Final, Protocol, TextIO

from research_service.client.events import RunEvent
from research_service.errors import OutputFailed

#: Control characters a terminal acts on: C0 but \t and \n, DEL, and C1 (0x9b is CSI, as ESC [);
#: and Unicode's bidirectional overrides and isolates, which reorder what follows them on the
#: line (a title or link shown reversed: "Trojan Source").
CONTROLS: Final = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
#: What `json.dumps(ensure_ascii=False)` leaves raw although a terminal acts on it: DEL, C1 and
#: the bidirectional controls.
_RAW_IN_JSON: Final = re.compile("[\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


class Writer(Protocol):
    """Where a display writes: stdout, a file, or a test's buffer."""

    def write(self, text: str, /) -> object:
        """Write `text`."""

    def flush(self) -> object:
        """Hand what was written on."""


def printable(text: str) -> str:
    r"""`text` with each control character but \n and \t written as an inert escape (`\x1b`).

    Documents, web pages and models can hold escape sequences that would retitle, clear or
    recolour the terminal; shown this way they are visible and do nothing.
    """
    return CONTROLS.sub(_escaped, text.replace("\r\n", "\n"))


def _escaped(match: re.Match[str]) -> str:
    code = ord(match[0])
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable_data(value: Any) -> Any:
    """`value` (an event's JSON data) with every string in it made `printable`."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {key: printable_data(item) for key, item in value.items()}
    if isinstance(value, list):
        return [printable_data(item) for item in value]
    return value


def printable_event(event: RunEvent) -> RunEvent:
    """The event with its data made `printable`, for a display meant for people."""
    return replace(event, data=printable_data(event.data))


def json_line(value: Any) -> str:
    r"""`value` as one line of compact JSON, with no character a terminal acts on left raw.

    json escapes C0 itself; DEL and C1 are escaped here too (`\u009b`), which JSON reads as
    the same string.
    """
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return _RAW_IN_JSON.sub(lambda m: f"\\u{ord(m[0]):04x}", text)


class Sink:
    """A text stream for the command's output whose first failed write ends the command.

    A write that fails (a full disk, a closed descriptor) raises OutputFailed once, and
    every later write is dropped, so cleanup that writes goes on. A BrokenPipeError passes
    through: the reader went away (`| head`), which the command answers without a message.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.failed = False

    def write(self, text: str, /) -> None:
        """Write `text`, or drop it once the stream has failed."""
        if not self.failed:
            try:
                self.stream.write(text)
            except BrokenPipeError:
                raise
            except (OSError, ValueError) as exc:
                self._fail(exc)

    def flush(self) -> None:
        """Flush the stream, or do nothing once it has failed."""
        if not self.failed:
            try:
                self.stream.flush()
            except BrokenPipeError:
                raise
            except (OSError, ValueError) as exc:
                self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        self.failed = True
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        # What is still buffered would fail again at exit, with a message of Python's own.
        silence(self.stream)
        raise OutputFailed(f"could not write the output to stdout ({reason})") from None


def stdout() -> Sink:
    """The process's stdout as a Sink; OutputFailed when it is closed (`>&-`)."""
    if sys.stdout is None:
        raise OutputFailed("could not write the output: stdout is closed")
    return Sink(sys.stdout)


def silence(stream: TextIO) -> None:
    """Point the stream's descriptor at /dev/null, so nothing written to it fails any more."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)
