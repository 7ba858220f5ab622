"""Browser-origin safety over real HTTP: the Host allow-list, cross-site writes, and CORS."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
from multidict import CIMultiDict

from tests import nginx
from tests.conftest import MakeService, Service

PROBLEMS: Final = "https://research-service.dev/problems/"
PROBLEM_JSON: Final = "application/problem+json"
QUESTION: Final = {"question": "Is this page allowed to ask?"}
ALICE: Final = "alice-0123456789abcdefghijklmnopqrstuv"
EVIL: Final = "https://evil.example"
APP: Final = "https://app.example"
REBOUND: Final = "rebind.attacker.example"
#: A browser's answer to an `<img>`, `<form>` or fetch() from a page of another site.
CROSS_SITE: Final = {"Sec-Fetch-Site": "cross-site"}
IO_TIMEOUT_S: Final = 10.0


# -- raw HTTP: the exact Host bytes a browser (or an attacker's page) would send --------------


@dataclass
class Raw:
    """A response read off the socket as it came."""

    status: int
    headers: CIMultiDict[str]
    body: bytes

    def problem(self, status: int, slug: str) -> dict[str, Any]:
        assert self.status == status, self.body
        assert self.headers["Content-Type"] == PROBLEM_JSON
        problem: dict[str, Any] = json.loads(self.body)
        assert problem["type"] == PROBLEMS + slug
        assert problem["status"] == status
        assert problem["detail"]
        return problem


async def send_raw(
    service: Service,
    method: str,
    path: str,
    *,
    host: bytes | None,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    version: str = "1.1",
) -> Raw:
    """One request on a fresh connection, with exactly this Host line (None: no Host at all)."""
    lines = [f"{method} {path} HTTP/{version}".encode()]
    if host is not None:
        lines.append(b"Host: " + host)
    lines += [f"{name}: {value}".encode() for name, value in (headers or {}).items()]
    if body is not None:
        lines += [b"Content-Type: application/json", f"Content-Length: {len(body)}".encode()]
    lines.append(b"Connection: close")
    port = service.server.port
    assert port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + (body or b""))
        async with asyncio.timeout(IO_TIMEOUT_S):
            data = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, content = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    fields = CIMultiDict(line.split(": ", 1) for line in header_lines)
    return Raw(int(status_line.split()[1]), fields, content)


def port_of(service: Service) -> int:
    assert service.server.port is not None
    return service.server.port


def own_origin(service: Service) -> str:
    """The origin of the service's own panel, as a browser serializes it."""
    return f"http://127.0.0.1:{port_of(service)}"


async def nothing_created(service: Service) -> None:
    assert await service.manager.log.list_runs(limit=10) == []
    assert service.manager.active_runs == 0
    assert service.search.calls == []


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["type"] == PROBLEMS + slug
    assert body["status"] == status
    assert body["detail"]
    return body


def cors_headers(headers: Mapping[str, str]) -> list[str]:
    return [name for name in headers if name.lower().startswith("access-control-")]


def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys.txt"
    path.write_text(f"alice:{ALICE}\n", encoding="utf-8")
    return path


# -- the Host allow-list (DNS rebinding) ------------------------------------------------------

#: Every kind of route a rebinding page would aim at: the API (read, write, one-shot), the panel.
ENDPOINTS: Final = pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/runs", None),
        ("POST", "/v1/runs", json.dumps(QUESTION).encode()),
        ("GET", "/v1/research?q=rebound", None),
        ("GET", "/", None),
    ],
    ids=["list", "create", "one-shot", "panel"],
)
#: Host values that are not this service's names, however they are spelled.
FOREIGN_HOSTS: Final = pytest.mark.parametrize(
    "host",
    [
        REBOUND.encode(),
        REBOUND.encode() + b":8080",
        REBOUND.upper().encode(),
        b"localhost.attacker.example",
        b"127.0.0.1.nip.io",
        b"127.0.0.1.nip.io:8080",
        b"evil.example#@localhost",
        b"localhost@evil.example",
        b"localhost:8080@evil.example",
        b"localhost:notaport",
        b"[::1",
        b"[::1]evil.example",
        b"",
        b"  ",
        b"garbage value",
        b"%6c%6f%63%61%6c%68%6f%73%74",
        # Not ASCII, though Python's str.strip() takes U+00A0 NO-BREAK SPACE for a space.
        b"localhost\xc2\xa0",
        "l\u014dcalhost".encode(),
    ],
)


