"""API keys: their format, names, and the salted hash that is all a store keeps of them."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Final

#: What every key this service makes starts with (so a leaked one is recognisable).
KEY_PREFIX: Final = "rsk_"
#: A key made here: prefix, the id a store finds it by, and the secret part.
_KEY_SHAPE: Final = re.compile(r"^rsk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})\Z")
#: Key names are owners: short, printable, safe in logs and listings.
NAME_SHAPE: Final = re.compile(r"[A-Za-z0-9._@-]{1,64}")
NAME_RULE: Final = "1-64 characters of letters, digits and . _ @ -"
#: The shortest secret a keys file may give (32 characters: enough entropy if random).
MIN_FILE_SECRET_CHARS: Final = 32
#: The longest credential read at all: anything longer is refused unread.
MAX_KEY_CHARS: Final = 512
SALT_BYTES: Final = 16


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """Who a key is: its id, its name (the owner of its runs) and whether it is an admin."""

    id: str
    name: str
    admin: bool


@dataclass(frozen=True, slots=True)
class StoredKey:
    """What a store keeps of a key: never the secret, only a salted hash of it."""

    info: KeyInfo
    salt: bytes
    digest: bytes

    def matches(self, secret: str) -> bool:
        """Whether `secret` is this key's (compared in constant time)."""
        return hmac.compare_digest(digest(self.salt, secret), self.digest)


def digest(salt: bytes, secret: str) -> bytes:
    """The salted hash of a key's secret (HMAC-SHA256; keys are random, not passwords)."""
    return hmac.new(salt, secret.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()


def new_key() -> tuple[str, str]:
    """A fresh key id and the whole key (`rsk_<id>_<secret>`) to give its owner once."""
    key_id = secrets.token_hex(6)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def key_id_of(key: str) -> str | None:
    """The id inside a key this service made, or None for any other string."""
    match = _KEY_SHAPE.match(key)
    return match.group(1) if match else None


def hashed(info: KeyInfo, key: str) -> StoredKey:
    """What a store keeps of `key`: a fresh salt and the hash."""
    salt = secrets.token_bytes(SALT_BYTES)
    return StoredKey(info, salt, digest(salt, key))


def check_name(name: str) -> str:
    """`name` if it is a valid key name; ValueError saying the rule otherwise."""
    if not NAME_SHAPE.fullmatch(name):
        raise ValueError(f"key name {name!r} is not valid; use {NAME_RULE}")
    return name
