"""The JSON and streaming endpoints of the `/v1` API."""

from __future__ import annotations

import asyncio
from typing import Any, Final

from aiohttp import web

from research_service.errors import (
    InvalidEventId,
    NotFound,
    ReviewConflict,
    unknown_run,
)
from research_service.events import dumps, is_run_id
from research_service.pipeline.review import ReviewRefused
from research_service.recording import header_line, recording_chunks
from research_service.recordings import RunNotFinished
from research_service.runs.listing import awaiting_page
from research_service.runs.models import RunRecord
from research_service.settings_fields import quoted
from research_service.web import validation
from research_service.web.access import ACCESS, AUTH, TOKEN_PARAM
from research_service.web.expect import close_if_body_held_back, expect_handler
from research_service.web.health import healthz, readyz
from research_service.web.keys import MANAGER
from research_service.web.metrics import setup_metrics
from research_service.web.openapi import setup_openapi
from research_service.web.panel import setup_panel
from research_service.web.session import setup_session
from research_service.web.stream import (
    LAST_EVENT_ID_HEADER,
    LAST_EVENT_ID_PARAM,
    requested_position,
    resume_position,
    split_event_id,
    stream,
)
from research_service.web.webhooks import add_webhooks, check_webhook, webhook_states

#: A recording download reads this many events at a time and writes chunks of this size:
#: bounded memory and loop time per download, however large the run (or its done).
RECORDING_PAGE_EVENTS: Final = 500
RECORDING_CHUNK_BYTES: Final = 32 * 1024


def _json(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=dumps(data).encode(), content_type="application/json", headers=headers
    )


def _run_id(request: web.Request) -> str:
    run_id = request.match_info["run_id"]
    if not is_run_id(run_id):
        raise NotFound(f"no run with id {run_id!r}; run ids are 16 hex characters")
    return run_id


async def _visible_run(request: web.Request) -> RunRecord:
    """The run the URL names, if this request may see it: another owner's is "not found"."""
    run_id = _run_id(request)
    record = await request.app[MANAGER].log.get_run(run_id)
    if record is None or not request[ACCESS].sees(record):
        raise unknown_run(run_id)
    return record


def _events_url(request: web.Request, run_id: str) -> str:
    """The run's stream URL; with auth on, with a stream token for a browser's EventSource.

    A key gets a fresh token; a request made with a token gets that token back (a token
    never renews itself); a session gets none (its cookie opens the stream).
    """
    url = f"/v1/runs/{run_id}/events"
    auth = request.app.get(AUTH)
    if auth is None:
        return url
    access = request[ACCESS]
    token = (
        request.query.get(TOKEN_PARAM)
        if access.via == "token"
        else auth.stream_token(access, run_id)
    )
    return url if token is None else f"{url}?{TOKEN_PARAM}={token}"


def _created(request: web.Request, record: RunRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "status": "queued",
        "question": record.question,
        "created_at": record.created_iso,
        "events_url": _events_url(request, record.id),
    }


async def create_run(request: web.Request) -> web.Response:
    """`POST /v1/runs`: start a run in the background."""
    validation.known_params(request.query)
    question, options, webhook = await validation.create_body(request)
    await check_webhook(request, webhook)
    record = await request.app[MANAGER].create(
        question,
        options,
        owner=request[ACCESS].owner,
        then=lambda record: add_webhooks(request, record, webhook),
    )
    body = _created(request, record)
    body["options"] = options.to_dict()
    if webhook is not None:
        body["options"]["webhook"] = {"url": webhook}
    return _json(body, status=201, headers={"Location": f"/v1/runs/{record.id}"})


async def get_run(request: web.Request) -> web.Response:
    """`GET /v1/runs/{id}`: the run's snapshot."""
    validation.known_params(request.query, TOKEN_PARAM)
    record = await _visible_run(request)
    snapshot = await request.app[MANAGER].snapshot(record)
    snapshot["events_url"] = _events_url(request, record.id)
    if deliveries := await webhook_states(request, record):
        snapshot["webhooks"] = deliveries
    return _json(snapshot)


async def list_runs(request: web.Request) -> web.Response:
    """`GET /v1/runs`: run summaries, newest first, with a cursor to the next page."""
    limit, before, awaiting = validation.list_params(request.query)
    manager = request.app[MANAGER]
    owner = request[ACCESS].listed_owner
    if awaiting is not None:
        entries, reached = await awaiting_page(
            manager, awaiting=awaiting, limit=limit, before=before, owner=owner
        )
        cursor = None if reached is None else validation.encode_cursor(reached)
        return _json({"runs": entries, "next": cursor})
    # One extra record tells whether another page exists without a second query.
    records = await manager.log.list_runs(limit=limit + 1, before=before, owner=owner)
    page = records[:limit]
    next_cursor = validation.encode_cursor(page[-1].sort_key) if len(records) > limit else None
    return _json({"runs": await manager.summaries(page), "next": next_cursor})


async def cancel_run(request: web.Request) -> web.Response:
    """`POST /v1/runs/{id}/cancel`: stop the run; it ends with `done` status `cancelled`."""
    validation.known_params(request.query)
    # JSON or nothing: a cross-site HTML form can only post text/plain or form data.
    validation.no_fields(await validation.json_object(request, required=False), what="cancel")
    manager = request.app[MANAGER]
    record = await _visible_run(request)
    cancelled = await manager.cancel(record.id)
    snapshot = await manager.snapshot(record)
    return _json(
        {"id": record.id, "cancelling": cancelled, "status": snapshot["status"]}, status=202
    )


