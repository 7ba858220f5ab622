"""The `/v1` HTTP API over real HTTP: each endpoint's answers, and a problem for every bad input."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.conftest import MakeService, Service
from tests.fakes import default_hits
from tests.sse import Received, after_event, listen

UNKNOWN_ID = "0123456789abcdef"
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
LIMIT = 64 * 1024
TIMINGS = {"planning", "searching", "synthesizing", "total"}


def _json_body(value: Any) -> bytes:
    return json.dumps(value).encode()


async def _chunked(size: int) -> AsyncIterator[bytes]:
    """A JSON body of about `size` bytes, sent without a Content-Length."""
    yield b'{"question": "'
    for _ in range(size // 1024):
        yield b"x" * 1024
    yield b'"}'


@dataclass(frozen=True)
class Bad:
    """One bad request and the problem it must get."""

    name: str
    method: str
    path: str
    status: int
    says: str | None  # a piece of the detail that tells the client what was wrong
    field: str | None = None
    body: bytes | None = None
    content_type: str | None = "application/json"
    chunked: int | None = None
    params: dict[str, str] = dataclasses.field(default_factory=dict)
    allow: frozenset[str] | None = None

    async def send(self, client: httpx.AsyncClient, service: Service) -> httpx.Response:
        headers = {} if self.content_type is None else {"Content-Type": self.content_type}
        content: Any = self.body
        if self.chunked is not None:
            content = _chunked(self.chunked)
        if content is None:
            headers = {}
        return await client.request(
            self.method,
            service.url(self.path),
            content=content,
            headers=headers,
            params=self.params,
        )


def _post(name: str, value: Any, *, says: str | None, field: str | None = None) -> Bad:
    return Bad(name, "POST", "/v1/runs", 400, says, field, body=_json_body(value))


def _option(name: str, key: str, value: Any, *, says: str) -> Bad:
    body = {"question": "What is up?", "options": {key: value}}
    return _post(name, body, says=says, field=f"options.{key}")


def _research(name: str, params: dict[str, str], *, field: str, says: str) -> Bad:
    return Bad(name, "GET", "/v1/research", 400, says, field, params=params)


def _listing(name: str, params: dict[str, str], *, field: str, says: str) -> Bad:
    return Bad(name, "GET", "/v1/runs", 400, says, field, params=params)


def _method(name: str, method: str, path: str, allow: set[str]) -> Bad:
    return Bad(name, method, path, 405, method, allow=frozenset(allow))


BAD_REQUESTS = [
    Bad("malformed-json", "POST", "/v1/runs", 400, "not valid JSON", body=b'{"question": "x",'),
    Bad("invalid-utf8", "POST", "/v1/runs", 400, "not valid JSON", body=b'{"question": "\xff"}'),
    Bad("empty-body", "POST", "/v1/runs", 400, "not valid JSON", body=b""),
    _post("json-array", ["What is up?"], says="JSON object"),
    _post("json-string", "What is up?", says="JSON object"),
    _post("json-null", None, says="JSON object"),
    _post("missing-question", {}, says="required", field="question"),
    _post("only-options", {"options": {}}, says="required", field="question"),
    _post("question-number", {"question": 42}, says="string", field="question"),
    _post("question-null", {"question": None}, says="string", field="question"),
    _post("question-list", {"question": ["a"]}, says="string", field="question"),
    _post("question-empty", {"question": ""}, says="blank", field="question"),
    _post("question-blank", {"question": " \t\n "}, says="blank", field="question"),
    Bad(
        "question-lone-surrogate",
        "POST",
        "/v1/runs",
        400,
        "question",
        "question",
        body=b'{"question": "\\ud800 What is up?"}',
    ),
    _post("question-2001", {"question": "q" * 2001}, says="2000", field="question"),
    _post("unknown-field", {"question": "x", "mode": "deep"}, says="mode", field="mode"),
    _post("options-list", {"question": "x", "options": [3]}, says="object", field="options"),
    _post("options-string", {"question": "x", "options": "3"}, says="object", field="options"),
    _post("options-null", {"question": "x", "options": None}, says="object", field="options"),
    _option("unknown-option", "temperature", 2, says="temperature"),
    _option("max-tokens-0", "max_tokens", 0, says="1 to 1000000"),
    _option("max-tokens-huge", "max_tokens", 1_000_001, says="1 to 1000000"),
    _option("max-tokens-string", "max_tokens", "100", says="integer"),
    _option("breadth-0", "breadth", 0, says="1 to 8"),
    _option("breadth-9", "breadth", 9, says="1 to 8"),
    _option("breadth-string", "breadth", "3", says="integer"),
    _option("breadth-bool", "breadth", True, says="integer"),
    _option("breadth-float", "breadth", 1.5, says="integer"),
    _option("max-sources-0", "max_sources", 0, says="1 to 20"),
    _option("max-sources-21", "max_sources", 21, says="1 to 20"),
    # Inputs Python's json module cannot parse into values: still the client's fault, not a 500.
    Bad(
        "integer-too-long",
        "POST",
        "/v1/runs",
        400,
        None,
        body=b'{"question": "x", "options": {"breadth": ' + b"9" * 5000 + b"}}",
    ),
    Bad("nested-too-deep", "POST", "/v1/runs", 400, None, body=b"[" * 30_000 + b"]" * 30_000),
    Bad(
        "text-plain",
        "POST",
        "/v1/runs",
        415,
        "application/json",
        body=b'{"question": "x"}',
        content_type="text/plain",
    ),
    Bad(
        "form-encoded",
        "POST",
        "/v1/runs",
        415,
        "application/json",
        body=b"question=x",
        content_type="application/x-www-form-urlencoded",
    ),
    Bad(
        "no-content-type",
        "POST",
        "/v1/runs",
        415,
        "application/json",
        body=b'{"question": "x"}',
        content_type=None,
    ),
    Bad(
        "too-large",
        "POST",
        "/v1/runs",
        413,
        str(LIMIT),
        body=_json_body({"question": "x" * (70 * 1024)}),
    ),
    Bad("too-large-chunked", "POST", "/v1/runs", 413, str(LIMIT), chunked=70 * 1024),
    _method("delete-runs", "DELETE", "/v1/runs", {"GET", "POST"}),
    _method("put-runs", "PUT", "/v1/runs", {"GET", "POST"}),
    _method("post-run", "POST", f"/v1/runs/{UNKNOWN_ID}", {"GET"}),
    _method("delete-run", "DELETE", f"/v1/runs/{UNKNOWN_ID}", {"GET"}),
    _method("get-cancel", "GET", f"/v1/runs/{UNKNOWN_ID}/cancel", {"POST"}),
    _method("post-events", "POST", f"/v1/runs/{UNKNOWN_ID}/events", {"GET"}),
    Bad("unknown-route", "GET", "/v2/runs", 404, "/v2/runs"),
    Bad("unknown-route-top", "GET", "/index.html", 404, "/index.html"),
    Bad("unknown-run-get", "GET", f"/v1/runs/{UNKNOWN_ID}", 404, UNKNOWN_ID),
    Bad("unknown-run-cancel", "POST", f"/v1/runs/{UNKNOWN_ID}/cancel", 404, UNKNOWN_ID),
    Bad("unknown-run-events", "GET", f"/v1/runs/{UNKNOWN_ID}/events", 404, UNKNOWN_ID),
    Bad("malformed-run-get", "GET", "/v1/runs/not-a-run", 404, "not-a-run"),
    Bad("malformed-run-cancel", "POST", "/v1/runs/XYZ/cancel", 404, "XYZ"),
    Bad("uppercase-run-events", "GET", "/v1/runs/0123456789ABCDEF/events", 404, "0123456789ABCDEF"),
    _research("research-no-q", {}, field="q", says="required"),
    _research("research-blank-q", {"q": "   "}, field="q", says="blank"),
    _research("research-long-q", {"q": "q" * 2001}, field="q", says="2000"),
    _research(
        "research-unknown", {"q": "x", "temperature": "2"}, field="temperature", says="temperature"
    ),
    _research("research-breadth-0", {"q": "x", "breadth": "0"}, field="breadth", says="1 to 8"),
    _research("research-breadth-9", {"q": "x", "breadth": "9"}, field="breadth", says="1 to 8"),
    _research("research-breadth-x", {"q": "x", "breadth": "x"}, field="breadth", says="integer"),
    _research(
        "research-breadth-float", {"q": "x", "breadth": "1.5"}, field="breadth", says="integer"
    ),
    _research(
        "research-max-sources", {"q": "x", "max_sources": "21"}, field="max_sources", says="1 to 20"
    ),
    _listing("list-unknown-param", {"page": "2"}, field="page", says="unknown parameter"),
    Bad(
        "create-unknown-param",
        "POST",
        "/v1/runs",
        400,
        "unknown parameter",
        "wait",
        body=b'{"question": "q"}',
        params={"wait": "1"},
    ),
    Bad(
        "cancel-unknown-param",
        "POST",
        f"/v1/runs/{UNKNOWN_ID}/cancel",
        400,
        "unknown",
        "force",
        params={"force": "1"},
    ),
    Bad(
        "healthz-unknown-param",
        "GET",
        "/healthz",
        400,
        "unknown",
        "verbose",
        params={"verbose": "1"},
    ),
    Bad(
        "metrics-unknown-param",
        "GET",
        "/metrics",
        400,
        "unknown",
        "format",
        params={"format": "json"},
    ),
    Bad(
        "events-unknown-param",
        "GET",
        f"/v1/runs/{UNKNOWN_ID}/events",
        400,
        "unknown parameter",
        "lastEventId",
        params={"lastEventId": "x"},
    ),
    Bad(
        "snapshot-unknown-param",
        "GET",
        f"/v1/runs/{UNKNOWN_ID}",
        400,
        "unknown",
        "x",
        params={"x": "1"},
    ),
    _listing("list-limit-0", {"limit": "0"}, field="limit", says="1 to 100"),
    _listing("list-limit-101", {"limit": "101"}, field="limit", says="1 to 100"),
    _listing("list-limit-x", {"limit": "x"}, field="limit", says="integer"),
    _listing("list-before-garbage", {"before": "garbage!"}, field="before", says="cursor"),
    _listing("list-before-no-key", {"before": "bm90IGEgY3Vyc29y"}, field="before", says="cursor"),
]


def assert_problem(
    response: httpx.Response, status: int, *, field: str | None = None, says: str | None = None
) -> dict[str, Any]:
    """The response is an RFC 9457 problem with this status, field and detail."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    for key in ("type", "title", "detail"):
        assert isinstance(problem[key], str)
        assert problem[key]
    assert problem.get("field") == field
    if says is not None:
        assert says in problem["detail"]
    return problem


