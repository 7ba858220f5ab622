"""Lines a person types (or a script pipes in), read without blocking the event loop."""

from __future__ import annotations

import asyncio
import os
import stat
from typing import Final

#: Bytes read at a time; a terminal hands over one line per read anyway.
READ_SIZE: Final = 4096
#: The longest line taken. Input that runs on without a line end (`< /dev/zero`) is no person
#: typing: it is taken as ended, not buffered without end.
MAX_LINE_BYTES: Final = 64 * 1024


class LineReader:
    """Reads lines from a file descriptor (a terminal, a pipe or a file), one at a time.

    A terminal or a pipe is read when the event loop says it is readable, so a read that
    waits for the person can be cancelled (someone else decided) without a thread left
    hanging. A regular file is always readable and is read directly. Lines read ahead stay
    buffered for the next call. The descriptor belongs to the caller.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buffer = b""
        self._eof = False
        self._pollable = not stat.S_ISREG(os.fstat(fd).st_mode)

    @property
    def is_terminal(self) -> bool:
        """Whether a person types the lines (a terminal echoes them itself)."""
        return os.isatty(self.fd)

    @property
    def at_eof(self) -> bool:
        """Whether the input has ended and nothing is left in the buffer."""
        return self._eof and not self._buffer

    async def readline(self) -> str | None:
        """The next line without its line end, or None at the end of the input."""
        while b"\n" not in self._buffer and not self._eof:
            if self._pollable:
                chunk = await self._read()
            else:
                chunk = os.read(self.fd, READ_SIZE)
                await asyncio.sleep(0)  # a file that never ends must not hold the loop
            if chunk:
                self._buffer += chunk
            else:
                self._eof = True
            if len(self._buffer) > MAX_LINE_BYTES and b"\n" not in self._buffer:
                self._buffer, self._eof = b"", True
        if not self._buffer:
            return None
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode("utf-8", "replace").rstrip("\r")

    async def _read(self) -> bytes:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        try:
            loop.add_reader(self.fd, wake)
        except PermissionError:  # /dev/null and the like cannot be polled: never waits
            self._pollable = False
            return os.read(self.fd, READ_SIZE)
        try:
            await ready
        finally:
            loop.remove_reader(self.fd)
        try:
            return os.read(self.fd, READ_SIZE)
        except OSError:  # EIO: the terminal went away
            return b""
