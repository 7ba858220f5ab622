"""The MCP server's tools, resources and prompt, each a call on the service's public HTTP API.

It is a client of the service (`ServiceClient`, `Follower`), so it works the same against
`serve`, `replay`, a cluster, or the in-process service `research-service mcp` starts alone.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Annotated, Any, Final

import aiohttp
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from mcp_types import CallToolResult, TextContent
from pydantic import Field

from research_service import __version__
from research_service.client.api import ServiceClient
from research_service.client.follow import Follower
from research_service.errors import ClientError, RunRefused
from research_service.events import is_run_id
from research_service.mcp.answers import Research, from_done, from_snapshot, markdown
from research_service.mcp.callers import bearer_key
from research_service.mcp.event_store import RunEventStore
from research_service.mcp.progress import progress_message
from research_service.mcp.recent import RecentRunsServer

log = logging.getLogger(__name__)

INSTRUCTIONS: Final = (
    "Deep research over the service's search and model: `research` answers a question with "
    "numbered citations and reports each phase as progress; `start_research` and "
    "`get_research` do the same in steps for clients with short tool timeouts. Ask one "
    "focused question per call; read the sources it cites before relying on them."
)
RUN_ID: Final = r"^[0-9a-f]{16}$"

# Strict: "3" or true is refused, as the service's own API refuses it.
Breadth = Annotated[
    int | None, Field(ge=1, le=8, strict=True, description="search queries to plan (1-8)")
]
MaxSources = Annotated[
    int | None, Field(ge=1, le=20, strict=True, description="sources kept (1-20)")
]
Depth = Annotated[int | None, Field(ge=1, le=3, strict=True, description="search rounds (1-3)")]
Question = Annotated[str, Field(min_length=1, max_length=2000, description="the question")]
RunId = Annotated[str, Field(pattern=RUN_ID, description="a run id (16 hex characters)")]
#: A tool's answer: `Research` as structured content, and as Markdown for a reader.
Result = Annotated[CallToolResult, Research]


def _result(research: Research) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=markdown(research))],
        structured_content=research.model_dump(mode="json"),
    )


def _options(breadth: int | None, max_sources: int | None, depth: int | None) -> dict[str, Any]:
    given = {"breadth": breadth, "max_sources": max_sources, "depth": depth}
    return {name: value for name, value in given.items() if value is not None}


def _callers_key(ctx: Context | None) -> str | None:
    """The bearer key the caller sent (Streamable HTTP); None when it sent none."""
    headers = ctx.headers if ctx is not None else None
    return bearer_key((headers or {}).get("authorization", ""))


def _as_caller(api: ServiceClient, ctx: Context | None) -> ServiceClient:
    """`api` with the caller's own key when the caller sent one (Streamable HTTP).

    The key is not checked here: it goes to the service with every request, and the
    service's rules decide (which runs the key sees, whether it may research at all).
    """
    key = _callers_key(ctx)
    if key is None:
        return api
    return api.with_key(key)


async def call(service: ServiceClient, what: str, request: Any) -> Any:
    """Await `request` to the service; its failure as a ToolError saying what failed."""
    try:
        return await request
    except ClientError as exc:
        raise ToolError(f"{what}: {exc}") from None
    except aiohttp.ClientError as exc:
        raise ToolError(f"{what}: the service at {service.base_url} failed: {exc}") from None


async def create(service: ServiceClient, question: str, options: dict[str, Any]) -> Any:
    return await call(service, "starting the run", service.create(question, options))


async def snapshot_of(service: ServiceClient, run_id: str) -> dict[str, Any]:
    found: dict[str, Any] = await call(service, f"reading run {run_id}", service.snapshot(run_id))
    return found


def result_of(service: ServiceClient, snapshot: dict[str, Any]) -> CallToolResult:
    url = service.url(f"v1/runs/{snapshot['id']}")
    return _result(from_snapshot(snapshot, snapshot_url=url))


def build_server(api: ServiceClient, *, events: RunEventStore | None = None) -> MCPServer:
    """The MCP server whose tools run research on the service `api` talks to.

    `events`: the Streamable HTTP transport's event store, told which run each call follows.
    """
    server: MCPServer = RecentRunsServer(
        api, name="research-service", version=__version__, instructions=INSTRUCTIONS
    )

    @server.tool(structured_output=True)
    async def research(
        question: Question,
        ctx: Context,
        breadth: Breadth = None,
        max_sources: MaxSources = None,
        depth: Depth = None,
    ) -> Result:
        """Research a question and return the cited answer with its sources.

        Each phase (planning, every finished search, writing) is reported as progress.
        Cancelling the call cancels the run.
        """
        service = _as_caller(api, ctx)
        created = await _create_wanted(service, question, _options(breadth, max_sources, depth))
        run_id = str(created["id"])
        if events is not None:
            events.bind(ctx.request_id, run_id, service, _callers_key(ctx))
        snapshot_url = service.url(f"v1/runs/{run_id}")
        events_url = service.url(created["events_url"])
        follower = Follower(service.session, events_url, log.info, api_key=service.api_key)
        steps = 0
        try:
            async for event in follower.events():
                if event.name == "phase":
                    steps += 1
                    if events is not None:
                        events.reporting(ctx.request_id, steps, event.seq)
                    await ctx.report_progress(steps, None, progress_message(event.data))
                elif event.name == "done":
                    return _result(from_done(run_id, event.data, snapshot_url=snapshot_url))
        except asyncio.CancelledError:
            # The client cancelled the call (or went away): the run is not wanted any more.
            await asyncio.shield(_cancel_quietly(service, run_id))
            raise
        except ClientError as exc:
            raise ToolError(f"following run {run_id}: {exc}") from None
        raise ToolError(f"the stream of run {run_id} ended without its done event")

    @server.tool(structured_output=True)
    async def start_research(
        question: Question,
        ctx: Context,
        breadth: Breadth = None,
        max_sources: MaxSources = None,
        depth: Depth = None,
    ) -> Result:
        """Start researching a question and return at once with the run id.

        Poll `get_research` with the id (or read research://runs/{run_id}) for its progress
        and, once it has ended, its cited answer.
        """
        service = _as_caller(api, ctx)
        created = await _create_wanted(service, question, _options(breadth, max_sources, depth))
        run_id = str(created["id"])
        started = Research(
            run_id=run_id,
            status=str(created["status"]),
            snapshot_url=service.url(f"v1/runs/{run_id}"),
            events_url=service.url(created["events_url"]),
        )
        return _result(started)

    @server.tool(structured_output=True)
    async def get_research(run_id: RunId, ctx: Context) -> Result:
        """Where a run stands: its phase and progress, and its cited answer once it ended."""
        service = _as_caller(api, ctx)
        return result_of(service, await snapshot_of(service, run_id))

    @server.tool(structured_output=True)
    async def cancel_research(run_id: RunId, ctx: Context) -> Result:
        """Cancel a run still going; a run that has ended is left as it was."""
        service = _as_caller(api, ctx)
        await call(service, f"cancelling run {run_id}", service.cancel(run_id))
        return result_of(service, await snapshot_of(service, run_id))

    _add_resources(server, api)
    _add_prompt(server)
    return server


def _add_resources(server: MCPServer, api: ServiceClient) -> None:
    """research://runs/{id} (the snapshot) and research://runs/{id}/answer (Markdown)."""

    @server.resource(
        "research://runs/{run_id}",
        name="run",
        mime_type="application/json",
        description="a run's snapshot: status, phase, plan, sources, answer, timings",
    )
    async def run_snapshot(run_id: str, ctx: Context) -> dict[str, Any]:
        return await _readable(_as_caller(api, ctx), run_id)

    @server.resource(
        "research://runs/{run_id}/answer",
        name="answer",
        mime_type="text/markdown",
        description="a run's answer as Markdown, with its numbered sources",
    )
    async def run_answer(run_id: str, ctx: Context) -> str:
        service = _as_caller(api, ctx)
        snapshot = await _readable(service, run_id)
        url = service.url(f"v1/runs/{run_id}")
        return markdown(from_snapshot(snapshot, snapshot_url=url))


async def _readable(service: ServiceClient, run_id: str) -> dict[str, Any]:
    """A run's snapshot for a resource; a failure as the resource error that says what."""
    what = f"reading run {run_id}"
    if not is_run_id(run_id):  # not a path of the service's either (`abc%2Fevents`)
        raise ResourceNotFoundError(f"{what}: a run id is 16 lowercase hex characters")
    try:
        found: dict[str, Any] = await service.snapshot(run_id)
    except RunRefused as exc:
        error = ResourceNotFoundError if exc.status == 404 else ResourceError
        raise error(f"{what}: {exc}") from None
    except ClientError as exc:
        raise ResourceError(f"{what}: {exc}") from None
    except aiohttp.ClientError as exc:
        raise ResourceError(f"{what}: the service at {service.shown_url} failed: {exc}") from None
    return found


def _add_prompt(server: MCPServer) -> None:
    """The `deep_research` prompt: how to use the tools well."""

    @server.prompt(name="deep_research", description="research a question with cited sources")
    def deep_research(question: str) -> str:
        return (
            f"Research this question with the `research` tool: {question}\n\n"
            "Ask it as one focused question (split a broad one into several calls). Answer "
            "from what it returns: keep its numbered citations [n] next to the claims they "
            "support, list the sources (title and URL) at the end, and say plainly when the "
            "sources do not answer part of the question instead of filling the gap."
        )


#: Cancels of runs whose call went while they were being made: kept until done (asyncio
#: holds only weak references to tasks).
_ORPHANS: set[asyncio.Task[None]] = set()


async def _create_wanted(
    service: ServiceClient, question: str, options: dict[str, Any]
) -> dict[str, Any]:
    """Create the run; if the call is cancelled meanwhile, the run is cancelled once made.

    A cancel that came while `POST /v1/runs` was on its way left the run going, with its
    slot, its owner's quota and its model tokens, and nobody to tell its id.
    """
    creating = asyncio.ensure_future(create(service, question, options))
    try:
        return await asyncio.shield(creating)
    except asyncio.CancelledError:
        creating.add_done_callback(functools.partial(_cancel_when_made, service))
        raise


def _cancel_when_made(service: ServiceClient, creating: asyncio.Future[dict[str, Any]]) -> None:
    if creating.cancelled() or creating.exception() is not None:
        return  # no run was made
    cancel = asyncio.ensure_future(_cancel_quietly(service, str(creating.result()["id"])))
    _ORPHANS.add(cancel)
    cancel.add_done_callback(_ORPHANS.discard)


async def _cancel_quietly(api: ServiceClient, run_id: str) -> None:
    try:
        await api.cancel(run_id)
    except (ClientError, aiohttp.ClientError) as exc:
        log.warning("could not cancel run %s after its call was cancelled: %s", run_id, exc)