async def decide_plan(request: web.Request) -> web.Response:
    """`POST /v1/runs/{id}/plan`: approve, edit or re-plan a plan that waits for review."""
    validation.known_params(request.query)
    body = await validation.json_object(request, required=False)
    decision, meant_for = validation.plan_decision(body)
    manager = request.app[MANAGER]
    record = await _visible_run(request)
    try:
        round_number = await manager.decide_plan(record.id, decision, round_number=meant_for)
    except ReviewRefused as exc:
        raise ReviewConflict(await _why_not(request, record, str(exc))) from None
    snapshot = await manager.snapshot(record)
    body = {
        "id": record.id,
        "status": snapshot["status"],
        "decision": decision.kind,
        "round": round_number,
        "events_url": _events_url(request, record.id),
    }
    return _json(body, status=202)


async def _why_not(request: web.Request, record: RunRecord, reason: str) -> str:
    """Why a run takes no decision on its plan now, most telling first."""
    if not record.options.review_plan:
        return f"run {record.id} did not ask for a review of its plan (options.review_plan)"
    status = (await request.app[MANAGER].snapshot(record))["status"]
    if status in ("completed", "failed", "cancelled"):
        return f"run {record.id} has ended ({status}); it takes no decision"
    return f"{reason}; GET /v1/runs/{record.id} says what the run awaits"


async def run_events(request: web.Request) -> web.StreamResponse:
    """`GET /v1/runs/{id}/events`: the run's event stream, from the start or a Last-Event-ID."""
    validation.known_params(request.query, LAST_EVENT_ID_PARAM, TOKEN_PARAM)
    manager = request.app[MANAGER]
    record = await _visible_run(request)
    after, ended = await resume_position(
        requested_position(request),
        run_id=record.id,
        log=manager.log,
        elsewhere=manager.executes_elsewhere(record.id),
    )
    return await stream(request, run_id=record.id, after=after, ended=ended)


async def research(request: web.Request) -> web.StreamResponse:
    """`GET /v1/research?q=...`: create a run and stream it; a reconnect resumes the same run."""
    question, options = validation.research_query(request.query)
    manager = request.app[MANAGER]
    raw = requested_position(request)
    access = request[ACCESS]
    if raw is None:
        record = await manager.create(
            question,
            options,
            owner=access.owner,
            then=lambda record: add_webhooks(request, record, None),
        )
        return await stream(request, run_id=record.id, after=0, ended=False)
    run_id, _ = split_event_id(raw)
    resumed = await manager.log.get_run(run_id)
    # Another owner's run is answered exactly like a run that does not exist.
    if resumed is None or not access.sees(resumed) or resumed.question != question:
        raise InvalidEventId(
            f"Last-Event-ID {quoted(raw)} does not name a run of this question; drop the header "
            "to start a new run",
            field=LAST_EVENT_ID_HEADER,
        )
    after, ended = await resume_position(
        raw, run_id=resumed.id, log=manager.log, elsewhere=manager.executes_elsewhere(resumed.id)
    )
    return await stream(request, run_id=resumed.id, after=after, ended=ended)


async def get_recording(request: web.Request) -> web.StreamResponse:
    """`GET /v1/runs/{id}/recording`: the finished run as a recording (docs/recordings.md).

    Streamed in chunks, each line spliced from the stored wire bytes: a large run is never
    held twice in memory nor encoded in one go.
    """
    validation.known_params(request.query)
    manager = request.app[MANAGER]
    record = await _visible_run(request)
    tail = (await manager.log.tails([record.id])).get(record.id)
    if tail is None or tail.end is None:
        raise RunNotFinished.of(record.id)
    disposition = f'attachment; filename="research-{record.id}.jsonl"'
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/x-ndjson; charset=utf-8",
            "Content-Disposition": disposition,
        }
    )
    await response.prepare(request)
    await response.write(header_line(record))
    after = 0
    while after < tail.event_count:
        events = await manager.log.read(record.id, after=after, limit=RECORDING_PAGE_EVENTS)
        if not events:
            break
        for chunk in recording_chunks(events, size=RECORDING_CHUNK_BYTES):
            await response.write(chunk)
            # A fast socket takes a chunk without waiting: give the loop a turn each time.
            await asyncio.sleep(0)
        after = events[-1].seq
    await response.write_eof()
    return response


def setup_routes(app: web.Application) -> None:
    """Register every route of the API and the web panel, each with the `Expect` handler."""
    runs = app.router.add_resource("/v1/runs", name="runs")
    runs.add_route("POST", create_run, expect_handler=expect_handler)
    runs.add_route("GET", list_runs, expect_handler=expect_handler)
    app.router.add_get(
        "/v1/runs/{run_id}", get_run, allow_head=False, name="run", expect_handler=expect_handler
    )
    app.router.add_get(
        "/v1/runs/{run_id}/events",
        run_events,
        allow_head=False,
        name="run-events",
        expect_handler=expect_handler,
    )
    app.router.add_post(
        "/v1/runs/{run_id}/cancel", cancel_run, name="run-cancel", expect_handler=expect_handler
    )
    app.router.add_post(
        "/v1/runs/{run_id}/plan", decide_plan, name="run-plan", expect_handler=expect_handler
    )
    app.router.add_get(
        "/v1/runs/{run_id}/recording",
        get_recording,
        allow_head=False,
        name="run-recording",
        expect_handler=expect_handler,
    )
    app.router.add_get(
        "/v1/research", research, allow_head=False, name="research", expect_handler=expect_handler
    )
    setup_session(app)
    setup_metrics(app)
    app.router.add_get("/healthz", healthz, expect_handler=expect_handler)
    app.router.add_get("/readyz", readyz, expect_handler=expect_handler)
    setup_panel(app)
    setup_openapi(app)
    app.on_response_prepare.append(close_if_body_held_back)
