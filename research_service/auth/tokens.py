"""Signed, expiring values: a run's stream token and a panel session (HMAC-SHA256)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Final

#: Whatever is longer than this is not a value we signed.
MAX_SIGNED_CHARS: Final = 256
# Fields are ids and whole seconds: letters, digits and dashes only, joined by dots.
_FIELD: Final = re.compile(r"^[A-Za-z0-9-]{1,64}\Z")
_SIGNATURE_CHARS: Final = 43

STREAM: Final = "stream"
SESSION: Final = "session"
#: Random bytes in a session's id: signing out ends that one session, nobody can guess another.
SESSION_ID_BYTES: Final = 16


class BadSignature(ValueError):
    """The value was not signed by us, was changed, or is not for this use."""


class Expired(ValueError):
    """The value was signed by us but its time is up."""


@dataclass(frozen=True, slots=True)
class StreamGrant:
    """What a stream token allows: reading run `run_id` as key `key_id`."""

    run_id: str
    key_id: str
    expires: int


@dataclass(frozen=True, slots=True)
class SessionGrant:
    """What a session cookie stands for: key `key_id`, as session `session_id`, until `expires`."""

    key_id: str
    session_id: str
    expires: int


class Signer:
    """Signs and checks values with the service's secret, each bound to its purpose."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def stream_token(self, *, run_id: str, key_id: str, expires: int) -> str:
        """A token that opens run `run_id`'s stream and snapshot until `expires`."""
        return self._sign(STREAM, (run_id, key_id, str(expires)))

    def session(self, *, key_id: str, expires: int, session_id: str | None = None) -> str:
        """A session cookie's value for key `key_id` until `expires` (a new session by default)."""
        if session_id is None:
            session_id = new_session_id()
        return self._sign(SESSION, (key_id, session_id, str(expires)))

    def check_stream_token(self, token: str, *, now: float) -> StreamGrant:
        """The grant of a stream token; BadSignature or Expired when it grants nothing."""
        run_id, key_id, expires = self._open(STREAM, token, fields=3)
        grant = StreamGrant(run_id, key_id, _seconds(expires))
        if grant.expires <= now:
            raise Expired("the stream token has expired")
        return grant

    def check_session(self, value: str, *, now: float) -> SessionGrant:
        """The grant of a session cookie; BadSignature or Expired when it grants nothing.

        A cookie of the releases before session ids (`key.expires.signature`) is malformed.
        """
        key_id, session_id, expires = self._open(SESSION, value, fields=3)
        grant = SessionGrant(key_id, session_id, _seconds(expires))
        if grant.expires <= now:
            raise Expired("the session has expired")
        return grant

    def _sign(self, purpose: str, fields: tuple[str, ...]) -> str:
        payload = ".".join(fields)
        return f"{payload}.{self._mac(purpose, payload)}"

    def _open(self, purpose: str, value: str, *, fields: int) -> list[str]:
        if len(value) > MAX_SIGNED_CHARS:
            raise BadSignature("the value is too long")
        payload, _, signature = value.rpartition(".")
        parts = payload.split(".")
        if len(parts) != fields or not all(_FIELD.match(part) for part in parts):
            raise BadSignature("the value is malformed")
        if not hmac.compare_digest(signature.encode(), self._mac(purpose, payload).encode()):
            raise BadSignature("the signature does not match")
        return parts

    def _mac(self, purpose: str, payload: str) -> str:
        # The purpose is signed too: a session never passes as a stream token or back.
        message = f"{purpose}\n{payload}".encode()
        mac = hmac.new(self._secret, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")[:_SIGNATURE_CHARS]


def new_session_id() -> str:
    """A fresh, random session id (hex: a signed field takes letters, digits and dashes)."""
    return secrets.token_hex(SESSION_ID_BYTES)


def _seconds(raw: str) -> int:
    if not raw.isdigit():
        raise BadSignature("the expiry is malformed")
    return int(raw)
