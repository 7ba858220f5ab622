"""The `Expect` header on real sockets: `100 Continue` only for a body that will be read, else 417.

A request refused on its headers (size, type, credentials) gets its final problem+json status
instead of `100 Continue`, so the client never sends its body, and the connection is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
import pytest

from research_service.problem_json import PROBLEM_CONTENT_TYPE, PROBLEM_TYPE_BASE
from research_service.web.validation import MAX_BODY_BYTES
from tests.conftest import MakeService, Service
from tests.openapi_check import check_response, load_document

#: Long enough for any answer here; the tests wait for bytes, never for this.
READ_TIMEOUT_S: Final = 10.0
#: Bounds how long the server drains a body it did not read (its lingering close).
BODY_TIMEOUT_S: Final = 1.0
BODY: Final = json.dumps({"question": "What is up?"}).encode()
CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
KEY: Final = "k" * 40
HEALTHZ: Final = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes

    def problem(self) -> dict[str, Any]:
        """The problem+json body, checked against the OpenAPI document's `POST /v1/runs`."""
        assert self.headers["content-type"] == PROBLEM_CONTENT_TYPE
        check_response(
            load_document(),
            method="POST",
            path="/v1/runs",
            status=self.status,
            headers=self.headers,
            body=self.body,
        )
        problem: dict[str, Any] = json.loads(self.body)
        assert problem["status"] == self.status
        return problem


@pytest.fixture
async def service(make_service: MakeService) -> Service:
    return await make_service(body_timeout_s=BODY_TIMEOUT_S)


@contextlib.asynccontextmanager
async def connect(service: Service) -> AsyncIterator[Connection]:
    port = service.server.port
    assert port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()


def post_head(expect: str, *, version: str = "1.1", **headers: str) -> bytes:
    """The head of a `POST /v1/runs` of BODY with `Expect: <expect>`, without the body."""
    fields = {
        "Host": "127.0.0.1",
        "Content-Type": "application/json",
        "Content-Length": str(len(BODY)),
        "Expect": expect,
        **headers,
    }
    lines = "".join(f"{name}: {value}\r\n" for name, value in fields.items())
    return f"POST /v1/runs HTTP/{version}\r\n{lines}\r\n".encode("latin-1")


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    """The next response on the connection: its head, then its Content-Length of body."""
    async with asyncio.timeout(READ_TIMEOUT_S):
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").removesuffix("\r\n\r\n").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Answer(int(status_line.split()[1]), headers, body)


