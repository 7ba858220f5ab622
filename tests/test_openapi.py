"""The OpenAPI document: valid 3.1, true to the app's routes both ways, and to real responses.

Responses are captured from a real service (tests.conftest) over HTTP and each is checked
against the document (tests.openapi_check.check_response): its status is documented for the
operation, its required headers are there and valid, its content type is documented, and its
body is valid by the schema, an event stream event by event.
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator

import research_service
from research_service import __version__
from research_service.app import create_app
from research_service.problem_json import PROBLEM_TYPE_BASE
from research_service.settings import Settings
from tests.conftest import MakeService, Service
from tests.openapi_check import (
    DOCUMENT,
    assert_valid,
    check_response,
    check_webhook,
    embedded_components,
    load_document,
)
from tests.webhook_receiver import Receiver

METHODS: Final = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})
PACKAGE: Final = Path(research_service.__file__).resolve().parent
KEY: Final = "k" * 40
ADMIN: Final = "a" * 40
#: Slugs no request to this API gets: the replay server's refusal, the base class's own (every
#: error raised is a subclass with its slug), and the 500 that is a bug (never documented:
#: nothing a client sends may cause it).
NOT_THIS_API: Final = frozenset({"replay-only", "invalid-request", "internal"})


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return load_document()


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1.")
    OpenAPIV31SpecValidator(document).validate()


def test_the_document_names_this_release(document: dict[str, Any]) -> None:
    assert document["info"]["version"] == __version__


def test_the_event_and_recording_schemas_are_the_docs_schemas(document: dict[str, Any]) -> None:
    """The copies under components are docs/schemas' (`python -m tests.openapi_check`)."""
    schemas = document["components"]["schemas"]
    for name, schema in embedded_components().items():
        assert schemas.get(name) == schema, f"{name} differs: run python -m tests.openapi_check"


def _app_operations() -> set[tuple[str, str]]:
    app = create_app(Settings(store="memory"))
    return {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"  # aiohttp's automatic HEAD
    }


def _documented_operations(document: Mapping[str, Any]) -> set[tuple[str, str]]:
    return {
        (method, path)
        for path, item in document["paths"].items()
        for method in item
        if method in METHODS
    }


def test_every_route_of_the_app_is_documented(document: dict[str, Any]) -> None:
    missing = _app_operations() - _documented_operations(document)
    assert missing == set(), "routes the document lacks"


def test_every_documented_operation_is_a_route_of_the_app(document: dict[str, Any]) -> None:
    extra = _documented_operations(document) - _app_operations()
    assert extra == set(), "documented operations the app does not have"


def _slug_literals(tree: ast.AST, *, pairs: bool) -> Iterator[str]:
    """Problem slugs written in a module.

    `slug = "x"`, `slug="x"`, `PROBLEM_TYPE_BASE + "x"`, `(status, "x", …)` tuples, and (where
    `pairs`) `("x", …)` tuples, as the run stores' and problems.py's tables have them.
    """
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            if any(isinstance(t, ast.Name) and t.id == "slug" for t in node.targets):
                yield str(node.value.value)
        elif isinstance(node, ast.keyword) and node.arg == "slug":
            if isinstance(node.value, ast.Constant):
                yield str(node.value.value)
        elif (
            isinstance(node, ast.BinOp)
            and isinstance(node.left, ast.Name)
            and node.left.id == "PROBLEM_TYPE_BASE"
            and isinstance(node.right, ast.Constant)
        ):
            yield str(node.right.value)  # a problem written out whole
        elif isinstance(node, ast.Tuple) and len(node.elts) >= 2:
            first, second = node.elts[0], node.elts[1]
            if _is_status(first) and isinstance(second, ast.Constant) and _is_slug(second.value):
                yield str(second.value)
            elif pairs and isinstance(first, ast.Constant) and _is_slug(first.value):
                yield str(first.value)


def _is_status(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) is int and 400 <= node.value < 600


def _is_slug(value: object) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[a-z]+(-[a-z]+)+", value) is not None


