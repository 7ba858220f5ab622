"""Resuming an MCP tool call over Streamable HTTP: only its own session, with its own key.

A raw client (httpx, the 2025-11-25 wire) drives `research-service mcp --http` as a real child
process, so that request ids, session ids and `Last-Event-ID` are chosen by the test, as an
attacker would choose them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from mcp.server.streamable_http import EventMessage
from mcp_types import JSONRPCResponse

from research_service.mcp.callers import CALLER, Caller
from research_service.mcp.event_store import RunEventStore
from research_service.mcp.progress import progress_message
from tests.conftest import Service
from tests.test_client_auth import QUESTION, keyed_service
from tests.test_mcp import TIMEOUT_S, http_server

WIRE = "2025-11-25"
Event = dict[str, Any]


def parsed(event: dict[str, str]) -> Event:
    """An SSE event's id and its JSON message (None for the empty priming event)."""
    data = event.get("data", "")
    return {"id": event.get("id"), "message": json.loads(data) if data else None}


class RawSession:
    """One MCP session over Streamable HTTP, every request sending `key` (None: no key)."""

    def __init__(self, http: httpx.AsyncClient, url: str, key: str | None) -> None:
        self.http, self.url, self.key = http, url, key
        self.id: str | None = None

    def headers(self, **extra: str) -> dict[str, str]:
        headers = {
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
            "MCP-Protocol-Version": WIRE,
            **extra,
        }
        if self.key is not None:
            headers["Authorization"] = f"Bearer {self.key}"
        if self.id is not None:
            headers["Mcp-Session-Id"] = self.id
        return headers

    async def open(self) -> RawSession:
        hello = {"protocolVersion": WIRE, "capabilities": {}, "clientInfo": {"name": "t"}}
        opened = await self.http.post(
            self.url,
            headers=self.headers(),
            json={"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": hello},
        )
        assert opened.status_code == 200, opened.text
        self.id = opened.headers["mcp-session-id"]
        done = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        assert (await self.http.post(self.url, headers=self.headers(), json=done)).is_success
        return self

    async def events(self, response: httpx.Response, *, until: int | None) -> list[Event]:
        """The response's events up to its JSON-RPC answer, or its first `until` with an id
        (then the connection is dropped), or its end."""
        found: list[Event] = []
        event: dict[str, str] = {}
        async for line in response.aiter_lines():
            if line:
                name, _, value = line.partition(":")
                event[name] = event.get(name, "") + value.removeprefix(" ")
                continue
            if not event:
                continue
            found.append(parsed(event))
            event = {}
            message = found[-1]["message"] or {}
            if "result" in message or "error" in message:
                break
            if until is not None and sum(e["id"] is not None for e in found) == until:
                break
        return found

    async def call(
        self, request_id: int, arguments: dict[str, Any], *, until: int | None = None
    ) -> list[Event]:
        """`tools/call research` with this request id; its stream's events (see `events`)."""
        params = {"name": "research", "arguments": arguments, "_meta": {"progressToken": "p"}}
        body = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}
        async with (
            asyncio.timeout(TIMEOUT_S),
            self.http.stream("POST", self.url, headers=self.headers(), json=body) as response,
        ):
            assert response.status_code == 200, await response.aread()
            return await self.events(response, until=until)

    async def resume(self, last_event_id: str) -> tuple[int, list[Event]]:
        """`GET` with `Last-Event-ID`: the status and what was sent, up to an answer."""
        headers = self.headers(**{"Last-Event-ID": last_event_id})
        del headers["Content-Type"]
        async with (
            asyncio.timeout(TIMEOUT_S),
            self.http.stream("GET", self.url, headers=headers) as response,
        ):
            return response.status_code, await self.events(response, until=None)


def answers(events: list[Event]) -> list[dict[str, Any]]:
    """The JSON-RPC answers among the events."""
    return [e["message"] for e in events if e["message"] and "id" in e["message"]]


def ids(events: list[Event]) -> list[str]:
    return [e["id"] for e in events if e["id"] is not None]


