"""Keys from a file (RESEARCH_API_KEYS_FILE): one `NAME:SECRET[:admin]` per line."""

from __future__ import annotations

import hashlib
from pathlib import Path

from research_service.auth.keys import (
    MIN_FILE_SECRET_CHARS,
    NAME_RULE,
    KeyInfo,
    StoredKey,
    check_name,
    hashed,
)
from research_service.errors import ConfigError


def file_key_id(name: str) -> str:
    """The id of a file key: stable for its name, never one a store would make."""
    return "file-" + hashlib.sha256(name.encode()).hexdigest()[:12]


def parse(text: str, *, source: str) -> list[StoredKey]:
    """The keys a file's text lists; ConfigError naming the line when one is wrong."""
    keys: dict[str, StoredKey] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, _, secret = line.partition(":")
        admin = secret.endswith(":admin")
        if admin:
            secret = secret.removesuffix(":admin")
        where = f"{source} line {number}"
        try:
            check_name(name.strip())
        except ValueError:
            raise ConfigError(f"{where}: the name is not valid; use {NAME_RULE}") from None
        if len(secret) < MIN_FILE_SECRET_CHARS:
            raise ConfigError(
                f"{where}: the secret of {name!r} is shorter than {MIN_FILE_SECRET_CHARS} "
                "characters; make one with `openssl rand -hex 32`"
            )
        name = name.strip()
        if name in keys:
            raise ConfigError(f"{where}: {name!r} is listed twice; give each name one line")
        info = KeyInfo(file_key_id(name), name, admin=admin)
        keys[name] = hashed(info, secret)
    return list(keys.values())


def load(path: Path) -> list[StoredKey]:
    """The keys in the file at `path`; ConfigError when it cannot be read or is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read the API keys file {path} ({exc}); fix --api-keys-file"
        ) from None
    return parse(text, source=str(path))