def _raised_slugs() -> set[str]:
    """Every problem slug written in the package."""
    slugs: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        # Only the web layer and the run stores keep slugs in tables of pairs.
        pairs = path.parent.name in ("web", "runs")
        slugs.update(_slug_literals(ast.parse(path.read_text(encoding="utf-8")), pairs=pairs))
    return slugs


def test_the_problem_types_are_exactly_those_the_code_raises(document: dict[str, Any]) -> None:
    documented = {
        uri.removeprefix(PROBLEM_TYPE_BASE)
        for uri in document["components"]["schemas"]["ProblemType"]["enum"]
    }
    raised = _raised_slugs() - NOT_THIS_API
    assert {"storage-full", "uri-too-long", "cross-site-request", "not-ready"} <= raised
    assert documented == raised


# --- captured responses ---------------------------------------------------------------------


class Checked:
    """Requests to one service, each response checked against the document."""

    def __init__(self, service: Service, client: httpx.AsyncClient, document: dict[str, Any]):
        self.service = service
        self.client = client
        self.document = document
        self.seen: set[tuple[str, str, int]] = set()

    async def __call__(
        self, method: str, template: str, path: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        response = await self.client.request(method, self.service.url(path or template), **kwargs)
        check_response(
            self.document,
            method=method,
            path=template,
            status=response.status_code,
            headers=response.headers,
            body=response.content,
        )
        self.seen.add((method, template, response.status_code))
        return response


@pytest.fixture
async def checked(service: Service, client: httpx.AsyncClient, document: dict[str, Any]) -> Checked:
    return Checked(service, client, document)


async def test_a_run_its_snapshots_stream_recording_and_listing_match(checked: Checked) -> None:
    service = checked.service
    service.llm.hold_after = 1
    created = await checked(
        "POST", "/v1/runs", json={"question": "What is up?", "options": {"max_tokens": 50}}
    )
    assert created.status_code == 201
    run_id = created.json()["id"]
    run = f"/v1/runs/{run_id}"
    await service.until_held()
    assert (await checked("GET", "/v1/runs/{run_id}", run)).json()["status"] == "running"
    running = await checked("GET", "/v1/runs/{run_id}/recording", f"{run}/recording")
    assert running.status_code == 409
    assert (await checked("GET", "/v1/runs", params={"limit": 5})).status_code == 200
    service.llm.release.set()
    stream = await checked("GET", "/v1/runs/{run_id}/events", f"{run}/events")
    assert stream.status_code == 200
    last = stream.text.strip().split("\n\n")[-1].split("\n")[0].removeprefix("id: ")
    after = await checked(
        "GET", "/v1/runs/{run_id}/events", f"{run}/events", headers={"Last-Event-ID": last}
    )
    assert after.status_code == 204
    assert (await checked("GET", "/v1/runs/{run_id}", run)).json()["status"] == "completed"
    recording = await checked("GET", "/v1/runs/{run_id}/recording", f"{run}/recording")
    assert recording.status_code == 200
    assert (await checked("POST", "/v1/runs/{run_id}/cancel", f"{run}/cancel")).json() == {
        "id": run_id,
        "cancelling": False,
        "status": "completed",
    }
    not_asked = await checked("POST", "/v1/runs/{run_id}/plan", f"{run}/plan", json={})
    assert not_asked.status_code == 409
    listing = await checked("GET", "/v1/runs")
    assert [entry["id"] for entry in listing.json()["runs"]] == [run_id]


async def test_a_reviewed_run_and_its_decision_match(checked: Checked) -> None:
    created = await checked(
        "POST", "/v1/runs", json={"question": "What is up?", "options": {"review_plan": True}}
    )
    run = f"/v1/runs/{created.json()['id']}"
    opened = checked.client.stream("GET", checked.service.url(f"{run}/events"))
    async with opened as stream:
        lines = stream.aiter_lines()
        async for line in lines:
            if '"status":"review"' in line:
                break
        waiting = await checked("GET", "/v1/runs/{run_id}", run)
        assert waiting.json()["awaiting"] == "plan_review"
        listed = await checked("GET", "/v1/runs", params={"awaiting": "plan_review"})
        assert len(listed.json()["runs"]) == 1
        edited = await checked(
            "POST", "/v1/runs/{run_id}/plan", f"{run}/plan", json={"queries": ["a"]}
        )
        assert edited.status_code == 202
        again = await checked("POST", "/v1/runs/{run_id}/plan", f"{run}/plan")
        assert again.status_code == 409
    await checked.service.wait_done(run.rsplit("/", 1)[1])
    whole = await checked("GET", "/v1/runs/{run_id}/events", f"{run}/events")
    assert '"status":"reviewed"' in whole.text


async def test_a_cancelled_one_shot_research_run_matches(checked: Checked) -> None:
    checked.service.llm.hold_after = 1
    params = {"q": "What is up?", "breadth": "1"}
    opened = checked.client.stream("GET", checked.service.url("/v1/research"), params=params)
    async with opened as stream:
        async for line in stream.aiter_lines():
            if line.startswith("id: "):
                run_id = line.removeprefix("id: ").split(":")[0]
                break
        await checked.service.until_held()
        cancel = await checked(
            "POST",
            "/v1/runs/{run_id}/cancel",
            f"/v1/runs/{run_id}/cancel",
            content=b"{}",
            headers={"Content-Type": "application/json"},
        )
        assert cancel.json()["cancelling"] is True
    resumed = await checked(
        "GET", "/v1/research", params={**params, "last_event_id": f"{run_id}:1"}
    )
    assert resumed.status_code == 200
    assert '"status":"cancelled"' in resumed.text


ANSWERS: Final[list[tuple[str, str, str | None, dict[str, Any], int]]] = [
    (
        "POST",
        "/v1/runs",
        None,
        {"content": b"{", "headers": {"Content-Type": "application/json"}},
        400,
    ),
    ("POST", "/v1/runs", None, {"json": {"question": " "}}, 400),
    ("POST", "/v1/runs", None, {"json": {"question": "q", "options": {"breadth": 9}}}, 400),
    (
        "POST",
        "/v1/runs",
        None,
        {"json": {"question": "q", "options": {"webhook": {"url": "ftp://x"}}}},
        400,
    ),
    ("POST", "/v1/runs", None, {"data": {"question": "q"}}, 415),
    ("POST", "/v1/runs", None, {"json": {"question": "q" * 70000}}, 413),
    (
        "POST",
        "/v1/runs",
        None,
        {"json": {"question": "q"}, "headers": {"Origin": "https://elsewhere.example"}},
        403,
    ),
    ("GET", "/v1/runs", None, {"params": {"page": "2"}}, 400),
    ("GET", "/v1/runs", None, {"params": {"before": "nope"}}, 400),
    ("GET", "/v1/runs", None, {"headers": {"Host": "rebind.attacker.example"}}, 421),
    ("GET", "/v1/runs/{run_id}", "/v1/runs/0123456789abcdef", {}, 404),
    ("GET", "/v1/runs/{run_id}", "/v1/runs/nope", {}, 404),
    ("GET", "/v1/runs/{run_id}/events", "/v1/runs/0123456789abcdef/events", {}, 404),
    (
        "POST",
        "/v1/runs/{run_id}/cancel",
        "/v1/runs/0123456789abcdef/cancel",
        {"content": b"", "headers": {"Content-Type": "text/plain"}},
        415,
    ),
    (
        "POST",
        "/v1/runs/{run_id}/plan",
        "/v1/runs/0123456789abcdef/plan",
        {"json": {"queries": [], "feedback": "x"}},
        400,
    ),
    ("GET", "/v1/runs/{run_id}/recording", "/v1/runs/0123456789abcdef/recording", {}, 404),
    ("GET", "/v1/research", None, {}, 400),
    ("GET", "/v1/research", None, {"params": {"q": "x", "last_event_id": "banana"}}, 400),
    (
        "GET",
        "/v1/research",
        None,
        {"params": {"q": "x"}, "headers": {"Sec-Fetch-Site": "cross-site"}},
        403,
    ),
    ("GET", "/healthz", None, {}, 200),
    ("GET", "/healthz", None, {"params": {"verbose": "1"}}, 400),
    ("GET", "/readyz", None, {}, 200),
    ("GET", "/metrics", None, {}, 200),
    ("GET", "/v1/session", None, {}, 200),
    ("POST", "/v1/session", None, {"json": {"x": 1}}, 400),
    ("POST", "/v1/session", None, {}, 200),
    ("DELETE", "/v1/session", None, {}, 204),
    ("GET", "/", None, {"params": {"run": "0123456789abcdef"}}, 200),
    ("GET", "/static/{name}", "/static/panel.js", {}, 200),
    ("GET", "/static/{name}", "/static/panel.css", {}, 200),
    ("GET", "/static/{name}", "/static/favicon.svg", {}, 200),
    ("GET", "/static/{name}", "/static/nope.js", {}, 404),
    ("GET", "/static/{name}", "/static/openapi.json", {}, 404),
    ("GET", "/openapi.json", None, {}, 200),
    ("GET", "/openapi.json", None, {"params": {"v": "1"}}, 400),
]


@pytest.mark.parametrize("case", ANSWERS, ids=lambda c: f"{c[0]} {c[2] or c[1]} {c[4]}")
async def test_each_answer_matches(
    checked: Checked, case: tuple[str, str, str | None, dict[str, Any], int]
) -> None:
    method, template, path, kwargs, status = case
    response = await checked(method, template, path, **kwargs)
    assert response.status_code == status, response.text


async def test_not_modified_answers_match(checked: Checked) -> None:
    for template, path in (
        ("/", "/"),
        ("/static/{name}", "/static/panel.js"),
        ("/openapi.json", None),
    ):
        first = await checked("GET", template, path)
        etag = first.headers["ETag"]
        # The tag itself, weak, in a list, or any tag at all (RFC 9110 13.1.2).
        for asked in (etag, f"W/{etag}", f'"other", {etag}', "*"):
            again = await checked("GET", template, path, headers={"If-None-Match": asked})
            assert again.status_code == 304, asked
            assert again.headers["ETag"] == etag
        for asked in ('"other"', etag[:-2] + '"', etag[:-1] + 'x"'):
            changed = await checked("GET", template, path, headers={"If-None-Match": asked})
            assert changed.status_code == 200, asked


async def test_too_many_runs_matches(
    make_service: MakeService, client: httpx.AsyncClient, document: dict[str, Any]
) -> None:
    service = await make_service(max_active_runs=1)
    service.llm.hold_after = 1
    checked = Checked(service, client, document)
    assert (await checked("POST", "/v1/runs", json={"question": "one"})).status_code == 201
    refused = await checked("POST", "/v1/runs", json={"question": "two"})
    assert refused.status_code == 429
    refused = await checked("GET", "/v1/research", params={"q": "two"})
    assert refused.status_code == 429
    service.llm.release.set()


async def test_answers_with_api_keys_match(
    make_service: MakeService, client: httpx.AsyncClient, document: dict[str, Any], tmp_path: Path
) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text(f"alice:{KEY}\nops:{ADMIN}:admin\n", encoding="utf-8")
    service = await make_service(auth="keys", api_keys_file=keys)
    checked = Checked(service, client, document)
    alice = {"Authorization": f"Bearer {KEY}"}
    for template in ("/v1/runs", "/v1/session", "/metrics"):
        refused = await checked("GET", template)
        assert refused.status_code == 401
    bad = await checked("GET", "/v1/runs", headers={"Authorization": "Basic x"})
    assert bad.headers["WWW-Authenticate"].endswith('error="invalid_request"')
    created = await checked("POST", "/v1/runs", json={"question": "What is up?"}, headers=alice)
    run_id = created.json()["id"]
    (token,) = parse_qs(urlsplit(created.json()["events_url"]).query)["token"]
    run = f"/v1/runs/{run_id}"
    by_token = await checked("GET", "/v1/runs/{run_id}", run, params={"token": token})
    assert by_token.json()["events_url"].endswith(token)
    streamed = await checked(
        "GET", "/v1/runs/{run_id}/events", f"{run}/events", params={"token": token}
    )
    assert streamed.status_code == 200
    elsewhere = await checked("GET", "/v1/runs", params={"token": token})
    assert elsewhere.status_code == 403
    signed_in = await checked("POST", "/v1/session", json={"api_key": KEY})
    assert signed_in.headers["Set-Cookie"].startswith("research_session=")
    session = {"Cookie": signed_in.headers["Set-Cookie"].split(";")[0]}
    assert (await checked("GET", "/v1/session", headers=session)).json()["name"] == "alice"
    unknown = await checked("POST", "/v1/session", json={"api_key": "x" * 40})
    assert unknown.status_code == 401
    assert (await checked("GET", "/metrics", headers=alice)).status_code == 403
    admin = {"Authorization": f"Bearer {ADMIN}"}
    assert (await checked("GET", "/metrics", headers=admin)).status_code == 200
    recording = await checked(
        "GET", "/v1/runs/{run_id}/recording", f"{run}/recording", headers=alice
    )
    assert recording.status_code == 200
    assert (await checked("GET", "/openapi.json")).status_code == 200  # open, like /healthz


async def test_the_served_document_is_the_file_in_the_repository(checked: Checked) -> None:
    response = await checked("GET", "/openapi.json")
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.content == DOCUMENT.read_bytes()
    assert json.loads(response.content)["openapi"] == "3.1.0"


async def test_a_run_with_a_webhook_and_its_notification_match(
    make_service: MakeService, client: httpx.AsyncClient, document: dict[str, Any]
) -> None:
    """The webhook option as created and shown, and the POST the receiver gets."""
    service = await make_service(fetch_allow="127.0.0.1", webhook_retry_s=0.05)
    checked = Checked(service, client, document)
    async with Receiver() as receiver:
        body = {"question": "Why hook?", "options": {"webhook": {"url": receiver.url()}}}
        created = await checked("POST", "/v1/runs", json=body)
        assert created.json()["options"]["webhook"] == {"url": receiver.url()}
        (sent,) = await receiver.wait_for(1)
        check_webhook(document, name="runEnded", headers=sent.headers, body=sent.body)
        assert sent.json["data"]["run_id"] == created.json()["id"]
    snapshot = await checked("GET", "/v1/runs/{run_id}", f"/v1/runs/{created.json()['id']}")
    assert [hook["url"] for hook in snapshot.json()["webhooks"]] == [receiver.url()]


def _concrete(path: str) -> str:
    """A path template with real-looking values in its parameters."""
    return path.replace("{run_id}", "0123456789abcdef").replace("{name}", "panel.js")


async def test_a_method_no_path_takes_is_405_allowing_just_the_documented_ones(
    checked: Checked, document: dict[str, Any]
) -> None:
    for path, item in document["paths"].items():
        response = await checked.client.request("PATCH", checked.service.url(_concrete(path)))
        assert response.status_code == 405, path
        allowed = set(response.headers["Allow"].split(", ")) - {"HEAD"}
        assert allowed == {method.upper() for method in item if method in METHODS}, path
        body = response.json()
        assert body["type"] == PROBLEM_TYPE_BASE + "method-not-allowed"
        assert_valid(document, "/components/schemas/Problem", body)


async def test_protocol_errors_are_the_documented_problems(checked: Checked) -> None:
    too_long = await checked("GET", "/v1/runs", params={"x": "y" * 9000})
    assert too_long.status_code == 414
    too_large = await checked("GET", "/v1/runs", headers={"X-Big": "y" * 9000})
    assert too_large.status_code == 431


async def test_a_slow_body_is_the_documented_408(
    make_service: MakeService, document: dict[str, Any]
) -> None:
    service = await make_service(body_timeout_s=0.2)
    port = service.server.port
    assert port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"POST /v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{"
        )
        await writer.drain()
        async with asyncio.timeout(10):
            raw = await reader.read()
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    status = int(status_line.split()[1])
    assert status == 408
    check_response(
        document, method="POST", path="/v1/runs", status=status, headers=headers, body=body
    )


def test_every_component_is_used(document: dict[str, Any]) -> None:
    """No schema, response or header is left behind by an edit."""
    text = json.dumps(document)
    unused = [
        f"{kind}/{name}"
        for kind in ("schemas", "responses", "headers")
        for name in document["components"][kind]
        # Referenced whole, or by a pointer into it (`DoneEvent/properties/usage`).
        if f'"#/components/{kind}/{name}"' not in text
        and f"#/components/{kind}/{name}/" not in text
    ]
    assert unused == []