async def _snapshot(service: Service, client: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    response = await client.get(service.url(f"/v1/runs/{run_id}"))
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def _progress(got: Received) -> list[dict[str, Any]]:
    return [
        data
        for index, name in enumerate(got.names)
        if name == "phase"
        for data in [got.data(index)]
        if data["status"] == "progress"
    ]


# --- POST /v1/runs ------------------------------------------------------------------------


async def test_create_returns_201_with_location_and_run_fields(
    service: Service, client: httpx.AsyncClient
) -> None:
    response = await client.post(service.url("/v1/runs"), json={"question": "What is up?"})
    assert response.status_code == 201
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    run_id = body["id"]
    assert re.fullmatch(r"[0-9a-f]{16}", run_id)
    assert response.headers["location"] == f"/v1/runs/{run_id}"
    assert body["status"] == "queued"
    assert body["question"] == "What is up?"
    assert body["events_url"] == f"/v1/runs/{run_id}/events"
    assert body["options"] == {"breadth": 3, "max_sources": 8, "depth": 1}
    assert RFC3339_UTC.match(body["created_at"])
    created = datetime.fromisoformat(body["created_at"])
    assert created.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - created) < timedelta(minutes=1)
    await service.wait_done(run_id)


async def test_no_answer_is_kept_by_a_cache_or_sniffed(
    service: Service, client: httpx.AsyncClient
) -> None:
    """A run's snapshot, listing and recording are one owner's: no browser or proxy keeps them."""
    created = await client.post(service.url("/v1/runs"), json={"question": "What is up?"})
    run_id = created.json()["id"]
    await service.wait_done(run_id)
    answers = [created] + [
        await client.get(service.url(path))
        for path in (
            f"/v1/runs/{run_id}",
            "/v1/runs",
            f"/v1/runs/{run_id}/recording",
            "/v1/session",
            "/healthz",
        )
    ]
    for response in answers:
        assert response.status_code in (200, 201), response.request.url
        assert response.headers["cache-control"] == "no-store", response.request.url
        assert response.headers["x-content-type-options"] == "nosniff", response.request.url
    # What may be kept says how: the panel's files are revalidated by their ETag.
    panel = await client.get(service.url("/"))
    assert panel.headers["cache-control"] == "no-cache"
    assert panel.headers["x-content-type-options"] == "nosniff"


