"""The SSE wire contract: framing, headers, ids, resume, 204 after done, heartbeats."""

from __future__ import annotations

import asyncio
import gc
import json
import re

import httpx
import pytest

from research_service.events import dumps, encode, retry_field
from research_service.providers.base import SearchHit
from tests.conftest import MakeService, Service
from tests.sse import after_event, listen

EVENT_RE = re.compile(
    rb"id: ([0-9a-f]{16}):(\d+)\nevent: (phase|token|done|error)\ndata: ([^\n]*)\n\n"
)


def test_encode_is_exact_bytes() -> None:
    wire = encode("0123456789abcdef", 7, "token", {"text": 'héllo\nworld "q"'})
    assert wire == (
        b'id: 0123456789abcdef:7\nevent: token\ndata: {"text":"h\xc3\xa9llo\\nworld \\"q\\""}\n\n'
    )
    assert retry_field(3000) == b"retry: 3000\n\n"


async def test_stream_bytes_are_retry_then_contiguous_events(
    service: Service, client: httpx.AsyncClient
) -> None:
    run_id = await service.create(client)
    response = await client.get(service.url(f"/v1/runs/{run_id}/events"))
    body = response.content
    assert body.startswith(b"retry: 3000\n\n")
    rest = body[len(b"retry: 3000\n\n") :]
    frames = EVENT_RE.findall(rest)
    # Every byte after the retry field belongs to exactly one well-formed event.
    assert b"".join(b"id: %s:%s\nevent: %s\ndata: %s\n\n" % frame for frame in frames) == rest
    assert [int(seq) for _, seq, _, _ in frames] == list(range(1, len(frames) + 1))
    assert {rid.decode() for rid, _, _, _ in frames} == {run_id}
    for _, _, _, data in frames:
        assert dumps(json.loads(data)).encode() == data  # compact JSON, one line
    assert frames[-1][2] == b"done"
    stored = await service.manager.log.read(run_id, after=0)
    assert rest == b"".join(event.wire for event in stored)


