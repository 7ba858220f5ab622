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
    -9 included: a stale lock file never keeps a service from starting. The folder itself is
    locked too: a lock file deleted while its service runs (a clean-up script) must not let a
    second one in, whose start would end the first one's live runs as interrupted.
    """
    path = lock_path(store)
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        # A raw descriptor: no buffer left to flush (and fail) on a full disk.
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        folder = os.open(store.parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise ConfigError(
            f"cannot create {path} ({exc.strerror or exc}); check the folder, or point "
            "--data-dir elsewhere"
        ) from None
    try:
        try:
            fcntl.flock(folder, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreInUse(
                f"the run store in {store.parent} is in use by {_holder(fd)}; stop that "
                "process, or give this one its own --data-dir (or --store memory)"
            ) from None
        _write_holder(fd)
        yield
    finally:
        # Closing the files releases the locks; the file stays (removing it would race).
        os.close(fd)
        os.close(folder)


def _write_holder(fd: int) -> None:
    """Say in the lock file who holds it, for the message another process shows."""
    started = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": started}
    # Best effort: on a full disk the lock holds all the same, only unnamed.
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)


def _holder(fd: int) -> str:
    """Who holds the lock, as the lock file says."""
    try:
        holder = json.loads(os.pread(fd, 4096, 0))
        return (
            f"another research-service process (pid {holder['pid']} on {holder['host']}, "
            f"since {holder['since']})"
        )
    except (ValueError, KeyError, TypeError):
        return "another research-service process"