async def test_custom_options_are_kept_and_used(
    service: Service, client: httpx.AsyncClient
) -> None:
    response = await client.post(
        service.url("/v1/runs"),
        json={"question": "What is up?", "options": {"breadth": 1, "max_sources": 1}},
    )
    assert response.status_code == 201
    run_id = response.json()["id"]
    assert response.json()["options"] == {"breadth": 1, "max_sources": 1, "depth": 1}
    got = await listen(client, service.url(f"/v1/runs/{run_id}/events"))
    assert got.last[1]["status"] == "completed"
    assert len(got.last[1]["sources"]) == 1
    snapshot = await _snapshot(service, client, run_id)
    assert snapshot["options"] == {"breadth": 1, "max_sources": 1, "depth": 1}
    assert snapshot["plan"] == ["alpha"]


async def test_question_is_stripped(service: Service, client: httpx.AsyncClient) -> None:
    run_id = await service.create(client, "  \n What is up?\t ")
    await service.wait_done(run_id)
    assert (await _snapshot(service, client, run_id))["question"] == "What is up?"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ({"question": "q" * 2000}, "application/json"),
        ({"question": "x", "options": {"breadth": 8, "max_sources": 20}}, "application/json"),
        ({"question": "x", "options": {"breadth": 1, "max_sources": 1}}, "application/json"),
        ({"question": "x", "options": {}}, "application/json"),
        ({"question": "x"}, "application/json; charset=utf-8"),
    ],
    ids=["question-2000", "upper-bounds", "lower-bounds", "empty-options", "charset"],
)
async def test_inputs_at_the_limits_are_accepted(
    service: Service, client: httpx.AsyncClient, body: dict[str, Any], content_type: str
) -> None:
    response = await client.post(
        service.url("/v1/runs"), content=_json_body(body), headers={"Content-Type": content_type}
    )
    assert response.status_code == 201, response.text
    await service.wait_done(response.json()["id"])