@ENDPOINTS
@FOREIGN_HOSTS
async def test_a_foreign_host_is_misdirected_and_creates_nothing(
    service: Service, method: str, path: str, body: bytes | None, host: bytes
) -> None:
    answer = await send_raw(service, method, path, host=host, body=body)

    problem = answer.problem(421, "host-not-allowed")
    assert "--allowed-hosts" in problem["detail"]
    assert cors_headers(answer.headers) == []
    await nothing_created(service)


@ENDPOINTS
async def test_a_foreign_host_is_misdirected_even_with_a_key(
    make_service: MakeService, tmp_path: Path, method: str, path: str, body: bytes | None
) -> None:
    """A key does not make a rebound name this service's (nor does it leak that it is)."""
    service = await make_service(auth="keys", api_keys_file=keys_file(tmp_path))
    answer = await send_raw(
        service,
        method,
        path,
        host=REBOUND.encode(),
        headers={"Authorization": f"Bearer {ALICE}"},
        body=body,
    )
    answer.problem(421, "host-not-allowed")
    assert "WWW-Authenticate" not in answer.headers
    await nothing_created(service)


@pytest.mark.parametrize(
    "host",
    [
        b"127.0.0.1:{port}",
        b"localhost:{port}",
        b"LOCALHOST:{port}",
        b"LocalHost",
        b"localhost.",
        b"localhost.:{port}",
        b"127.0.0.1",
        b"[::1]:8080",
        b"[::1]",
    ],
)
async def test_the_loopback_names_are_served_in_any_spelling(service: Service, host: bytes) -> None:
    answer = await send_raw(
        service, "GET", "/v1/runs", host=host.replace(b"{port}", b"%d" % port_of(service))
    )
    assert answer.status == 200, answer.body
    assert json.loads(answer.body) == {"runs": [], "next": None}


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
@pytest.mark.parametrize("host", [REBOUND.encode(), b"10.0.0.7:8080", b"garbage value"])
async def test_health_checks_answer_to_any_host(service: Service, path: str, host: bytes) -> None:
    """Load balancers and orchestrators probe by address, whatever name the service has, and
    Prometheus scrapes each node by its own (docs/operations.md's `prometheus.yml`)."""
    answer = await send_raw(service, "GET", path, host=host)
    assert answer.status == 200, answer.body


async def test_an_http_1_0_request_without_a_host_is_served(service: Service) -> None:
    """HTTP/1.0 clients may send none; no browser does, so no rebinding page can."""
    answer = await send_raw(service, "GET", "/v1/runs", host=None, version="1.0")
    assert answer.status == 200, answer.body


async def test_an_http_1_1_request_without_a_host_is_malformed(service: Service) -> None:
    """HTTP/1.1 requires Host: a short problem, not a server error."""
    answer = await send_raw(service, "GET", "/v1/runs", host=None)
    answer.problem(400, "malformed-request")


@pytest.mark.parametrize(
    ("host", "served"),
    [
        (b"research.example.com", True),
        (b"research.example.com:443", True),
        (b"RESEARCH.example.com.", True),
        (b"corp.example", True),
        (b"sub.corp.example", True),
        (b"a.b.corp.example:8443", True),
        (b"localhost", False),
        (b"127.0.0.1", False),
        (b"[::1]:8080", False),
        (b"example.com", False),
        (b"www.research.example.com", False),
        (b"research.example.com.attacker.example", False),
        (b"evilcorp.example", False),
        (b"corp.example.attacker.example", False),
        (b"kiosk.example", True),
        # U+212A KELVIN SIGN lowercases to an ASCII "k": a look-alike is not the name.
        ("\u212aiosk.example".encode(), False),
    ],
)
async def test_allowed_hosts_admits_exactly_the_listed_names(
    make_service: MakeService, host: bytes, served: bool
) -> None:
    service = await make_service(allowed_hosts="research.example.com, .corp.example, kiosk.example")

    answer = await send_raw(service, "GET", "/v1/runs", host=host)

    if served:
        assert answer.status == 200, answer.body
    else:
        answer.problem(421, "host-not-allowed")


