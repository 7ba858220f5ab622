"""Keys from a file (RESEARCH_API_KEYS_FILE): one `NAME:SECRET[:admin]` per line."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from research_service.auth.keys import (
    MIN_FILE_SECRET_CHARS,
    NAME_RULE,
    SALT_BYTES,
    KeyInfo,
    StoredKey,
    check_name,
    digest,
)
from research_service.errors import ConfigError
from research_service.regular_files import NotRegularFile, read_regular

#: The largest keys file read: thousands of keys (a request's key is looked up, not compared).
MAX_FILE_BYTES: Final = 1024 * 1024
#: What tells one state of the file from another: device, inode, size, mtime and ctime (ns).
#: Size and ctime too, as two writes may fall in one tick of a coarse mtime clock.
Version = tuple[int, int, int, int, int]
_FIX: Final = "fix --api-keys-file (RESEARCH_API_KEYS_FILE)"
#: The role field that makes a key an admin: exactly this, after the line's last ':'.
ADMIN_ROLE: Final = "admin"


class FileChanging(ConfigError):
    """The keys file changed while it was read: an edit in progress; read it again later."""


@dataclass(frozen=True, slots=True)
class Checked:
    """The keys file as read once at start and found to list keys: not read again to start."""

    path: Path
    text: str = field(repr=False)  # the secrets, in clear
    version: Version


def version(status: os.stat_result) -> Version:
    """The state of the file that `status` describes."""
    s = status
    return (s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns)


def file_key_id(name: str, secret: str, *, id_key: bytes, admin: bool = False) -> str:
    """The id of a file key: the same while its line is, new when its secret or role changes.

    Sessions and stream tokens name their key by id, so a changed secret ends them, and so
    does a changed role (an admin demoted must not keep streaming others' runs); keyed with
    the service's signing secret, the id tells nothing about the key.
    """
    role = f"\n{ADMIN_ROLE}" if admin else ""  # none for others: their ids stay as they were
    message = f"{name}\n{secret}{role}".encode("utf-8", "surrogatepass")
    return "file-" + hmac.new(id_key, message, hashlib.sha256).hexdigest()[:12]


def parse(text: str, *, source: str, id_key: bytes) -> list[StoredKey]:
    """The keys a file's text lists; ConfigError naming the line when one is wrong."""
    keys: dict[str, StoredKey] = {}
    # One salt for the file's keys: a presented key is hashed once and looked up, not
    # compared with each line (thousands of lines held the loop 50 ms a request).
    salt = secrets.token_bytes(SALT_BYTES)
    secrets_of: dict[bytes, str] = {}  # a secret's hash → the name it is listed for
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source} line {number}"
        if ":" not in line:
            # The line is not quoted: it may be a secret whose name was left out.
            raise ConfigError(f"{where} has no ':' after a name; write NAME:SECRET[:admin]")
        name, _, secret = line.partition(":")
        # Spaces around a field are not the secret: a key is presented without them.
        secret, admin = _role(secret.strip(), where=where)
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
        hashed = digest(salt, secret)
        if (twin := secrets_of.get(hashed)) is not None:
            # A key is its owner: one secret for two names would make whoever sends it both.
            raise ConfigError(
                f"{where}: {name!r} has the same secret as {twin!r}; give each key its own "
                "secret (`openssl rand -hex 32`)"
            )
        secrets_of[hashed] = name
        info = KeyInfo(file_key_id(name, secret, id_key=id_key, admin=admin), name, admin=admin)
        keys[name] = StoredKey(info, salt, hashed)
    return list(keys.values())


def _role(secret: str, *, where: str) -> tuple[str, bool]:
    """The secret, and whether the line ends in the admin role; ConfigError for a misspelt role.

    A secret may hold ':', so only a last field of exactly `admin` is the role. One that reads
    admin in another case or with spaces is refused rather than kept as part of the secret,
    which would make a key that is no admin, with a secret its owner does not send.
    """
    head, colon, last = secret.rpartition(":")
    if colon and last == ADMIN_ROLE:
        return head.rstrip(), True
    if colon and last.strip().casefold() == ADMIN_ROLE:
        # Never the field itself: were it the end of a secret, it would quote the secret.
        raise ConfigError(
            f"{where}: the role after the last ':' is not written ':admin'; write it in lower "
            "case with no space after the ':' (NAME:SECRET:admin)"
        )
    return secret, False


def read(path: Path) -> tuple[str, Version]:
    """The text of the keys file and the state it was read in; ConfigError if it is no such file.

    Only a regular file is read (a FIFO or a device is refused instead of read for ever).
    """
    try:
        contents = read_regular(path, MAX_FILE_BYTES)
    except NotRegularFile as exc:
        what = "a folder" if exc.folder else "not a regular file"
        raise ConfigError(f"the API keys file {path} is {what}; {_FIX}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the API keys file {path} ({exc.strerror}); {_FIX}") from exc
    if contents is None:
        raise ConfigError(
            f"the API keys file {path} is larger than {MAX_FILE_BYTES // 1024} KiB; {_FIX}"
        )
    if version(contents.opened) != version(contents.read):
        raise FileChanging(f"the API keys file {path} changed while it was read; read it again")
    try:
        # utf-8-sig: a byte order mark some editors write is not part of the first name.
        return contents.data.decode("utf-8-sig"), version(contents.opened)
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"the API keys file {path} is not UTF-8 text (byte {exc.start + 1}); {_FIX}"
        ) from None


def load(path: Path, *, id_key: bytes) -> tuple[list[StoredKey], Version]:
    """The keys in the file at `path` and the state read; ConfigError when it is wrong."""
    text, state = read(path)
    return parse(text, source=str(path), id_key=id_key), state


def check(path: Path, *, store_keys: bool) -> Checked:
    """The keys file read at start; ConfigError when it is wrong or lists no keys.

    A file listing no keys at start is a mistake (a template, a mount or a secret not filled
    in), not a choice: it would refuse every request. `store_keys`: whether the keys of
    `keys create` would be used without the file, as the message then says.
    """
    text, state = read(path)
    if not parse(text, source=str(path), id_key=b"checked at start"):
        instead = (
            ", or leave out --api-keys-file (RESEARCH_API_KEYS_FILE) to use only the keys made "
            "by `research-service keys create`"
            if store_keys
            else ""
        )
        raise ConfigError(
            f"the API keys file {path} lists no keys; add NAME:SECRET[:admin] lines{instead}"
        )
    return Checked(path, text, state)
