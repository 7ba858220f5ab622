"""The aiohttp app: routes for chat completions and models, request recording, fault dispatch."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from tests.fake_openai import wire
from tests.fake_openai.faults import (
    STREAM_ONLY,
    HTTPError,
    Reset,
    SlowResponse,
    reset_connection,
)
from tests.fake_openai.records import CHAT_PATH, RecordedRequest
from tests.fake_openai.script import Script
from tests.fake_openai.stream import complete_reply, stream_reply

DEFAULT_MODEL = "fake-model"
JSON_SCHEMA_UNSUPPORTED = "response_format type 'json_schema' is not supported by this server"

Handler = Callable[[web.Request, "FakeState", RecordedRequest], Awaitable[web.StreamResponse]]


@dataclass(eq=False)
class FakeState:
    """Everything the app reads and records: the script, switches, and the requests seen."""

    script: Script = field(default_factory=Script)
    models: list[str] = field(default_factory=lambda: [DEFAULT_MODEL])
    api_key: str | None = None  # when set, other bearer tokens get a 401
    reject_json_schema: bool = False  # answer json_schema requests with a 400, like older servers
    requests: list[RecordedRequest] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # unscripted requests, misused faults
    closing: bool = False
    active: set[asyncio.Task[Any]] = field(default_factory=set)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def record(self, request: web.Request) -> RecordedRequest:
        """Record a request as it arrives and wake anyone waiting for it."""
        raw = await request.read()
        headers = CIMultiDict(request.headers)
        record = RecordedRequest.parse(request.method, request.path, headers, raw, time.monotonic())
        async with self.arrived:
            self.requests.append(record)
            record.number = len(self.requests)
            self.arrived.notify_all()
        return record


STATE = web.AppKey("fake_openai_state", FakeState)


def create_app(state: FakeState) -> web.Application:
    """The fake server's app, reading and recording through `state`."""
    app = web.Application()
    app[STATE] = state
    app.router.add_post(CHAT_PATH, _observed(chat_completions))
    app.router.add_get("/v1/models", _observed(list_models))
    app.router.add_get("/v1/models/{name}", _observed(get_model))
    app.router.add_route("*", "/{tail:.*}", _observed(not_found))
    return app


def _observed(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Record the request, check its key, and notice a client that hangs up mid-response."""

    async def observed(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE]
        record = await state.record(request)
        task = asyncio.current_task()
        if task is not None:
            state.active.add(task)
        try:
            if state.api_key is not None and record.authorization != f"Bearer {state.api_key}":
                message = "Incorrect API key provided. You can find your API key in the fake."
                return error_response(record, 401, message, code="invalid_api_key")
            return await handler(request, state, record)
        except asyncio.CancelledError:
            # handler_cancellation: the client went away while we were waiting or writing.
            if not record.closed_by_server and not state.closing:
                record.disconnected.set()
            raise
        finally:
            if task is not None:
                state.active.discard(task)

    return observed


async def chat_completions(
    request: web.Request, state: FakeState, record: RecordedRequest
) -> web.StreamResponse:
    """`POST /v1/chat/completions`: the next scripted reply, streamed or whole, faults applied."""
    problem = wire.problem(record.body)
    if problem is not None:
        return error_response(record, 400, problem)
    if state.reject_json_schema and record.response_format_type == "json_schema":
        return error_response(record, 400, JSON_SCHEMA_UNSUPPORTED, param="response_format")
    reply = state.script.take(record)
    if reply is None:
        return _trouble(state, record, f"no scripted reply for {record.describe()}")
    record.reply = reply
    reply.served.append(record)
    misused = [f for f in reply.faults if isinstance(f, STREAM_ONLY)]
    if misused and not record.stream:
        return _trouble(
            state, record, f"{misused[0]!r} needs a streaming request, got {record.describe()}"
        )
    slow = reply.fault(SlowResponse)
    if slow is not None:
        await slow.wait()
    if reply.fault(Reset) is not None:
        record.closed_by_server = True
        reset_connection(request)
        return web.Response()
    error = reply.fault(HTTPError)
    if error is not None:
        message = error.message or f"The fake was scripted to fail with {error.status}."
        return error_response(
            record, error.status, message, code=error.code, headers=error.response_headers()
        )
    completion_id = f"chatcmpl-fake{record.number}"
    if record.stream:
        return await stream_reply(request, record, reply, id=completion_id)
    return await complete_reply(request, record, reply, id=completion_id)


async def list_models(
    request: web.Request, state: FakeState, record: RecordedRequest
) -> web.StreamResponse:
    """`GET /v1/models`: the configured model names."""
    return _json(record, 200, wire.models_list(state.models))


async def get_model(
    request: web.Request, state: FakeState, record: RecordedRequest
) -> web.StreamResponse:
    """`GET /v1/models/{name}`: one model, or a 404 like OpenAI's."""
    name = request.match_info["name"]
    if name not in state.models:
        message = f"The model '{name}' does not exist or you do not have access to it."
        return error_response(record, 404, message, code="model_not_found")
    return _json(record, 200, wire.model_body(name))


async def not_found(
    request: web.Request, state: FakeState, record: RecordedRequest
) -> web.StreamResponse:
    """Any other route: OpenAI's 404 body, recorded so a test can see the wrong path."""
    return error_response(record, 404, f"Invalid URL ({request.method} {request.path})")


def error_response(
    record: RecordedRequest,
    status: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """An OpenAI-shaped error response, recorded as the request's outcome."""
    body = wire.error_body(status, message, code=code, param=param)
    return _json(record, status, body, headers=headers)


def _trouble(state: FakeState, record: RecordedRequest, message: str) -> web.Response:
    """A 500 naming the request, noted in `problems` so a strict fake fails the test."""
    state.problems.append(message)
    return error_response(record, 500, f"fake_openai: {message}", code="fake_openai_unscripted")


def _json(
    record: RecordedRequest, status: int, body: wire.JSON, *, headers: dict[str, str] | None = None
) -> web.Response:
    record.status = status
    record.completed.set()
    return web.json_response(body, status=status, headers=headers)