@asynccontextmanager
async def raw_client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=TIMEOUT_S) as http:
        yield http


async def test_a_call_is_replayed_only_to_its_own_session_with_its_own_key(
    tmp_path: Path,
) -> None:
    """Alice's finished call, named by its event ids: another session (no key, Bob's key, or
    Alice's own) is sent nothing of it, nor is her session presenting another key; her
    session with her key is sent her answer again."""
    async with (
        keyed_service(tmp_path, "--token-delay-ms", "0") as keyed,
        http_server("--server", keyed.base) as url,
        raw_client() as http,
    ):
        alice = await RawSession(http, url, keyed.keys["alice"]).open()
        events = await alice.call(7, {"question": QUESTION})
        (answer,) = answers(events)
        assert answer["id"] == 7
        assert not answer["result"]["isError"], answer
        first, last = ids(events)[0], ids(events)[-1]

        strangers = [
            await RawSession(http, url, None).open(),
            await RawSession(http, url, keyed.keys["bob"]).open(),
            await RawSession(http, url, keyed.keys["alice"]).open(),
        ]
        hijacker = RawSession(http, url, keyed.keys["bob"])
        hijacker.id = alice.id  # Alice's session id, Bob's key
        for who in [*strangers, hijacker]:
            for event_id in (first, last):
                status, sent = await who.resume(event_id)
                assert answers(sent) == [], (who.key, event_id)
                progress = [e for e in sent if e["message"]]
                assert progress == [], (who.key, event_id)
                assert status == 200

        status, sent = await alice.resume(first)
        assert status == 200
        assert answers(sent) == [answer]

        # Only her key ends her session: Bob's, or none, is told there is no such session.
        for key in (keyed.keys["bob"], None):
            stranger = RawSession(http, url, key)
            stranger.id = alice.id
            refused = await http.delete(url, headers=stranger.headers())
            assert refused.status_code == 404
            assert refused.json()["error"]["message"] == "Session not found"
        status, sent = await alice.resume(first)
        assert status == 200
        assert answers(sent) == [answer]

        # Ended by DELETE, her session's calls are forgotten; the session is gone.
        ended = await http.delete(url, headers=alice.headers())
        assert ended.status_code == 200
        status, sent = await alice.resume(first)
        assert status == 404
        assert sent == []
    assert "refused to resume stream '7'" in url.log


async def test_a_call_that_reuses_a_request_id_is_never_sent_an_earlier_answer(
    service: Service,
) -> None:
    """Session one's call 7 has ended. Session two's call 7, and then session one's second
    call 7, are each cut off mid-run and resumed: each is sent its own run's answer only."""
    async with http_server("--server", service.url("/")) as url, raw_client() as http:
        one = await RawSession(http, url, None).open()
        (earlier,) = answers(await one.call(7, {"question": "What is up?"}))
        earlier_run = earlier["result"]["structuredContent"]["run_id"]
        two = await RawSession(http, url, None).open()
        for session in (two, one):
            service.llm.hold_after = 1
            service.llm.holding.clear()
            service.llm.release.clear()
            cut = await session.call(7, {"question": "What else?"}, until=3)
            assert answers(cut) == []
            run_id = ids(cut)[-1].split("/")[1].split(":")[0]
            assert run_id != earlier_run
            await service.until_held(TIMEOUT_S)
            service.llm.release.set()
            await service.wait_done(run_id, timeout=TIMEOUT_S)
            status, sent = await session.resume(ids(cut)[-1])
            assert status == 200
            (answer,) = answers(sent)
            assert answer["result"]["structuredContent"]["run_id"] == run_id


