"""A really full file system: a small tmpfs the tests mount, fill and free (they run as root)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

FILLER = "filler.bin"
CHUNK = b"\0" * 4096


def _mount_or_skip(target: Path, size: str) -> None:
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        reason = f"cannot mount a tmpfs (needs root): {done.stderr.strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


@contextlib.contextmanager
def small_disk(target: Path, size: str = "4m") -> Iterator[Path]:
    """A tmpfs of `size` mounted at `target` for the block."""
    _mount_or_skip(target, size)
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=True)


def _fill(disk: Path) -> int:
    written = 0
    with (disk / FILLER).open("ab", buffering=0) as filler:
        while True:
            try:
                filler.write(CHUNK)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                return written
            written += len(CHUNK)


async def fill(disk: Path) -> int:
    """Take every free byte of `disk` (a file grown until ENOSPC); how many were taken."""
    return await asyncio.to_thread(_fill, disk)


async def free(disk: Path) -> None:
    """Give back what `fill` took."""
    await asyncio.to_thread((disk / FILLER).unlink)