@pytest.mark.parametrize(
    "host", [REBOUND.encode(), b"10.0.0.7:8080", b"localhost", b"garbage value", b""]
)
async def test_a_star_in_allowed_hosts_admits_any_host(
    make_service: MakeService, host: bytes
) -> None:
    service = await make_service(allowed_hosts="*")
    answer = await send_raw(service, "GET", "/v1/runs", host=host)
    assert answer.status == 200, answer.body


async def test_a_write_through_the_proxy_from_its_own_page_is_same_origin(
    service: Service, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """Behind the example nginx the page's origin is the proxy's; X-Forwarded-Host says so."""
    async with nginx.running(tmp_path / "nginx", upstream_port=port_of(service)) as proxy:
        page_origin = f"http://127.0.0.1:{proxy.prefix_port}"
        created = await client.post(
            proxy.url("v1/runs"), json=QUESTION, headers={"Origin": page_origin}
        )
        # The service's own address is another origin from the page's point of view.
        upstream_origin = await client.post(
            proxy.url("v1/runs"), json=QUESTION, headers={"Origin": own_origin(service)}
        )
        rebound = await client.get(proxy.url("v1/runs"), headers={"Host": REBOUND})

    assert created.status_code == 201, created.text
    assert_problem(upstream_origin, 403, "cross-site-request")
    assert_problem(rebound, 421, "host-not-allowed")
    await service.wait_done(created.json()["id"])
    assert len(await service.manager.log.list_runs(limit=10)) == 1


# -- cross-site writes, with auth off and on --------------------------------------------------


@dataclass
class Target:
    """A service under test and the credentials its API wants (none with auth off)."""

    service: Service
    creds: dict[str, str]

    def url(self, path: str) -> str:
        return self.service.url(path)

    async def held_run(self, client: httpx.AsyncClient) -> str:
        """A run whose model holds mid-answer until the test releases it."""
        self.service.llm.hold_after = 1
        response = await client.post(self.url("/v1/runs"), json=QUESTION, headers=self.creds)
        assert response.status_code == 201, response.text
        await self.service.until_held()
        run_id: str = response.json()["id"]
        return run_id

    async def running(self, run_id: str) -> bool:
        return not (await self.service.manager.state(run_id)).finished


@pytest.fixture(params=["auth-off", "auth-keys"])
async def target(
    request: pytest.FixtureRequest, make_service: MakeService, tmp_path: Path
) -> AsyncIterator[Target]:
    if request.param == "auth-off":
        found = Target(await make_service(cors_origins=APP), {})
    else:
        service = await make_service(
            auth="keys", api_keys_file=keys_file(tmp_path), cors_origins=APP
        )
        found = Target(service, {"Authorization": f"Bearer {ALICE}"})
    yield found
    found.service.llm.release.set()


#: What a page on another site sends, in each way a browser can say so.
CROSS_SITE_SIGNALS: Final = pytest.mark.parametrize(
    "signal",
    [
        {"Origin": EVIL},
        {"Origin": EVIL, "Sec-Fetch-Site": "cross-site"},
        {"Origin": "null"},
        {"Origin": "http://127.0.0.1:1"},
        {"Origin": "http://localhost"},
        {"Origin": f"{APP}.evil.example"},
        {"Origin": "garbage"},
        CROSS_SITE,
        # Another port of the same host is the same site but another origin (a dev server).
        {"Sec-Fetch-Site": "same-site"},
    ],
    ids=[
        "origin",
        "origin-and-fetch-site",
        "null-origin",
        "other-port",
        "other-loopback-name",
        "listed-origin-as-prefix",
        "garbage-origin",
        "fetch-site-only",
        "same-site-only",
    ],
)


@CROSS_SITE_SIGNALS
async def test_a_cross_site_page_cannot_create_a_run(
    target: Target, client: httpx.AsyncClient, signal: dict[str, str]
) -> None:
    response = await client.post(
        target.url("/v1/runs"), json=QUESTION, headers=target.creds | signal
    )
    assert_problem(response, 403, "cross-site-request")
    assert cors_headers(response.headers) == []
    await nothing_created(target.service)


@CROSS_SITE_SIGNALS
async def test_a_cross_site_page_cannot_start_a_one_shot_run(
    target: Target, client: httpx.AsyncClient, signal: dict[str, str]
) -> None:
    """`GET /v1/research` starts a run: an `<img>` or EventSource elsewhere must not."""
    response = await client.get(
        target.url("/v1/research"), params={"q": "spend"}, headers=target.creds | signal
    )
    assert_problem(response, 403, "cross-site-request")
    await nothing_created(target.service)


@CROSS_SITE_SIGNALS
async def test_a_cross_site_page_cannot_cancel_a_run(
    target: Target, client: httpx.AsyncClient, signal: dict[str, str]
) -> None:
    run_id = await target.held_run(client)
    response = await client.post(
        target.url(f"/v1/runs/{run_id}/cancel"), headers=target.creds | signal
    )
    assert_problem(response, 403, "cross-site-request")
    assert await target.running(run_id)


@CROSS_SITE_SIGNALS
@pytest.mark.parametrize("method", ["DELETE", "POST"])
async def test_a_cross_site_page_cannot_sign_in_or_out(
    target: Target, client: httpx.AsyncClient, signal: dict[str, str], method: str
) -> None:
    response = await client.request(
        method, target.url("/v1/session"), json={"api_key": ALICE}, headers=signal
    )
    assert_problem(response, 403, "cross-site-request")
    assert "Set-Cookie" not in response.headers


#: What the service's own panel (or a terminal client, or a listed origin) sends.
SAME_ORIGIN_SIGNALS: Final = pytest.mark.parametrize(
    "signal",
    [
        {"Origin": "{own}"},
        {"Origin": "{own}", "Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"},
        {},
        {"Origin": APP, "Sec-Fetch-Site": "cross-site"},
    ],
    ids=["own-origin", "own-origin-and-site", "same-origin", "typed-url", "no-browser", "listed"],
)


def with_own(signal: dict[str, str], target: Target) -> dict[str, str]:
    return {k: v.replace("{own}", own_origin(target.service)) for k, v in signal.items()}


@SAME_ORIGIN_SIGNALS
async def test_the_own_origin_and_listed_origins_create_runs(
    target: Target, client: httpx.AsyncClient, signal: dict[str, str]
) -> None:
    headers = target.creds | with_own(signal, target)
    response = await client.post(target.url("/v1/runs"), json=QUESTION, headers=headers)
    assert response.status_code == 201, response.text
    await target.service.wait_done(response.json()["id"])


@SAME_ORIGIN_SIGNALS
async def test_the_own_origin_and_listed_origins_cancel_runs(
    target: Target, client: httpx.AsyncClient, signal: dict[str, str]
) -> None:
    run_id = await target.held_run(client)
    headers = target.creds | with_own(signal, target)
    response = await client.post(target.url(f"/v1/runs/{run_id}/cancel"), headers=headers)
    assert response.status_code == 202, response.text
    await target.service.wait_done(run_id)
    assert (await target.service.manager.state(run_id)).status == "cancelled"


@SAME_ORIGIN_SIGNALS
async def test_the_own_origin_and_listed_origins_start_one_shot_runs(
    target: Target, client: httpx.AsyncClient, signal: dict[str, str]
) -> None:
    headers = target.creds | with_own(signal, target)
    async with client.stream(
        "GET", target.url("/v1/research"), params={"q": "mine"}, headers=headers
    ) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        lines = [line async for line in response.aiter_lines()]
    assert "event: done" in lines


#: What an HTML form can post (and a "simple" fetch() without a preflight).
FORM_BODIES: Final = pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain", b""),
        ("text/plain", b"{}"),
        ("text/plain;charset=UTF-8", b'{"x": 1}'),
        ("TEXT/PLAIN", b""),
        ("application/x-www-form-urlencoded", b""),
        ("application/x-www-form-urlencoded", b"a=b"),
        ("multipart/form-data; boundary=xyz", b"--xyz--\r\n"),
    ],
)


