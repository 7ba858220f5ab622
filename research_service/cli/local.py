"""The in-process service `ask` uses when no --server is given: the real app on a free port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from research_service.app import create_app
from research_service.settings import Settings

LOOPBACK = "127.0.0.1"


@asynccontextmanager
async def local_service(settings: Settings) -> AsyncIterator[str]:
    """Serve the app on 127.0.0.1 on a free port; yield its base URL; stop it on exit.

    The client still talks to it over HTTP and the event stream, exactly as to a remote
    service. Its runs are kept in memory: they end with the command. It serves this machine
    and this command only, so it asks for no key and answers its loopback address whatever
    RESEARCH_AUTH, RESEARCH_API_KEYS_FILE or RESEARCH_ALLOWED_HOSTS say (they are `serve`'s).
    """
    local = settings.with_changes(
        store="memory",
        host=LOOPBACK,
        port=0,
        auth="off",
        api_keys_file=None,
        allowed_hosts="",
        cors_origins="",
    )
    app = create_app(local)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, LOOPBACK, 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()