async def read_to_end(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(READ_TIMEOUT_S):
        return await reader.read()


async def assert_still_serving(service: Service) -> None:
    async with connect(service) as (reader, writer):
        writer.write(HEALTHZ)
        assert (await read_answer(reader)).status == 200


async def test_a_body_over_the_limit_gets_413_instead_of_100_continue(service: Service) -> None:
    async with connect(service) as (reader, writer):
        writer.write(post_head("100-continue", **{"Content-Length": str(MAX_BODY_BYTES + 1)}))
        answer = await read_answer(reader)  # the first answer: not a 100
        assert answer.status == 413
        assert answer.problem() == {
            "type": PROBLEM_TYPE_BASE + "body-too-large",
            "title": "Request body too large",
            "status": 413,
            "detail": f"the body is {MAX_BODY_BYTES + 1} bytes; the limit is {MAX_BODY_BYTES}",
        }
        assert answer.headers["connection"] == "close"
    await assert_still_serving(service)


async def test_a_body_that_is_not_json_gets_415_instead_of_100_continue(service: Service) -> None:
    async with connect(service) as (reader, writer):
        writer.write(post_head("100-continue", **{"Content-Type": "text/plain"}))
        answer = await read_answer(reader)
        assert answer.status == 415
        problem = answer.problem()
        assert problem["type"] == PROBLEM_TYPE_BASE + "unsupported-media-type"
        assert problem["detail"] == "send the body as application/json, not text/plain"
        assert answer.headers["connection"] == "close"
        # A client that sends on anyway: its bytes are the refused body, never a request.
        writer.write(HEALTHZ)
        assert await read_to_end(reader) == b""
    await assert_still_serving(service)


@pytest.mark.parametrize("expect", ["100-continue", "100-Continue"])
async def test_a_valid_body_is_asked_for_with_100_continue_then_created(
    service: Service, expect: str
) -> None:
    async with connect(service) as (reader, writer):
        writer.write(post_head(expect))
        async with asyncio.timeout(READ_TIMEOUT_S):
            assert await reader.readuntil(b"\r\n\r\n") == CONTINUE
        writer.write(BODY)
        created = await read_answer(reader)
        assert created.status == 201, created.body
        assert json.loads(created.body)["question"] == "What is up?"
        # The body was read: the connection carries the next request.
        assert "connection" not in created.headers
        writer.write(HEALTHZ)
        assert (await read_answer(reader)).status == 200


async def test_with_api_keys_100_continue_comes_only_after_authentication(
    make_service: MakeService, tmp_path: Path
) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text(f"alice:{KEY}\n", encoding="utf-8")
    service = await make_service(auth="keys", api_keys_file=keys, body_timeout_s=BODY_TIMEOUT_S)
    async with connect(service) as (reader, writer):
        writer.write(post_head("100-continue"))
        refused = await read_answer(reader)
        assert refused.status == 401
        assert refused.problem()["type"] == PROBLEM_TYPE_BASE + "unauthorized"
        assert refused.headers["connection"] == "close"
    async with connect(service) as (reader, writer):
        writer.write(post_head("100-continue", Authorization=f"Bearer {KEY}"))
        async with asyncio.timeout(READ_TIMEOUT_S):
            assert await reader.readuntil(b"\r\n\r\n") == CONTINUE
        writer.write(BODY)
        assert (await read_answer(reader)).status == 201


async def test_an_unknown_expectation_gets_417_problem_json(
    service: Service, client: httpx.AsyncClient
) -> None:
    async with connect(service) as (reader, writer):
        writer.write(post_head("foo"))
        answer = await read_answer(reader)
        assert answer.status == 417
        assert answer.problem() == {
            "type": PROBLEM_TYPE_BASE + "expectation-failed",
            "title": "Expectation failed",
            "status": 417,
            "detail": "Expect: foo is not supported; only 100-continue is: "
            "send Expect: 100-continue or no Expect header",
        }
        assert answer.headers["connection"] == "close"
    async with connect(service) as (reader, writer):
        writer.write(post_head("100-continue, foo"))
        answer = await read_answer(reader)
        assert answer.status == 417
        assert answer.problem()["detail"].startswith("Expect: foo is not supported")
    assert (await client.get(service.url("/v1/runs"))).json()["runs"] == []
    await assert_still_serving(service)


async def test_every_route_answers_an_unknown_expectation_with_417_problem_json(
    service: Service, client: httpx.AsyncClient
) -> None:
    document = load_document()
    routes = list(service.app.router.routes())
    assert len(routes) > 15
    for route in routes:
        assert route.resource is not None
        template = route.resource.canonical
        path = template.replace("{run_id}", "0123456789abcdef").replace("{name}", "panel.js")
        response = await client.request(route.method, service.url(path), headers={"Expect": "x"})
        assert response.status_code == 417, (route.method, path)
        assert response.headers["Content-Type"] == PROBLEM_CONTENT_TYPE, (route.method, path)
        if route.method != "HEAD":  # the document lists GETs, whose HEADs aiohttp adds
            check_response(
                document,
                method=route.method,
                path=template,
                status=417,
                headers=response.headers,
                body=response.content,
            )


async def test_http_1_0_requests_ignore_expect_as_aiohttp_does(service: Service) -> None:
    async with connect(service) as (reader, writer):
        writer.write(post_head("100-continue", version="1.0") + BODY)
        raw = await read_to_end(reader)
    assert CONTINUE not in raw
    assert raw.startswith(b"HTTP/1.0 201 ")
    async with connect(service) as (reader, writer):
        writer.write(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\nExpect: foo\r\n\r\n")
        assert (await read_to_end(reader)).startswith(b"HTTP/1.0 200 ")
