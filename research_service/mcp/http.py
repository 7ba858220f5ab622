"""The MCP server over Streamable HTTP: the SDK's app, told who calls, served by uvicorn."""

from __future__ import annotations

import socket
from typing import Final

import uvicorn
from mcp.server.mcpserver import MCPServer

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
        event_store=events, retry_interval=RETRY_MS, host=host, session_idle_timeout=STREAM_IDLE_S
    )
    config = uvicorn.Config(
        knowing_callers(app, session_ended=events.session_ended),
        host=host,
        port=port,
        log_level=server.settings.log_level.lower(),
    )
    await uvicorn.Server(config).serve(sockets=[sock])
