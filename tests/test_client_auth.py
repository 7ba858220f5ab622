"""`ask` and `listen` against a service that asks for API keys (`serve --auth keys`)."""

from __future__ import annotations

import io
import json
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from research_service.client.api import BAD_KEY, NO_KEY, ServiceClient
from research_service.client.plain import JsonLines
from research_service.client.session import Output, ask
from research_service.errors import RunRefused
from tests import cli_process
from tests.loopback import refused_port
from tests.served import CORPUS, Served, start, stop

RUN = "0123456789abcdef"
TOKEN = "s3cr3t-stream-token"
PROBLEM = "application/problem+json"
#: A question the builtin model answers from the test corpus (with "1991").
QUESTION = "Who created Python and when was it first released?"
#: Long enough for every check of a finished run; the revocation test's run outlasts it.
WAIT_S = 60.0


def fake_key() -> str:
    """A key in the service's format that no service issued."""
    return f"rsk_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"


# --- the wire, against a scripted service: the key on every request, a 401 ends it -----------


def frame(seq: int, name: str = "token", data: dict[str, Any] | None = None) -> bytes:
    body = json.dumps(data if data is not None else {"text": f"t{seq} "})
    return f"id: {RUN}:{seq}\nevent: {name}\ndata: {body}\n\n".encode()


def unauthorized() -> web.Response:
    return web.json_response(
        {"type": "https://research-service.dev/problems/unauthorized", "status": 401,
         "title": "Unauthorized", "detail": "a valid API key is needed"},
        status=401,
        content_type=PROBLEM,
        headers={"WWW-Authenticate": 'Bearer realm="research-service"'},
    )  # fmt: skip


@dataclass
class FakeService:
    """Answers the client's four requests; records each request's Authorization header.

    `streams` scripts the event stream's connections in turn: a list of frames to send
    (then the connection closes), or a response (a 401, say).
    """

    key: str | None
    streams: list[list[bytes] | Callable[[], web.StreamResponse]]
    seen: list[tuple[str, str | None]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/runs", self.create)
        app.router.add_get("/v1/runs/{id}", self.snapshot)
        app.router.add_post("/v1/runs/{id}/cancel", self.cancel)
        app.router.add_get("/v1/runs/{id}/events", self.events)
        return app

    def signed(self, request: web.Request) -> bool:
        sent = request.headers.get("Authorization")
        self.seen.append((f"{request.method} {request.path}", sent))
        return self.key is not None and sent == f"Bearer {self.key}"

    def run(self) -> dict[str, Any]:
        return {
            "id": RUN,
            "question": "Q?",
            "status": "running",
            "options": {},
            "created_at": "2025-01-01T00:00:00Z",
            "events_url": f"/v1/runs/{RUN}/events?token={TOKEN}",
        }

    async def create(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.run(), status=201) if self.signed(request) else unauthorized()

    async def snapshot(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.run()) if self.signed(request) else unauthorized()

    async def cancel(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.run(), status=202) if self.signed(request) else unauthorized()

    async def events(self, request: web.Request) -> web.StreamResponse:
        self.signed(request)
        answer = self.streams[min(len(self.seen_streams), len(self.streams)) - 1]
        if callable(answer):
            return answer()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"retry: 10\n\n")
        for chunk in answer:
            await response.write(chunk)
        return response

    @property
    def seen_streams(self) -> list[str | None]:
        return [sent for what, sent in self.seen if what.endswith("/events")]


@pytest.fixture
async def serve_fake() -> AsyncIterator[Callable[[FakeService], Any]]:
    servers: list[TestServer] = []

    async def serve(fake: FakeService) -> str:
        server = TestServer(fake.app(), host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("/"))

    yield serve
    for server in servers:
        await server.close()


def output(notes: list[str]) -> tuple[Output, io.StringIO]:
    out = io.StringIO()
    return Output(display=JsonLines(out), notify=notes.append), out


async def test_every_request_and_every_reconnect_carries_the_key(
    serve_fake: Callable[[FakeService], Any],
) -> None:
    key = fake_key()
    fake = FakeService(
        key,
        streams=[
            [frame(1), frame(2)],  # then the connection drops before done
            [frame(3), frame(4, "done", {"status": "completed"})],
        ],
    )
    url = await serve_fake(fake)
    notes: list[str] = []
    out, written = output(notes)
    async with aiohttp.ClientSession() as session:
        api = ServiceClient(session, url, notify=notes.append, api_key=key)
        assert await ask(api, "Q?", {}, out) == 0
        await api.snapshot(RUN)
        await api.cancel(RUN)
    assert [json.loads(line)["id"] for line in written.getvalue().splitlines()] == [
        f"{RUN}:{n}" for n in (1, 2, 3, 4)
    ]
    assert [what for what, _ in fake.seen] == [
        "POST /v1/runs",
        f"GET /v1/runs/{RUN}/events",
        f"GET /v1/runs/{RUN}/events",
        f"GET /v1/runs/{RUN}",
        f"POST /v1/runs/{RUN}/cancel",
    ]
    assert {sent for _, sent in fake.seen} == {f"Bearer {key}"}
    assert key not in repr(api)
    assert all(key not in note and TOKEN not in note for note in notes)


