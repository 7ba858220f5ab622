"""Keys from a file (RESEARCH_API_KEYS_FILE): one `NAME:SECRET[:admin]` per line."""

from __future__ import annotations

import hashlib
import hmac
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


def file_key_id(name: str, secret: str, *, id_key: bytes) -> str:
    """The id of a file key: the same while its line is, new when its secret changes.

    Sessions and stream tokens name their key by id, so a changed secret ends them; keyed
    with the service's signing secret, the id tells nothing about the key.
    """
    message = f"{name}\n{secret}".encode("utf-8", "surrogatepass")
    return "file-" + hmac.new(id_key, message, hashlib.sha256).hexdigest()[:12]


def parse(text: str, *, source: str, id_key: bytes) -> list[StoredKey]:
    """The keys a file's text lists; ConfigError naming the line when one is wrong."""
    keys: dict[str, StoredKey] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, _, secret = line.partition(":")
        # Spaces around a field are not the secret: a key is presented without them.
        secret = secret.strip()
        admin = secret.endswith(":admin")
        if admin:
            secret = secret.removesuffix(":admin").rstrip()
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
        info = KeyInfo(file_key_id(name, secret, id_key=id_key), name, admin=admin)
        keys[name] = hashed(info, secret)
    return list(keys.values())


def load(path: Path, *, id_key: bytes) -> list[StoredKey]:
    """The keys in the file at `path`; ConfigError when it cannot be read or is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read the API keys file {path} ({exc}); fix --api-keys-file"
        ) from None
    return parse(text, source=str(path), id_key=id_key)