# --- every bad input is a problem ---------------------------------------------------------


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in BAD_REQUESTS])
async def test_bad_request_gets_a_problem_naming_what_is_wrong(
    service: Service, client: httpx.AsyncClient, case: Bad
) -> None:
    response = await case.send(client, service)
    assert_problem(response, case.status, field=case.field, says=case.says)
    if case.allow is not None:
        assert {m.strip() for m in response.headers["allow"].split(",")} == case.allow


async def test_bad_input_loses_nothing(service: Service, client: httpx.AsyncClient) -> None:
    """After every bad request above on one service, a normal run completes and is the only one."""
    wrong = []
    for case in BAD_REQUESTS:
        response = await case.send(client, service)
        if response.status_code != case.status:
            wrong.append((case.name, response.status_code))
    run_id = await service.create(client)
    got = await listen(client, service.url(f"/v1/runs/{run_id}/events"))
    assert got.ended
    assert got.last[1]["status"] == "completed"
    assert got.last[1]["answer"] == service.llm.answer
    listing = await client.get(service.url("/v1/runs"))
    assert listing.status_code == 200, listing.text
    assert [run["id"] for run in listing.json()["runs"]] == [run_id]
    assert wrong == []


# --- 429 ----------------------------------------------------------------------------------


async def test_too_many_active_runs_is_429_until_one_finishes(
    make_service: MakeService, client: httpx.AsyncClient
) -> None:
    service = await make_service(max_active_runs=1)
    service.llm.hold_after = 1
    held = await service.create(client)
    await service.until_held()

    refused = await client.post(service.url("/v1/runs"), json={"question": "Another?"})
    assert_problem(refused, 429)
    assert re.fullmatch(r"[1-9][0-9]*", refused.headers["retry-after"])
    one_shot = await client.get(service.url("/v1/research"), params={"q": "Another?"})
    assert_problem(one_shot, 429)
    assert re.fullmatch(r"[1-9][0-9]*", one_shot.headers["retry-after"])
    listing = (await client.get(service.url("/v1/runs"))).json()
    assert [run["id"] for run in listing["runs"]] == [held]

    service.llm.release.set()
    await service.wait_done(held)
    again = await service.create(client, "Another?")
    await service.wait_done(again)


