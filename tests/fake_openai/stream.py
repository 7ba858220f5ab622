"""Writing one scripted reply: as SSE chunks, or as a single `chat.completion` body."""

from __future__ import annotations

import asyncio
import json
import time

from aiohttp import web

from tests.fake_openai import wire
from tests.fake_openai.faults import Cut, ErrorEvent, Malformed, Stall, close_connection
from tests.fake_openai.records import RecordedRequest
from tests.fake_openai.script import CONTENT, Reply, Usage


class _ClientGone(Exception):
    """A write failed because the client had closed the connection."""


class _Sender:
    """Writes frames to a prepared response, counting the deltas that made it out."""

    def __init__(self, response: web.StreamResponse, record: RecordedRequest) -> None:
        self.response = response
        self.record = record

    async def raw(self, data: bytes) -> None:
        try:
            await self.response.write(data)
        except ConnectionError as exc:
            raise _ClientGone from exc

    async def delta(self, payload: wire.JSON, field: str, piece: str) -> None:
        await self.raw(wire.sse(payload))
        self.record.sent_at.append(time.monotonic())
        self.record.tokens_sent += 1
        if field == CONTENT:
            self.record.text_sent += piece


async def stream_reply(
    request: web.Request, record: RecordedRequest, reply: Reply, *, id: str
) -> web.StreamResponse:
    """Stream the reply as `chat.completion.chunk` frames, firing its faults on the way."""
    response = web.StreamResponse(
        headers={"Content-Type": wire.SSE_CONTENT_TYPE, "Cache-Control": "no-cache"}
    )
    response.headers["x-request-id"] = id.replace("chatcmpl", "req")
    record.status = response.status
    send = _Sender(response, record)
    try:
        await response.prepare(request)
        if await _stream_body(request, record, reply, send, id=id):
            await send.raw(wire.DONE_FRAME)
            await response.write_eof()
            record.completed.set()
    except (_ClientGone, ConnectionError):
        if not record.closed_by_server:
            record.disconnected.set()
    return response


async def _stream_body(
    request: web.Request, record: RecordedRequest, reply: Reply, send: _Sender, *, id: str
) -> bool:
    """Write the chunks up to `[DONE]`; False when a Cut closed the connection instead."""
    model = reply.model or record.model or ""
    with_usage = record.include_usage
    deltas, finish_reason = _limited(reply, record)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for position in range(len(deltas) + 1):
        for fault in reply.faults_at(position):
            if isinstance(fault, Stall):
                await fault.wait()
            elif isinstance(fault, Malformed):
                await send.raw(b"data: " + fault.data.encode() + b"\n\n")
            elif isinstance(fault, ErrorEvent):
                error = {"message": fault.message, "type": fault.type, "code": fault.code}
                await send.raw(wire.sse({"error": error}))
                return True
            else:
                record.closed_by_server = True
                close_connection(request)
                return False
        if position == 0:
            role = {"role": "assistant", "content": "", "refusal": None}
            await send.raw(
                wire.sse(wire.chunk(id=id, model=model, delta=role, with_usage=with_usage))
            )
        if position == len(deltas):
            break
        if reply.interval > 0:
            # An absolute schedule, so pacing does not drift with write time.
            await asyncio.sleep(max(0.0, start + position * reply.interval - loop.time()))
        field, piece = deltas[position]
        payload = wire.chunk(id=id, model=model, delta={field: piece}, with_usage=with_usage)
        await send.delta(payload, field, piece)
    final = wire.chunk(
        id=id, model=model, delta={}, finish_reason=finish_reason, with_usage=with_usage
    )
    await send.raw(wire.sse(final))
    usage = usage_for(reply, record, deltas)
    if with_usage and usage is not None:
        await send.raw(wire.sse(wire.usage_chunk(id=id, model=model, usage=usage)))
    return True


async def complete_reply(
    request: web.Request, record: RecordedRequest, reply: Reply, *, id: str
) -> web.StreamResponse:
    """Answer with one `chat.completion` body (or the Cut/Malformed version of it)."""
    deltas, finish_reason = _limited(reply, record)
    reasoning = [piece for field, piece in deltas if field != CONTENT]
    body = wire.completion(
        id=id,
        model=reply.model or record.model or "",
        content="".join(piece for field, piece in deltas if field == CONTENT),
        reasoning="".join(reasoning) if reasoning else None,
        reasoning_field=reply.reasoning_field,
        finish_reason=finish_reason,
        usage=usage_for(reply, record, deltas),
    )
    headers = {"x-request-id": id.replace("chatcmpl", "req")}
    malformed = reply.fault(Malformed)
    data = malformed.data.encode() if malformed else json.dumps(body).encode()
    record.status = 200
    if reply.fault(Cut) is None:
        record.completed.set()
        return web.Response(body=data, content_type="application/json", headers=headers)
    # Promise the whole body, send half of it, then hang up.
    response = web.StreamResponse(headers=headers)
    response.content_type = "application/json"
    response.content_length = len(data)
    try:
        await response.prepare(request)
        await response.write(data[: len(data) // 2])
    except ConnectionError:
        record.disconnected.set()
        return response
    record.closed_by_server = True
    close_connection(request)
    return response


def usage_for(
    reply: Reply, record: RecordedRequest, deltas: list[tuple[str, str]]
) -> wire.JSON | None:
    """The usage to report: the scripted numbers, a word count, or none."""
    if reply.usage is None:
        return None
    if isinstance(reply.usage, Usage):
        return wire.usage_body(reply.usage.prompt_tokens, reply.usage.completion_tokens)
    reasoning = sum(1 for field, _ in deltas if field != CONTENT)
    return wire.usage_body(len(record.text.split()), len(deltas), reasoning=reasoning)


def _limited(reply: Reply, record: RecordedRequest) -> tuple[list[tuple[str, str]], str]:
    """The deltas to send under the request's max tokens, and the finish reason."""
    deltas = reply.deltas()
    limit = record.max_tokens
    if limit is not None and len(deltas) > limit:
        return deltas[:limit], "length"
    return deltas, reply.finish_reason
