"""The MCP server over Streamable HTTP: the SDK's app, told who calls, served by uvicorn."""

from __future__ import annotations

from typing import Final

import uvicorn
from mcp.server.mcpserver import MCPServer

from research_service.mcp.callers import knowing_callers
from research_service.mcp.event_store import RunEventStore

#: How long a client whose stream dropped waits before it resumes (the SSE `retry:`).
RETRY_MS: Final = 500


async def serve_http(server: MCPServer, events: RunEventStore, listen: tuple[str, int]) -> None:
    """Serve `server` at http://HOST:PORT/mcp until cancelled, `events` its event store.

    What `MCPServer.run_streamable_http_async` does, with each request's caller noted for the
    event store (`callers.py`).
    """
    host, port = listen
    app = server.streamable_http_app(event_store=events, retry_interval=RETRY_MS, host=host)
    config = uvicorn.Config(
        knowing_callers(app, session_ended=events.session_ended),
        host=host,
        port=port,
        log_level=server.settings.log_level.lower(),
    )
    await uvicorn.Server(config).serve()