# --- GET /v1/runs/{id} ----------------------------------------------------------------------


async def test_snapshot_mid_synthesis_then_after_done(
    service: Service, client: httpx.AsyncClient
) -> None:
    service.llm.pieces = ["one ", "two ", "three ", "four."]
    service.llm.hold_after = 2
    run_id = await service.create(client)
    url = service.url(f"/v1/runs/{run_id}/events")
    so_far = await listen(client, url, stop=after_event("token", 2))
    await service.until_held()

    live = await _snapshot(service, client, run_id)
    assert live["id"] == run_id
    assert live["status"] == "running"
    assert live["phase"] == "synthesizing"
    assert live["plan"] == ["alpha", "beta"]
    found = [source for p in _progress(so_far) for source in p["sources"]]
    assert [s["url"] for s in live["sources"]] == [s["url"] for s in found]
    assert [s["id"] for s in live["sources"]] == [1, 2, 3, 4]
    # The same source shape during and after the run.
    assert all(set(s) == {"id", "title", "url", "snippet"} for s in live["sources"])
    assert live["answer"] == "one two " == so_far.text()
    assert live["event_count"] == len(so_far.events) == int(so_far.ids[-1].split(":")[1])
    assert live["events_url"] == f"/v1/runs/{run_id}/events"

    service.llm.release.set()
    await service.wait_done(run_id)
    full = await listen(client, url)
    done = await _snapshot(service, client, run_id)
    assert done["status"] == "completed"
    assert done["answer"] == service.llm.answer == full.last[1]["answer"]
    assert set(done["timings_ms"]) == TIMINGS
    assert all(isinstance(ms, int) and ms >= 0 for ms in done["timings_ms"].values())
    assert done["event_count"] == len(full.events)
    assert done["error"] is None
    assert done["sources"] == live["sources"]


# --- GET /v1/runs ---------------------------------------------------------------------------


async def test_listing_pages_newest_first_until_next_is_null(
    service: Service, client: httpx.AsyncClient
) -> None:
    created = []
    for n in range(5):
        run_id = await service.create(client, f"question {n}")
        await service.wait_done(run_id)
        created.append(run_id)

    seen: list[str] = []
    pages = []
    response = await client.get(service.url("/v1/runs"), params={"limit": "2"})
    while True:
        assert response.status_code == 200
        page = response.json()
        pages.append(len(page["runs"]))
        seen.extend(run["id"] for run in page["runs"])
        assert all(run["status"] == "completed" for run in page["runs"])
        if page["next"] is None:
            break
        response = await client.get(
            service.url("/v1/runs"), params={"limit": "2", "before": page["next"]}
        )
    assert pages == [2, 2, 1]
    assert seen == created[::-1]

    whole = (await client.get(service.url("/v1/runs"), params={"limit": "5"})).json()
    assert [run["id"] for run in whole["runs"]] == created[::-1]
    assert whole["next"] is None


async def test_listing_defaults_to_20_runs(service: Service, client: httpx.AsyncClient) -> None:
    created = [await service.create(client, f"question {n}") for n in range(21)]
    for run_id in created:
        await service.wait_done(run_id)
    first = (await client.get(service.url("/v1/runs"))).json()
    assert [run["id"] for run in first["runs"]] == created[:0:-1]
    assert first["next"] is not None
    rest = (await client.get(service.url("/v1/runs"), params={"before": first["next"]})).json()
    assert [run["id"] for run in rest["runs"]] == [created[0]]
    assert rest["next"] is None


# --- POST /v1/runs/{id}/cancel ----------------------------------------------------------------