async def test_stream_headers_and_no_compression(
    service: Service, client: httpx.AsyncClient
) -> None:
    run_id = await service.create(client)
    response = await client.get(
        service.url(f"/v1/runs/{run_id}/events"), headers={"Accept-Encoding": "gzip, br, deflate"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-accel-buffering"] == "no"
    assert "content-encoding" not in response.headers


async def test_full_run_event_sequence(service: Service, client: httpx.AsyncClient) -> None:
    run_id = await service.create(client)
    got = await listen(client, service.url(f"/v1/runs/{run_id}/events"))
    assert got.retry == 3000
    assert got.ended
    assert got.ids == [f"{run_id}:{n}" for n in range(1, len(got.events) + 1)]
    phases = [
        (d["phase"], d["status"])
        for e in got.events
        if e.event == "phase"
        for d in [json.loads(e.data)]
    ]
    assert phases == [
        ("planning", "started"),
        ("planning", "completed"),
        ("searching", "started"),
        ("searching", "progress"),
        ("searching", "progress"),
        ("searching", "completed"),
        ("synthesizing", "started"),
        ("synthesizing", "completed"),
    ]
    assert got.names.count("done") == 1
    assert got.names[-1] == "done"
    _name, done = got.last
    assert done["status"] == "completed"
    assert done["answer"] == got.text() == service.llm.answer
    assert done["error"] is None
    assert set(done["timings_ms"]) == {"planning", "searching", "synthesizing", "total"}
    assert [s["id"] for s in done["sources"]] == [1, 2, 3, 4]
    assert set(done["sources"][0]) == {"id", "title", "url", "snippet"}
    planned = got.data(1)
    assert planned["queries"] == ["alpha", "beta"]
    progress = [json.loads(e.data) for e in got.events if '"progress"' in e.data]
    assert [p["completed"] for p in progress] == [1, 2]
    assert all(p["total"] == 2 and {"query", "sources", "elapsed_ms"} <= set(p) for p in progress)
    assert json.loads(got.events[5].data)["sources"] == 4


async def test_resume_at_every_position_of_a_finished_run(
    service: Service, client: httpx.AsyncClient
) -> None:
    run_id = await service.create(client)
    url = service.url(f"/v1/runs/{run_id}/events")
    full = await listen(client, url)
    for position, event in enumerate(full.events[:-1], start=1):
        resumed = await listen(client, url, last_event_id=event.id)
        assert resumed.ids == full.ids[position:]
        assert [e.data for e in resumed.events] == [e.data for e in full.events[position:]]
    after_done = await client.get(url, headers={"Last-Event-ID": full.events[-1].id})
    assert after_done.status_code == 204
    assert after_done.content == b""


async def test_resume_mid_answer_while_the_run_goes_on(
    service: Service, client: httpx.AsyncClient
) -> None:
    service.llm.pieces = [f"w{n} " for n in range(12)]
    service.llm.hold_after = 5
    run_id = await service.create(client)
    url = service.url(f"/v1/runs/{run_id}/events")
    first = await listen(client, url, stop=after_event("token", 3))
    await service.until_held()
    # The listener dropped after the third token; the run is still holding mid-answer.
    second_task = asyncio.create_task(listen(client, url, last_event_id=first.ids[-1]))
    service.llm.release.set()
    second = await second_task
    ids = first.ids + second.ids
    assert ids == [f"{run_id}:{n}" for n in range(1, len(ids) + 1)]
    assert first.text() + second.text() == service.llm.answer
    assert second.last[1]["answer"] == service.llm.answer


async def test_query_parameter_resumes_like_the_header(
    service: Service, client: httpx.AsyncClient
) -> None:
    run_id = await service.create(client)
    url = service.url(f"/v1/runs/{run_id}/events")
    full = await listen(client, url)
    resumed = await listen(client, f"{url}?last_event_id={full.ids[3]}")
    assert resumed.ids == full.ids[4:]
    gone = await client.get(f"{url}?last_event_id={full.ids[-1]}")
    assert gone.status_code == 204


@pytest.mark.parametrize(
    "bad",
    [
        "garbage",
        "0123456789abcdef",
        "0123456789abcdef:x",
        "0123456789abcdef:-1",
        "ffffffffffffffff:1",
        ":3",
    ],
)
async def test_malformed_or_foreign_last_event_id_is_400(
    service: Service, client: httpx.AsyncClient, bad: str
) -> None:
    run_id = await service.create(client)
    response = await client.get(
        service.url(f"/v1/runs/{run_id}/events"), headers={"Last-Event-ID": bad}
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 400
    assert problem["field"] == "Last-Event-ID"
    assert "Last-Event-ID" in problem["detail"]


async def test_last_event_id_never_issued_is_400(
    service: Service, client: httpx.AsyncClient
) -> None:
    run_id = await service.create(client)
    await service.wait_done(run_id)
    response = await client.get(
        service.url(f"/v1/runs/{run_id}/events"), headers={"Last-Event-ID": f"{run_id}:999"}
    )
    assert response.status_code == 400
    assert "never issued" in response.json()["detail"]


@pytest.mark.parametrize("path", ["/v1/runs/{run_id}/events", "/v1/research?q=anything"])
async def test_a_long_last_event_id_is_quoted_short(
    service: Service, client: httpx.AsyncClient, path: str
) -> None:
    run_id = await service.create(client)
    bad = "a" * 5000
    response = await client.get(
        service.url(path.format(run_id=run_id)), headers={"Last-Event-ID": bad}
    )
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert "(5000 characters)" in detail
    assert len(detail) < 300, detail


async def test_late_and_concurrent_listeners_each_get_the_whole_run(
    service: Service, client: httpx.AsyncClient
) -> None:
    service.llm.pieces = [f"t{n} " for n in range(30)]
    service.llm.hold_after = 10
    run_id = await service.create(client)
    url = service.url(f"/v1/runs/{run_id}/events")
    early = [asyncio.create_task(listen(client, url)) for _ in range(5)]
    await service.until_held()
    late = [asyncio.create_task(listen(client, url)) for _ in range(5)]
    service.llm.release.set()
    results = await asyncio.gather(*early, *late)
    await service.wait_done(run_id)
    after = await listen(client, url)
    expected = after.ids
    assert expected[-1] == f"{run_id}:{len(expected)}"
    for got in results:
        assert got.ids == expected
        assert got.text() == service.llm.answer


async def test_one_shot_research_reconnect_resumes_the_same_run(
    service: Service, client: httpx.AsyncClient
) -> None:
    service.llm.pieces = [f"p{n} " for n in range(8)]
    service.llm.hold_after = 4
    url = service.url("/v1/research?q=Why+is+the+sky+blue%3F&breadth=2")
    first = await listen(client, url, stop=after_event("token", 2))
    second_task = asyncio.create_task(listen(client, url, last_event_id=first.ids[-1]))
    await service.until_held()
    service.llm.release.set()
    second = await second_task
    assert first.text() + second.text() == service.llm.answer
    run_id = first.ids[0].split(":")[0]
    assert {i.split(":")[0] for i in second.ids} == {run_id}
    listing = (await client.get(service.url("/v1/runs"))).json()
    assert [r["id"] for r in listing["runs"]] == [run_id]  # the reconnect started no second run
    assert listing["runs"][0]["options"]["breadth"] == 2
    done_again = await client.get(url, headers={"Last-Event-ID": second.ids[-1]})
    assert done_again.status_code == 204


async def test_one_shot_reconnect_with_another_question_is_400(
    service: Service, client: httpx.AsyncClient
) -> None:
    full = await listen(client, service.url("/v1/research?q=first"))
    response = await client.get(
        service.url("/v1/research?q=second"), headers={"Last-Event-ID": full.ids[2]}
    )
    assert response.status_code == 400


async def test_heartbeat_comment_when_quiet(
    make_service: MakeService, client: httpx.AsyncClient
) -> None:
    service = await make_service(heartbeat_s=0.05)
    service.llm.hold_after = 1
    run_id = await service.create(client)
    async with (
        asyncio.timeout(5),
        client.stream("GET", service.url(f"/v1/runs/{run_id}/events")) as response,
    ):
        seen = b""
        async for chunk in response.aiter_bytes():
            seen += chunk
            if seen.count(b": ping\n\n") >= 2:
                break
    # The pings come only while the run is quiet (held after the first token).
    assert b"event: token" in seen.split(b": ping\n\n")[0]
    service.llm.release.set()
    await service.wait_done(run_id)


async def test_malformed_last_event_id_on_one_shot_says_malformed(
    service: Service, client: httpx.AsyncClient
) -> None:
    response = await client.get(
        service.url("/v1/research?q=anything"), headers={"Last-Event-ID": "not-an-id"}
    )
    assert response.status_code == 400
    assert "malformed" in response.json()["detail"]


@pytest.mark.parametrize(
    "text",
    [
        "plain ",
        "é ü 漢字 ",
        'quote " back \\ slash',
        "line\nbreak\r\ncr\ttab",
        "\x00\x1f\x7f",
        "😀\u2028\u2029",
    ],
)
def test_token_fast_path_encodes_exactly_like_dumps(text: str) -> None:
    data = {"text": text}
    expected = f"id: 0123456789abcdef:3\nevent: token\ndata: {dumps(data)}\n\n".encode()
    assert encode("0123456789abcdef", 3, "token", data) == expected
    assert json.loads(expected.split(b"data: ", 1)[1]) == data


async def test_http10_listener_gets_the_same_bytes_unchunked(
    service: Service, client: httpx.AsyncClient
) -> None:
    service.llm.pieces = [f"v{n} " for n in range(20)]
    service.llm.hold_after = 5
    run_id = await service.create(client)
    port = service.server.port
    assert port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /v1/runs/{run_id}/events HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert b"Transfer-Encoding" not in head
    await service.until_held()
    service.llm.release.set()  # the rest arrives live, through the run's hub
    async with asyncio.timeout(10):
        body = await reader.read()  # HTTP/1.0: the server closes the connection at the end
    writer.close()
    stored = await service.manager.log.read(run_id, after=0)
    assert body == b"retry: 3000\n\n" + b"".join(event.wire for event in stored)


async def test_stored_events_leave_the_garbage_collector_alone(
    service: Service, client: httpx.AsyncClient
) -> None:
    """The memory log keeps events as atomic tuples, which a collection stops tracking."""
    run_id = await service.create(client)
    await service.wait_done(run_id)
    gc.collect()
    stored = service.manager.log._runs[run_id].events  # type: ignore[attr-defined]
    assert stored
    assert not any(gc.is_tracked(row) for row in stored)
    events = await service.manager.log.read(run_id, after=0)
    assert events[1].data["queries"] == ["alpha", "beta"]


async def test_text_no_event_can_carry_becomes_u_fffd_and_the_run_still_ends(
    service: Service, client: httpx.AsyncClient
) -> None:
    """A lone surrogate (JSON's "\\ud800") that slipped past a provider, in a source's title and
    in the answer: no UTF-8 encoder writes it, and the run used to end with no `done`."""
    service.search.results["alpha"] = [
        SearchHit(title="Sker\ud800ryvore", url="https://a.example/", snippet="x\udc00y")
    ]
    service.llm.pieces = ["One ", "bad \ud800 piece", " end."]
    run_id = await service.create(client)
    got = await listen(client, service.url(f"/v1/runs/{run_id}/events"), timeout=10)
    name, done = got.last
    assert (name, done["status"]) == ("done", "completed")
    assert done["answer"] == got.text() == "One bad \ufffd piece end."
    assert done["sources"][0]["title"] == "Sker\ufffdryvore"
    assert done["sources"][0]["snippet"] == "x\ufffdy"
    snapshot = await client.get(service.url(f"/v1/runs/{run_id}"))
    assert snapshot.json()["answer"] == "One bad \ufffd piece end."
