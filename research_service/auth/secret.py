"""The secret that signs stream tokens and sessions: RESEARCH_SECRET, else a generated file."""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path
from typing import Final

from research_service.errors import ConfigError

log = logging.getLogger(__name__)

#: The generated secret's file under --data-dir (owner-only permissions).
SECRET_FILE: Final = "secret.key"


def load_secret(given: str | None, data_dir: Path) -> bytes:
    """The signing secret: `given` (RESEARCH_SECRET), else read or made once in `data_dir`.

    Made once and kept, so tokens and sessions outlive a restart; every node of a
    deployment must share it (set RESEARCH_SECRET, or share the data folder).
    """
    if given is not None:
        return given.encode()
    path = data_dir / SECRET_FILE
    try:
        return _read_or_make(path)
    except OSError as exc:
        raise ConfigError(
            f"cannot read or create the signing secret {path} ({exc}); set RESEARCH_SECRET "
            "or fix --data-dir"
        ) from None


def _read_or_make(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: two processes starting at once make one secret, not two.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            log.warning(
                "the signing secret %s can be read by other users (mode %o); chmod 600 it",
                path,
                mode,
            )
        value = path.read_bytes().strip()
        if len(value) < 32:
            raise OSError(f"it holds {len(value)} bytes, fewer than 32") from None
        return value
    value = secrets.token_hex(32).encode()
    with os.fdopen(fd, "wb") as file:
        file.write(value + b"\n")
    log.info("made a new signing secret in %s", path)
    return value