@FORM_BODIES
@pytest.mark.parametrize(
    "signal", [{}, {"Origin": "{own}"}, {"Sec-Fetch-Site": "same-origin"}], ids=str
)
async def test_a_form_post_cannot_cancel_a_run_even_same_origin(
    target: Target,
    client: httpx.AsyncClient,
    content_type: str,
    body: bytes,
    signal: dict[str, str],
) -> None:
    """No form content type is taken, even empty: a browser too old to send Origin is safe."""
    run_id = await target.held_run(client)
    headers = target.creds | with_own(signal, target) | {"Content-Type": content_type}
    response = await client.post(
        target.url(f"/v1/runs/{run_id}/cancel"), content=body, headers=headers
    )
    assert_problem(response, 415, "unsupported-media-type")
    assert await target.running(run_id)


@FORM_BODIES
async def test_a_cross_site_form_post_to_cancel_is_refused_as_cross_site(
    target: Target, client: httpx.AsyncClient, content_type: str, body: bytes
) -> None:
    run_id = await target.held_run(client)
    headers = target.creds | {"Origin": EVIL, "Content-Type": content_type}
    response = await client.post(
        target.url(f"/v1/runs/{run_id}/cancel"), content=body, headers=headers
    )
    assert_problem(response, 403, "cross-site-request")
    assert await target.running(run_id)