async def test_cancel_stops_a_held_run_with_done_cancelled(
    service: Service, client: httpx.AsyncClient
) -> None:
    service.llm.pieces = ["a ", "b ", "c ", "d."]
    service.llm.hold_after = 2
    run_id = await service.create(client)
    listener = asyncio.create_task(listen(client, service.url(f"/v1/runs/{run_id}/events")))
    await service.until_held()

    response = await client.post(service.url(f"/v1/runs/{run_id}/cancel"))
    assert response.status_code == 202
    assert response.json() == {"id": run_id, "cancelling": True, "status": "running"}
    got = await listener
    assert got.ended
    assert got.names.count("done") == 1
    name, done = got.last
    assert name == "done"
    assert done["status"] == "cancelled"
    assert done["error"]["code"] == "cancelled"
    assert done["answer"] == "a b " == got.text()
    snapshot = await _snapshot(service, client, run_id)
    assert snapshot["status"] == "cancelled"
    assert snapshot["answer"] == "a b "

    again = await client.post(service.url(f"/v1/runs/{run_id}/cancel"))
    assert again.status_code == 202
    assert again.json() == {"id": run_id, "cancelling": False, "status": "cancelled"}


async def test_cancel_of_a_finished_run_changes_nothing(
    service: Service, client: httpx.AsyncClient
) -> None:
    run_id = await service.create(client)
    await service.wait_done(run_id)
    before = await _snapshot(service, client, run_id)
    response = await client.post(service.url(f"/v1/runs/{run_id}/cancel"))
    assert response.status_code == 202
    assert response.json() == {"id": run_id, "cancelling": False, "status": "completed"}
    assert await _snapshot(service, client, run_id) == before


# --- failures inside a run ------------------------------------------------------------------


async def test_one_failing_query_is_reported_and_the_run_completes(
    service: Service, client: httpx.AsyncClient
) -> None:
    service.search.results["beta"] = "the search backend is down"
    run_id = await service.create(client)
    got = await listen(client, service.url(f"/v1/runs/{run_id}/events"))
    by_query = {p["query"]: p for p in _progress(got)}
    assert "the search backend is down" in by_query["beta"]["error"]
    assert "error" not in by_query["alpha"]
    assert "error" not in got.names
    done = got.last[1]
    assert done["status"] == "completed"
    assert done["error"] is None
    assert {s["url"] for s in done["sources"]} == {h.url for h in default_hits("alpha")}


async def _failed(service: Service, client: httpx.AsyncClient) -> tuple[Received, str]:
    run_id = await service.create(client)
    got = await listen(client, service.url(f"/v1/runs/{run_id}/events"))
    assert got.ended
    assert got.names[-2:] == ["error", "done"]
    assert got.names.count("error") == 1
    done = got.last[1]
    assert done["status"] == "failed"
    assert done["error"]["code"] == got.data(-2)["code"]
    snapshot = await _snapshot(service, client, run_id)
    assert snapshot["status"] == "failed"
    assert snapshot["error"]["code"] == got.data(-2)["code"]
    return got, run_id


async def test_every_query_failing_fails_the_run_with_search_failed(
    service: Service, client: httpx.AsyncClient
) -> None:
    service.search.results.update({"alpha": "down", "beta": "down"})
    got, _ = await _failed(service, client)
    error = got.data(-2)
    assert error["code"] == "search_failed"
    assert error["phase"] == "searching"
    assert error["message"]
    assert "token" not in got.names


async def test_no_hits_at_all_fails_the_run_with_no_sources(
    service: Service, client: httpx.AsyncClient
) -> None:
    service.search.results.update({"alpha": [], "beta": []})
    got, _ = await _failed(service, client)
    error = got.data(-2)
    assert error["code"] == "no_sources"
    assert error["phase"] == "searching"
    assert got.last[1]["sources"] == []


async def test_llm_failing_mid_answer_fails_the_run_keeping_the_streamed_text(
    service: Service, client: httpx.AsyncClient
) -> None:
    service.llm.pieces = ["one ", "two ", "three ", "four."]
    service.llm.fail_with = "the model is overloaded"
    got, run_id = await _failed(service, client)
    error = got.data(-2)
    assert error["phase"] == "synthesizing"
    assert "the model is overloaded" in error["message"]
    assert got.last[1]["answer"] == "one two " == got.text()
    assert (await _snapshot(service, client, run_id))["answer"] == "one two "


# --- health -----------------------------------------------------------------------------------


async def test_healthz_is_ok(service: Service, client: httpx.AsyncClient) -> None:
    response = await client.get(service.url("/healthz"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"status": "ok"}