async def test_a_resume_naming_a_step_never_sent_costs_nothing(service: Service) -> None:
    """A negative or enormous step in `Last-Event-ID` is not a stream of ours: nothing is
    rebuilt (it once padded a list with that many notifications)."""
    async with http_server("--server", service.url("/")) as url, raw_client() as http:
        session = await RawSession(http, url, None).open()
        events = await session.call(3, {"question": "What is up?"})
        run_event = ids(events)[-1].split("/")[1]
        for forged in (f"3/{run_event}/-20000", f"3/{run_event}/-3000000", f"3/{run_event}/x"):
            status, sent = await session.resume(forged)
            assert (status, sent) == (200, []), forged
        # A step past the ones sent is nothing missed: the answer alone.
        status, sent = await session.resume(f"3/{run_event}/99999999")
        assert [a["id"] for a in answers(sent)] == [3]
        assert [e for e in sent if e["message"] and "method" in e["message"]] == []


async def test_each_notification_names_the_phase_it_reports_and_a_resume_sends_what_followed(
    service: Service,
) -> None:
    """A notification's event id carries the run's seq of the `phase` event it reports
    (docs/mcp.md), although the call goes on to the run's next events before the transport
    stores the notification. Resumed after any notification, the stream is sent the ones
    that followed it, as they were first sent, and the answer."""
    async with http_server("--server", service.url("/")) as url, raw_client() as http:
        session = await RawSession(http, url, None).open()
        events = await session.call(5, {"question": "What is up?"})
        sent = [e for e in events if e["message"] and "method" in e["message"]]
        run_id = ids(events)[-1].split("/")[1].split(":")[0]
        stored = await service.manager.log.read(run_id, after=0)
        phases = {e.seq: progress_message(e.data) for e in stored if e.name == "phase"}
        assert len(sent) == len(phases) >= 6
        for note in sent:
            seq = int(note["id"].split("/")[1].split(":")[1])
            assert note["message"]["params"]["message"] == phases[seq], note

        for missed in range(len(sent)):
            after = sent[-missed - 1]["id"]
            status, again = await session.resume(after)
            assert status == 200
            assert [e for e in again if e["message"] and "method" in e["message"]] == (
                sent[len(sent) - missed :]
            ), after
            assert answers(again) == answers(events)


async def test_the_store_keeps_the_newest_calls_and_forgets_an_ended_sessions() -> None:
    """In-process, on the store itself: at most `max_streams` calls are kept, the oldest go
    first; a session's calls go when it ends; a caller outside any session resumes nothing."""
    store = RunEventStore(max_streams=3)
    sent: list[EventMessage] = []

    async def send(message: EventMessage) -> None:
        sent.append(message)

    answer = JSONRPCResponse(jsonrpc="2.0", id=1, result={})
    made: dict[tuple[str, str], str] = {}
    for session, stream in [("a", "1"), ("a", "2"), ("b", "1"), ("b", "2")]:
        CALLER.set(Caller(session, None))
        made[session, stream] = await store.store_event(stream, None)  # the priming event
        await store.store_event(stream, answer)

    CALLER.set(Caller("a", None))
    assert await store.replay_events_after(made["a", "1"], send) is None  # the oldest went
    assert await store.replay_events_after(made["a", "2"], send) == "2"
    store.session_ended("b")
    CALLER.set(Caller("b", None))
    assert await store.replay_events_after(made["b", "2"], send) is None
    CALLER.set(None)
    assert await store.replay_events_after(made["a", "2"], send) is None
    assert [message.message for message in sent] == [answer]


async def test_an_ended_call_is_forgotten_once_unused_but_a_quiet_call_in_progress_is_not() -> None:
    """A session the SDK ended for idling (no DELETE) is never reported: its calls' results go
    once unused for `idle_s` (here 0: at once, at the next use of the store). A call still
    going, quiet for as long as a plan review waits, keeps its stream."""
    store = RunEventStore(idle_s=0)
    sent: list[EventMessage] = []

    async def send(message: EventMessage) -> None:
        sent.append(message)

    CALLER.set(Caller("a", None))
    going = await store.store_event("1", None)  # a call under way: no response yet
    ended = await store.store_event("2", None)
    answer = JSONRPCResponse(jsonrpc="2.0", id=2, result={})
    await store.store_event("2", answer)
    await store.store_event("3", None)  # another use of the store
    assert await store.replay_events_after(ended, send) is None  # forgotten
    assert await store.replay_events_after(going, send) == "1"  # kept
    assert sent == []
