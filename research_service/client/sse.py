"""An incremental Server-Sent Events parser that follows the WHATWG spec's rules."""

from __future__ import annotations

import codecs
from dataclasses import dataclass

BOM = "\ufeff"


@dataclass(frozen=True, slots=True)
class Message:
    """One dispatched event: its type, data and the last event id at dispatch."""

    event: str
    data: str
    id: str


class SSEParser:
    """Feed it bytes as they arrive; it returns the events each chunk completes.

    Lines may end with CRLF, LF or CR (also split across chunks); comments and unknown
    fields are ignored; `retry` holds the last valid reconnection time in ms.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._started = False
        self._skip_lf = False  # the previous chunk ended with CR: a leading LF belongs to it
        self._event = ""
        self._data: list[str] = []
        self.last_id = ""
        self.retry: int | None = None

    def feed(self, chunk: bytes) -> list[Message]:
        """Parse `chunk`; return the events it completed, in order."""
        text = self._decoder.decode(chunk)
        if not self._started and text:
            self._started = True
            text = text.removeprefix(BOM)
        if self._skip_lf and text:
            self._skip_lf = False
            text = text.removeprefix("\n")
        self._buffer += text
        messages: list[Message] = []
        start = 0
        buffer = self._buffer
        while True:
            cr, lf = buffer.find("\r", start), buffer.find("\n", start)
            if cr == -1 and lf == -1:
                break
            if cr != -1 and (lf == -1 or cr < lf):
                end, after = cr, cr + 1
                if after == len(buffer):
                    self._skip_lf = True  # CR at the end: a following LF must not be a line
                elif buffer[after] == "\n":
                    after += 1
            else:
                end, after = lf, lf + 1
            message = self._line(buffer[start:end])
            if message is not None:
                messages.append(message)
            start = after
        self._buffer = buffer[start:]
        return messages

    def _line(self, line: str) -> Message | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self.last_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)
        return None

    def _dispatch(self) -> Message | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return Message(event=event or "message", data="\n".join(data), id=self.last_id)
