"""The panel's files over plain HTTP: types, security headers, caching and problem+json errors."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from research_service.web.panel import CONTENT_TYPES
from tests.conftest import Service

STATIC = Path(__file__).resolve().parent.parent / "research_service" / "web" / "static"
ASSETS = sorted(p.name for p in STATIC.iterdir() if p.suffix in CONTENT_TYPES)
PROBLEM = "application/problem+json"


def _csp(response: httpx.Response) -> dict[str, str]:
    """The Content-Security-Policy header as {directive: sources}."""
    policy = response.headers["Content-Security-Policy"]
    pairs = (part.strip().split(" ", 1) for part in policy.split(";") if part.strip())
    return dict(pairs)


def _assert_hardened(response: httpx.Response) -> None:
    csp = _csp(response)
    assert csp["default-src"] == "'self'"
    assert csp["script-src"] == "'self'", "scripts must come from files, never inline"
    assert "'unsafe-inline'" not in response.headers["Content-Security-Policy"]
    assert csp["frame-ancestors"] == "'none'"
    assert csp["object-src"] == "'none'"
    assert csp["require-trusted-types-for"] == "'script'", "HTML sinks must refuse strings"
    assert csp["trusted-types"] == "'none'"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cross-Origin-Opener-Policy"] == "same-origin"
    assert response.headers["Cache-Control"] == "no-cache"


async def test_index_is_html_with_the_security_headers(
    service: Service, client: httpx.AsyncClient
) -> None:
    response = await client.get(service.url("/"))
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    _assert_hardened(response)
    assert '<script type="module" src="static/panel.js"></script>' in response.text


async def test_index_takes_the_run_parameter(service: Service, client: httpx.AsyncClient) -> None:
    response = await client.get(service.url("/"), params={"run": "0123456789abcdef"})
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")


async def test_index_ignores_the_tracking_parameters_of_a_shared_link(
    service: Service, client: httpx.AsyncClient
) -> None:
    """A share link pasted through a newsletter or a chat comes back with `utm_*` or `fbclid`."""
    params = {"run": "0123456789abcdef", "utm_source": "newsletter", "fbclid": "IwAR0", "ref": "x"}
    response = await client.get(service.url("/"), params=params)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    # A mistyped parameter beside them is still told.
    response = await client.get(service.url("/"), params={**params, "rnu": "1"})
    assert response.status_code == 400
    assert response.json()["field"] == "rnu"


async def test_index_rejects_unknown_parameters(
    service: Service, client: httpx.AsyncClient
) -> None:
    response = await client.get(service.url("/"), params={"foo": "1"})
    assert response.status_code == 400
    assert response.headers["Content-Type"] == PROBLEM
    problem = response.json()
    assert problem["field"] == "foo"
    assert "allowed: run" in problem["detail"]


@pytest.mark.parametrize("name", ASSETS)
async def test_every_asset_has_its_exact_type(
    service: Service, client: httpx.AsyncClient, name: str
) -> None:
    response = await client.get(service.url(f"/static/{name}"))
    assert response.status_code == 200
    expected = CONTENT_TYPES[Path(name).suffix]
    assert response.headers["Content-Type"] == f"{expected}; charset=utf-8"
    assert response.content == (STATIC / name).read_bytes()
    _assert_hardened(response)


def test_the_panel_has_its_modules_and_no_inline_script_or_style() -> None:
    assert {"index.html", "panel.css", "panel.js", "stream.js", "render.js", "answer.js"} <= {
        p.name for p in STATIC.iterdir()
    }
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    assert re.findall(r"<script\b[^>]*>", html) == ['<script type="module" src="static/panel.js">']
    assert "<style" not in html
    assert " style=" not in html
    assert not re.search(r"\son[a-z]+=", html), "no inline event handlers"
    assert "http://" not in html
    assert "https://" not in html, "no CDN, no external fonts"


def test_the_page_links_its_files_relative_to_its_own_folder() -> None:
    """Under a proxy's prefix (`/research/`) a `/static/...` link would leave the prefix."""
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    links = re.findall(r'\s(?:href|src)="([^"]*)"', html)
    assert "static/panel.js" in links
    assert [link for link in links if link.startswith("/")] == []


def test_no_script_addresses_the_site_root() -> None:
    """The scripts reach the API through paths.js, resolved against the panel's own folder."""
    for script in STATIC.glob("*.js"):
        code = re.sub(r"^\s*(\*|/\*\*|//).*$", "", script.read_text(encoding="utf-8"), flags=re.M)
        assert not re.search(r"[\"'`]/(v1|static|\?)", code), f"{script.name} uses a root path"


def test_no_script_inserts_markup() -> None:
    """Stream data goes in as text: the scripts never parse strings as HTML."""
    for script in STATIC.glob("*.js"):
        code = script.read_text(encoding="utf-8")
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in code, f"{script.name} uses {sink}"


async def test_an_unchanged_asset_is_not_sent_again(
    service: Service, client: httpx.AsyncClient
) -> None:
    first = await client.get(service.url("/static/panel.js"))
    etag = first.headers["ETag"]
    again = await client.get(service.url("/static/panel.js"), headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["ETag"] == etag


@pytest.mark.parametrize(
    "name", ["nope.js", "index.html", "panel.py", ".hidden.js", "PANEL.JS", "panel.js.map"]
)
async def test_unknown_asset_is_a_404_problem(
    service: Service, client: httpx.AsyncClient, name: str
) -> None:
    response = await client.get(service.url(f"/static/{name}"))
    assert response.status_code == 404
    assert response.headers["Content-Type"] == PROBLEM
    problem = response.json()
    assert problem["type"].endswith("/not-found")
    assert name in problem["detail"]


async def test_asset_path_traversal_is_a_404(service: Service, client: httpx.AsyncClient) -> None:
    response = await client.get(service.url("/static/%2e%2e%2fpanel.py"))
    assert response.status_code == 404
    assert response.headers["Content-Type"] == PROBLEM


async def test_asset_rejects_query_parameters(service: Service, client: httpx.AsyncClient) -> None:
    response = await client.get(service.url("/static/panel.css"), params={"v": "2"})
    assert response.status_code == 400
    assert response.headers["Content-Type"] == PROBLEM