async def test_without_a_key_no_authorization_is_sent_and_a_401_says_to_pass_one(
    serve_fake: Callable[[FakeService], Any],
) -> None:
    fake = FakeService(None, streams=[[]])
    url = await serve_fake(fake)
    async with aiohttp.ClientSession() as session:
        api = ServiceClient(session, url)
        with pytest.raises(RunRefused) as caught:
            await api.create("Q?", {})
    assert str(caught.value) == NO_KEY
    assert caught.value.status == 401
    assert caught.value.exit_code == 2
    assert fake.seen == [("POST /v1/runs", None)]


async def test_a_refused_key_is_said_without_the_key(
    serve_fake: Callable[[FakeService], Any],
) -> None:
    fake = FakeService(fake_key(), streams=[[]])
    url = await serve_fake(fake)
    wrong = fake_key()
    async with aiohttp.ClientSession() as session:
        api = ServiceClient(session, url, api_key=wrong)
        with pytest.raises(RunRefused) as caught:
            await api.snapshot(RUN)
    assert str(caught.value) == BAD_KEY
    assert wrong not in str(caught.value)


async def test_a_401_on_a_reconnect_ends_the_stream_instead_of_reconnecting_again(
    serve_fake: Callable[[FakeService], Any],
) -> None:
    """The key is revoked mid-run: the service closes the stream and refuses the reconnect."""
    key = fake_key()
    fake = FakeService(key, streams=[[frame(1), frame(2)], unauthorized])
    url = await serve_fake(fake)
    notes: list[str] = []
    out, written = output(notes)
    async with aiohttp.ClientSession() as session:
        api = ServiceClient(session, url, notify=notes.append, api_key=key)
        with pytest.raises(RunRefused) as caught:
            await ask(api, "Q?", {}, out)
    assert str(caught.value) == BAD_KEY
    assert fake.seen_streams == [f"Bearer {key}", f"Bearer {key}"]  # one reconnect, no more
    assert len(written.getvalue().splitlines()) == 2
    assert len(notes) == 1
    assert "reconnecting" in notes[0]
    assert TOKEN not in notes[0]


async def test_a_stream_refusal_names_the_events_url_without_its_stream_token(
    serve_fake: Callable[[FakeService], Any],
) -> None:
    def gone() -> web.Response:
        body = {"status": 404, "title": "Not found", "detail": f"no run with id {RUN!r}"}
        return web.json_response(body, status=404, content_type=PROBLEM)

    key = fake_key()
    fake = FakeService(key, streams=[gone])
    url = await serve_fake(fake)
    notes: list[str] = []
    out, _ = output(notes)
    async with aiohttp.ClientSession() as session:
        api = ServiceClient(session, url, notify=notes.append, api_key=key)
        with pytest.raises(RunRefused) as caught:
            await ask(api, "Q?", {}, out)
    assert str(caught.value).endswith(f"/v1/runs/{RUN}/events: no run with id {RUN!r}")
    assert TOKEN not in str(caught.value)


# --- the commands, against a real `serve --auth keys` process --------------------------------


@dataclass
class KeyedService:
    served: Served
    data_dir: Path
    keys: dict[str, str]

    @property
    def base(self) -> str:
        return self.served.base.rstrip("/")


