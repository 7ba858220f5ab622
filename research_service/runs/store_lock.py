"""One process owns a run store: an exclusive lock beside the store file, freed when it exits."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from research_service.errors import ConfigError


class StoreInUse(ConfigError):
    """Another process serves this run store."""

    code = "store_in_use"


def lock_path(store: Path) -> Path:
    """The lock file of the run store file `store`."""
    return store.with_name(store.name + ".lock")


@contextlib.contextmanager
def owning(store: Path) -> Iterator[None]:
    """Hold the run store `store` for this process; StoreInUse when another process does.

    The lock is the kernel's (flock), so it goes with the process however it ends, a kill
    -9 included: a stale lock file never keeps a service from starting.
    """
    store.parent.mkdir(parents=True, exist_ok=True)
    path = lock_path(store)
    handle = path.open("a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreInUse(
                f"the run store in {store.parent} is in use by {_holder(handle)}; stop that "
                "process, or give this one its own --data-dir (or --store memory)"
            ) from None
        _write_holder(handle)
        yield
    finally:
        # Closing the file releases the lock; the file stays (removing it would race).
        handle.close()


def _write_holder(handle: IO[str]) -> None:
    """Say in the lock file who holds it, for the message another process shows."""
    handle.seek(0)
    handle.truncate()
    started = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": started}))
    handle.flush()


def _holder(handle: IO[str]) -> str:
    """Who holds the lock, as the lock file says."""
    handle.seek(0)
    try:
        holder = json.loads(handle.read())
        return (
            f"another research-service process (pid {holder['pid']} on {holder['host']}, "
            f"since {holder['since']})"
        )
    except (ValueError, KeyError, TypeError):
        return "another research-service process"
