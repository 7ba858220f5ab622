"""The MCP server over Streamable HTTP: the SDK's app, told who calls, served by uvicorn."""

from __future__ import annotations

import socket
from typing import Final

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings

from research_service.addresses import cannot_listen
from research_service.mcp.callers import knowing_callers
from research_service.mcp.event_store import STREAM_IDLE_S, RunEventStore

#: How long a client whose stream dropped waits before it resumes (the SSE `retry:`).
RETRY_MS: Final = 500


def listening(host: str, port: int) -> socket.socket:
    """A socket listening on HOST:PORT (0: a port the kernel picks); ConfigError when taken.

    Bound before the server starts, so the URL it says is the real one and a taken port is a
    clear error, as for `serve`'s --port.
    """
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        return socket.create_server(address, family=family)
    except OSError as exc:
        raise cannot_listen(exc, host, port, flag="--http port (:0 picks a free one)") from None


def guarded(host: str) -> TransportSecuritySettings:
    """Host and Origin checks (against DNS rebinding) for the loopback address `host`.

    The SDK turns them on by itself only for 127.0.0.1, localhost and ::1: bound to another
    of 127.0.0.0/8, the endpoint answered any Host and any page's Origin.
    """
    named = f"[{host}]" if ":" in host else host
    loopback = (named, "127.0.0.1", "localhost", "[::1]")
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[f"{name}:*" for name in loopback],
        allowed_origins=[f"http://{name}:*" for name in loopback],
    )


async def serve_http(server: MCPServer, events: RunEventStore, sock: socket.socket) -> None:
    """Serve `server` at http://HOST:PORT/mcp on `sock` until cancelled, `events` its store.

    What `MCPServer.run_streamable_http_async` does, with each request's caller noted for the
    event store (`callers.py`).
    """
    host, port = sock.getsockname()[:2]
    # A session with no request in flight for STREAM_IDLE_S (10 min, where the SDK's default
    # is 30) is ended, DELETE or not, and its ended calls' results are forgotten as long after
    # their last use: an abandoned session is not kept for half an hour (~40 KB each).
    app = server.streamable_http_app(
        event_store=events,
        retry_interval=RETRY_MS,
        host=host,
        session_idle_timeout=STREAM_IDLE_S,
        transport_security=guarded(host),
    )
    config = uvicorn.Config(
        knowing_callers(app, session_ended=events.session_ended),
        host=host,
        port=port,
        log_level=server.settings.log_level.lower(),
    )
    await uvicorn.Server(config).serve(sockets=[sock])