async def create_key(data_dir: Path, name: str) -> str:
    result = await cli_process.run("keys", "create", name, "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


@asynccontextmanager
async def keyed_service(tmp_path: Path, *extra: str) -> AsyncIterator[KeyedService]:
    data_dir = tmp_path / "data"
    keys = {name: await create_key(data_dir, name) for name in ("alice", "bob")}
    served = await start(
        *("--auth", "keys", "--data-dir", str(data_dir), "--corpus", str(CORPUS)),
        *("--port", "0", "--retry-ms", "100", *extra),
        env={"RESEARCH_SECRET": secrets.token_urlsafe(32)},
    )
    try:
        yield KeyedService(served, data_dir, keys)
    finally:
        await stop(served)


@pytest.fixture
async def keyed(tmp_path: Path) -> AsyncIterator[KeyedService]:
    async with keyed_service(tmp_path, "--token-delay-ms", "0") as service:
        yield service


def assert_no_key(result: cli_process.Finished, *keys: str) -> None:
    for key in keys:
        assert key not in result.stdout
        assert key not in result.stderr


def done_of(result: cli_process.Finished) -> dict[str, Any]:
    events = result.json_lines()
    assert events[-1]["event"] == "done"
    data: dict[str, Any] = events[-1]["data"]
    return data


@pytest.mark.parametrize("given", ["flag", "env"])
async def test_ask_with_a_key_runs_to_its_answer(keyed: KeyedService, given: str) -> None:
    key = keyed.keys["alice"]
    if given == "flag":
        # The flag wins over a wrong key in the environment.
        result = await cli_process.run(
            *("ask", "--server", keyed.base, "--api-key", key, "--json", QUESTION),
            RESEARCH_API_KEY=fake_key(),
        )
    else:
        result = await cli_process.run(
            "ask", "--server", keyed.base, "--json", QUESTION, RESEARCH_API_KEY=key
        )
    assert result.returncode == 0, result.stderr
    done = done_of(result)
    assert done["status"] == "completed"
    assert "1991" in done["answer"]
    assert_no_key(result, key)


async def test_ask_without_a_key_is_told_how_to_give_one(keyed: KeyedService) -> None:
    result = await cli_process.run("ask", "--server", keyed.base, QUESTION)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == f"research-service: {NO_KEY}\n"


async def test_ask_with_a_wrong_key_is_refused_without_showing_it(keyed: KeyedService) -> None:
    wrong = fake_key()
    by_flag = await cli_process.run("ask", "--server", keyed.base, "--api-key", wrong, "Q?")
    by_env = await cli_process.run("ask", "--server", keyed.base, "Q?", RESEARCH_API_KEY=wrong)
    for result in (by_flag, by_env):
        assert result.returncode == 2
        assert result.stderr == f"research-service: {BAD_KEY}\n"
        assert_no_key(result, wrong)


async def test_listen_follows_the_keys_own_run_and_not_anothers(keyed: KeyedService) -> None:
    alice, bob = keyed.keys["alice"], keyed.keys["bob"]
    asked = await cli_process.run(
        "ask", "--server", keyed.base, "--json", QUESTION, RESEARCH_API_KEY=alice
    )
    assert asked.returncode == 0, asked.stderr
    run_id = asked.json_lines()[0]["id"].split(":")[0]

    mine = await cli_process.run(
        "listen", run_id, "--server", keyed.base, "--api-key", alice, "--json"
    )
    assert mine.returncode == 0, mine.stderr
    assert mine.json_lines() == asked.json_lines()
    assert_no_key(mine, alice)

    theirs = await cli_process.run(
        "listen", run_id, "--server", keyed.base, "--json", RESEARCH_API_KEY=bob
    )
    unknown_id = "f" * 16 if run_id != "f" * 16 else "e" * 16
    unknown = await cli_process.run(
        "listen", unknown_id, "--server", keyed.base, "--json", RESEARCH_API_KEY=alice
    )
    assert theirs.returncode == unknown.returncode == 2
    assert theirs.stdout == unknown.stdout == ""
    # Another owner's run is refused exactly like a run that does not exist.
    assert run_id in theirs.stderr
    assert theirs.stderr == unknown.stderr.replace(unknown_id, run_id)
    assert_no_key(theirs, alice, bob)


async def test_ask_without_server_needs_no_key_whatever_the_environment(tmp_path: Path) -> None:
    result = await cli_process.run(
        *("ask", "--json", "--corpus", str(CORPUS), "--data-dir", str(tmp_path / "data")),
        QUESTION,
        RESEARCH_AUTH="keys",
        RESEARCH_ALLOWED_HOSTS="research.example.com",
    )
    assert result.returncode == 0, result.stderr
    assert done_of(result)["status"] == "completed"


async def test_api_key_without_server_is_a_usage_error() -> None:
    key = fake_key()
    result = await cli_process.run("ask", "--api-key", key, "Q?")
    assert result.returncode == 2
    assert "--api-key is for a --server" in result.stderr
    assert_no_key(result, key)


async def test_a_malformed_key_is_refused_before_any_request_without_echoing_it() -> None:
    key = "rsk_abc def\x1b[2J"
    result = await cli_process.run(
        "listen", RUN, "--server", f"http://127.0.0.1:{refused_port()}", RESEARCH_API_KEY=key
    )
    assert result.returncode == 2
    assert "RESEARCH_API_KEY holds a space or a character an API key never has" in result.stderr
    assert "abc" not in result.stderr


async def test_revoking_the_key_ends_a_listen_that_follows_the_run(tmp_path: Path) -> None:
    # A token a second: the run outlasts the revoke command's start-up and the ~2 s until
    # the service sees it, however loaded the machine (the test ends when the stream does).
    async with keyed_service(tmp_path, "--token-delay-ms", "1000") as keyed:
        key = keyed.keys["alice"]
        async with httpx.AsyncClient(timeout=30) as client:
            created = await client.post(
                f"{keyed.base}/v1/runs",
                json={"question": QUESTION},
                headers={"Authorization": f"Bearer {key}"},
            )
        assert created.status_code == 201, created.text
        run_id = created.json()["id"]
        cli = await cli_process.start(
            "listen", run_id, "--server", keyed.base, "--json", RESEARCH_API_KEY=key
        )
        await cli.json_until(lambda event: event["event"] == "token", timeout=WAIT_S)

        revoked = await cli_process.run(
            "keys", "revoke", "alice", "--data-dir", str(keyed.data_dir)
        )
        assert revoked.returncode == 0, revoked.stderr

        # Closed within ~2 s, one reconnect 0.1 s later, refused: well inside this bound.
        result = await cli.finish(timeout=20)
        assert result.returncode == 2, result.stderr
        assert result.stderr.splitlines()[-1] == f"research-service: {BAD_KEY}"
        assert result.stderr.count("reconnecting") <= 1
        assert all(event["event"] != "done" for event in result.json_lines())
        assert_no_key(result, key)
