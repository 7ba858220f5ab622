"""What a SQLite file's failure was, in SQLite's own terms, whichever layer raised it."""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path
from typing import Final

# SQLite's primary result codes (https://sqlite.org/rescode.html).
BUSY: Final = 5
READONLY: Final = 8
IOERR: Final = 10
CORRUPT: Final = 11
FULL: Final = 13
CANTOPEN: Final = 14
NOTADB: Final = 26
#: Below this much free space a "disk I/O error" is a full disk: SQLite says I/O error when it
#: cannot grow a WAL's index.
FULL_BELOW_BYTES: Final = 64 * 1024


def primary_code(path: Path, exc: sqlite3.Error | OSError) -> int:
    """The SQLite result code `exc` amounts to, for the file at `path` (0 if none)."""
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return FULL
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return READONLY
        code = IOERR
    else:
        code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    if code == IOERR and disk_full(path):
        return FULL
    return code


def disk_full(path: Path) -> bool:
    """Whether the file system holding `path` has less than FULL_BELOW_BYTES left."""
    try:
        stats = os.statvfs(path.parent)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < FULL_BELOW_BYTES
