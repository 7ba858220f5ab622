"""Reading a file someone named: only a regular file, and never past a size limit.

A FIFO would block the read until someone writes to it (for ever, through SIGTERM), and a link
to `/dev/zero` would fill the memory: the file is opened without blocking and checked once open,
so one swapped in after a `stat` is refused too.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import NamedTuple


class NotRegularFile(OSError):
    """A FIFO, socket, device or folder where a regular file was expected."""

    def __init__(self, path: Path, mode: int) -> None:
        self.folder = stat.S_ISDIR(mode)
        super().__init__(f"{path} is {'a folder' if self.folder else 'not a regular file'}")


class Contents(NamedTuple):
    """A regular file's bytes, and its state when opened and once read."""

    data: bytes
    opened: os.stat_result
    read: os.stat_result


def read_regular(path: Path, limit: int) -> Contents | None:
    """The regular file at `path`, or None when it holds more than `limit` bytes.

    A file larger than `limit` when opened is not read at all, and one that grows while read
    is not read past it. NotRegularFile (an OSError) for anything but a regular file.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        opened = os.fstat(fd)
    except OSError:
        os.close(fd)
        raise
    if not stat.S_ISREG(opened.st_mode):
        # Checked before the file object is made: a folder cannot be one (its descriptor
        # would be left open, and the error name the descriptor's number, not the path).
        os.close(fd)
        raise NotRegularFile(path, opened.st_mode)
    with os.fdopen(fd, "rb") as file:
        if opened.st_size > limit:
            return None
        data = file.read(limit + 1)
        read = os.fstat(fd)
    return None if len(data) > limit else Contents(data, opened, read)