async def test_a_cancel_with_a_field_is_invalid_and_the_run_goes_on(
    target: Target, client: httpx.AsyncClient
) -> None:
    run_id = await target.held_run(client)
    response = await client.post(
        target.url(f"/v1/runs/{run_id}/cancel"), json={"x": 1}, headers=target.creds
    )
    assert_problem(response, 400, "invalid-input")
    assert await target.running(run_id)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [(None, b""), ("application/json", b"{}"), ("application/json", b"")],
    ids=["no-body", "empty-object", "json-type-no-body"],
)
async def test_a_cancel_without_a_body_or_with_an_empty_object_is_accepted(
    target: Target, client: httpx.AsyncClient, content_type: str | None, body: bytes
) -> None:
    run_id = await target.held_run(client)
    headers = target.creds | ({} if content_type is None else {"Content-Type": content_type})
    response = await client.post(
        target.url(f"/v1/runs/{run_id}/cancel"), content=body, headers=headers
    )
    assert response.status_code == 202, response.text
    await target.service.wait_done(run_id)
    assert not await target.running(run_id)


# -- CORS for the origins in --cors-origins ----------------------------------------------------


@pytest.fixture
async def cors_service(make_service: MakeService) -> Service:
    return await make_service(cors_origins=f"{APP}, https://other.example")


def assert_allowed_for(response: httpx.Response, origin: str) -> None:
    """`origin`'s page may read this answer, with credentials, and its Location."""
    assert response.headers["Access-Control-Allow-Origin"] == origin
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    exposed = {h.strip() for h in response.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"Location", "Retry-After", "WWW-Authenticate"} <= exposed
    assert "Origin" in {v.strip() for v in response.headers.get_list("Vary", split_commas=True)}


