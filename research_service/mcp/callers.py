"""Who is calling over Streamable HTTP: each request's MCP session and bearer key.

The SDK's event store is shared by every session and is told neither (`store_event` gets
only the JSON-RPC request id), so two sessions' calls with the same id would share a stream,
and anyone who named that stream in a `Last-Event-ID` would be sent its messages. An ASGI
wrapper around the SDK's app notes each request's caller in a context variable:

- on a request of a session (it carries `Mcp-Session-Id`), the session and the key it sent;
- on the request that opens a session, the key, and the session id once the response names
  it. The session's own tasks (its message router, its tool calls) are started while that
  request is served, so they see the same caller, session id included.

A session that ends by `DELETE` is reported, so that what was kept for it can go. Only the key
that opened a session may end it: a `DELETE` with another key (or none) is answered as the SDK
answers an unknown session, 404.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Final

SESSION_HEADER: Final = b"mcp-session-id"
#: Sessions whose opening key is kept, for `DELETE`; past it the oldest is forgotten (and
#: may then be ended with any key, as before this was kept).
MAX_KEPT_SESSIONS: Final = 10_000
_NOT_FOUND: Final = (
    b'{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Session not found"}}'
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass
class Caller:
    """One request's MCP session (None until a new session's id is known) and bearer key."""

    session: str | None
    key: str | None


#: The caller of the request being served (None outside a request, as over stdio).
CALLER: ContextVar[Caller | None] = ContextVar("mcp_caller", default=None)


def bearer_key(authorization: str) -> str | None:
    """The key of an `Authorization: Bearer <key>` value; None for anything else."""
    scheme, _, key = authorization.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        return None
    # An HTTP header reaches Starlette as Latin-1; a key is sent on as the UTF-8 it was.
    try:
        return key.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return key


def current_session() -> str | None:
    """The MCP session of the request (or session task) running now."""
    caller = CALLER.get()
    return None if caller is None else caller.session


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def knowing_callers(app: Asgi, *, session_ended: Callable[[str], None]) -> Asgi:
    """`app` with each HTTP request's caller in `CALLER`; `session_ended(id)` after a DELETE."""
    opened_by: dict[str, str | None] = {}  # session id: the key that opened it

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        session = _header(scope, SESSION_HEADER)
        caller = Caller(session, bearer_key(_header(scope, b"authorization") or ""))
        deleting = scope["method"] == "DELETE"
        if deleting and session in opened_by and opened_by[session] != caller.key:
            await _not_found(send)  # another caller's session: not one this caller has
            return
        ended = False

        async def noting(message: Message) -> None:
            nonlocal ended
            if message["type"] == "http.response.start":
                status = int(message["status"])
                if caller.session is None and status < 300:
                    caller.session = _header(message, SESSION_HEADER)
                    if caller.session is not None:
                        opened_by[caller.session] = caller.key
                        if len(opened_by) > MAX_KEPT_SESSIONS:
                            del opened_by[next(iter(opened_by))]
                ended = deleting and status < 300
            await send(message)

        token = CALLER.set(caller)
        try:
            await app(scope, receive, noting)
        finally:
            CALLER.reset(token)
            if ended and session is not None:
                opened_by.pop(session, None)
                session_ended(session)

    return wrapped


async def _not_found(send: Send) -> None:
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 404, "headers": headers})
    await send({"type": "http.response.body", "body": _NOT_FOUND})