async def test_a_listed_origins_preflight_gets_exactly_its_allowances(
    cors_service: Service, client: httpx.AsyncClient
) -> None:
    response = await client.options(
        cors_service.url("/v1/runs"),
        headers={
            "Origin": APP,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert response.status_code == 204, response.text
    assert response.content == b""
    headers = response.headers
    assert headers["Access-Control-Allow-Origin"] == APP
    assert headers["Access-Control-Allow-Credentials"] == "true"
    methods = {m.strip() for m in headers["Access-Control-Allow-Methods"].split(",")}
    assert methods == {"GET", "POST", "DELETE"}
    allowed = {h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")}
    assert allowed == {"authorization", "content-type", "last-event-id"}
    assert int(headers["Access-Control-Max-Age"]) > 0
    assert "Origin" in {v.strip() for v in headers.get_list("Vary", split_commas=True)}


@pytest.mark.parametrize(
    "origin",
    [EVIL, "null", f"{APP}.evil.example", "http://app.example", f"{APP}:8443", "garbage"],
)
async def test_an_unlisted_origins_preflight_is_refused_without_cors_headers(
    cors_service: Service, client: httpx.AsyncClient, origin: str
) -> None:
    response = await client.options(
        cors_service.url("/v1/runs"),
        headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
    )
    assert_problem(response, 403, "origin-not-allowed")
    assert cors_headers(response.headers) == []


async def test_a_preflight_without_an_origin_is_refused(
    cors_service: Service, client: httpx.AsyncClient
) -> None:
    response = await client.options(
        cors_service.url("/v1/runs"), headers={"Access-Control-Request-Method": "POST"}
    )
    assert_problem(response, 403, "origin-not-allowed")
    assert cors_headers(response.headers) == []


async def test_a_listed_origin_creates_a_run_and_may_read_its_location(
    cors_service: Service, client: httpx.AsyncClient
) -> None:
    response = await client.post(
        cors_service.url("/v1/runs"),
        json=QUESTION,
        headers={"Origin": APP, "Sec-Fetch-Site": "cross-site"},
    )
    assert response.status_code == 201, response.text
    assert_allowed_for(response, APP)
    assert response.headers["Location"] == f"/v1/runs/{response.json()['id']}"
    await cors_service.wait_done(response.json()["id"])


async def test_a_listed_origins_stream_carries_its_allowance(
    cors_service: Service, client: httpx.AsyncClient
) -> None:
    """An EventSource elsewhere reads the stream only if the event-stream answer allows it."""
    run_id = await cors_service.create(client)
    async with client.stream(
        "GET", cors_service.url(f"/v1/runs/{run_id}/events"), headers={"Origin": APP}
    ) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert_allowed_for(response, APP)
        lines = [line async for line in response.aiter_lines()]
    assert "event: done" in lines


async def test_each_listed_origin_is_answered_with_itself(
    cors_service: Service, client: httpx.AsyncClient
) -> None:
    response = await client.get(
        cors_service.url("/v1/runs"), headers={"Origin": "https://other.example"}
    )
    assert response.status_code == 200
    assert_allowed_for(response, "https://other.example")


async def test_a_listed_origin_may_read_the_problem_of_a_missing_run(
    cors_service: Service, client: httpx.AsyncClient
) -> None:
    response = await client.get(
        cors_service.url("/v1/runs/0123456789abcdef"), headers={"Origin": APP}
    )
    assert_problem(response, 404, "not-found")
    assert_allowed_for(response, APP)


async def test_a_listed_origin_may_read_the_challenge_of_a_missing_key(
    make_service: MakeService, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    service = await make_service(auth="keys", api_keys_file=keys_file(tmp_path), cors_origins=APP)
    response = await client.get(service.url("/v1/runs"), headers={"Origin": APP})
    assert_problem(response, 401, "unauthorized")
    assert_allowed_for(response, APP)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")

    allowed = await client.get(
        service.url("/v1/runs"), headers={"Origin": APP, "Authorization": f"Bearer {ALICE}"}
    )
    assert allowed.status_code == 200
    assert_allowed_for(allowed, APP)


@pytest.mark.parametrize("origin", [EVIL, "null", f"{APP}.evil.example"])
@pytest.mark.parametrize("path", ["/v1/runs", "/v1/runs/0123456789abcdef", "/"])
async def test_an_unlisted_origin_gets_no_cors_headers_on_a_read(
    cors_service: Service, client: httpx.AsyncClient, origin: str, path: str
) -> None:
    response = await client.get(cors_service.url(path), headers={"Origin": origin})
    assert response.status_code in (200, 404)
    assert cors_headers(response.headers) == []


async def test_without_cors_origins_no_origin_gets_cors_headers(
    service: Service, client: httpx.AsyncClient
) -> None:
    preflight = await client.options(
        service.url("/v1/runs"),
        headers={"Origin": APP, "Access-Control-Request-Method": "GET"},
    )
    read = await client.get(service.url("/v1/runs"), headers={"Origin": APP})
    assert_problem(preflight, 403, "origin-not-allowed")
    assert cors_headers(preflight.headers) == []
    assert read.status_code == 200
    assert cors_headers(read.headers) == []
