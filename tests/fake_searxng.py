"""A fake SearXNG on a loopback port: its `/search?format=json` API, scripted and recorded.

It answers as SearXNG's `webapp.search()` does: 403 when the requested format is not enabled,
400 `{"error": "No query"}` without `q`, 400 `{"error": "Invalid value ..."}` for bad
parameters, and otherwise `get_json_response`'s object. Faults queued with `fail()` answer the
next requests in order, whatever they ask.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from tests.loopback import HOST, LoopbackServer

TIME_RANGES = ("day", "week", "month", "year")
# What Flask's abort(403) sends: an HTML page, not JSON.
FORBIDDEN_PAGE = (
    "<!doctype html>\n<html lang=en>\n<title>403 Forbidden</title>\n<h1>Forbidden</h1>\n"
    "<p>You don't have the permission to access the requested resource. It is either "
    "read-protected or not readable by the server.</p>\n"
)


@dataclass(frozen=True, kw_only=True)
class Result:
    """One scripted result; `wire()` is how SearXNG's JSON shows it."""

    url: str
    title: str
    content: str = ""
    engine: str = "duckduckgo"
    engines: tuple[str, ...] = ()
    score: float = 1.0
    category: str = "general"
    published: str | None = None

    def wire(self, position: int) -> dict[str, Any]:
        parts = urlsplit(self.url)
        return {
            "url": self.url,
            "title": self.title,
            "content": self.content,
            "engine": self.engine,
            "parsed_url": [parts.scheme, parts.netloc, parts.path, "", parts.query, ""],
            "template": "default.html",
            "engines": list(self.engines or (self.engine,)),
            "positions": [position],
            "score": self.score,
            "category": self.category,
            "publishedDate": self.published,
            "thumbnail": "",
            "priority": "",
        }


@dataclass(frozen=True, kw_only=True)
class Status:
    """Answer with this status, as SearXNG or the proxy in front of it would."""

    status: int
    retry_after: str | None = None  # the `Retry-After` header, verbatim

    def response(self) -> web.Response:
        headers = {} if self.retry_after is None else {"Retry-After": self.retry_after}
        if self.status == 403:
            return web.Response(status=403, text=FORBIDDEN_PAGE, content_type="text/html")
        if self.status == 500:  # SearXNG's own failure: index_error() in JSON
            return _json({"error": "search error"}, status=500, headers=headers)
        # The limiter's "Too Many Requests", a gateway's 502/503: plain pages.
        return web.Response(status=self.status, text=f"{self.status}", headers=headers)


@dataclass(kw_only=True, eq=False)
class Hold:
    """Hold the response until `release` is set; `reached` is set when it starts waiting."""

    reached: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)


Fault = Status | Hold


@dataclass(frozen=True)
class Recorded:
    """A request as it arrived: its path, query parameters and loop time."""

    path: str
    params: dict[str, str]
    arrived: float
    authorization: str | None = None

    @property
    def query(self) -> str | None:
        return self.params.get("q")


class FakeSearxng(LoopbackServer):
    """SearXNG's search API on 127.0.0.1 (port 0 picks a free one) for an `async with`.

    Script results with `script()`, queue faults with `fail()`, read `requests`. `formats`
    is its settings.yml `search: formats:`; without json, `format=json` gets a 403.
    """

    def __init__(
        self, *, host: str = HOST, port: int = 0, formats: Sequence[str] = ("html", "json")
    ) -> None:
        super().__init__(host=host, port=port)
        self.formats = tuple(formats)
        self.results: dict[str, list[Result]] = {}
        self.unresponsive: dict[str, list[tuple[str, str]]] = {}
        self.faults: deque[Fault] = deque()
        self.requests: list[Recorded] = []
        self._arrived = asyncio.Condition()
        self._active: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def searches(self) -> list[Recorded]:
        """The requests that carried a query (the start-up check carries none)."""
        return [r for r in self.requests if r.query]

    def script(
        self, query: str, results: Iterable[Result], *, unresponsive: Sequence[tuple[str, str]] = ()
    ) -> None:
        """Answer `query` with `results` in this order, naming `unresponsive` engines."""
        self.results[query] = list(results)
        self.unresponsive[query] = list(unresponsive)

    def fail(self, *faults: Fault) -> None:
        """Answer the next requests with these faults, one each, in order."""
        self.faults.extend(faults)

    async def wait_for_request(self, number: int = 1) -> Recorded:
        """The `number`-th request (1-based), once it has arrived."""
        async with self._arrived:
            await self._arrived.wait_for(lambda: len(self.requests) >= number)
        return self.requests[number - 1]

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/search", self._search)
        return app

    async def close(self) -> None:
        """Cancel held responses, then stop listening."""
        for task in list(self._active):
            task.cancel()
        await super().close()

    async def _search(self, request: web.Request) -> web.StreamResponse:
        # SearXNG reads GET and POST alike: the form, then the query string.
        params = dict(request.query)
        if request.method == "POST":
            params.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
        async with self._arrived:
            arrived = asyncio.get_running_loop().time()
            authorization = request.headers.get("Authorization")
            self.requests.append(Recorded(request.path, params, arrived, authorization))
            self._arrived.notify_all()
        task = asyncio.current_task()
        assert task is not None
        self._active.add(task)
        try:
            return await self._answer(params)
        finally:
            self._active.discard(task)

    async def _answer(self, params: dict[str, str]) -> web.StreamResponse:
        fault = self.faults.popleft() if self.faults else None
        if isinstance(fault, Status):
            return fault.response()
        if isinstance(fault, Hold):
            fault.reached.set()
            await fault.release.wait()
        output = params.get("format", "html")
        if output not in self.formats:
            return Status(status=403).response()
        if output != "json":
            return web.Response(
                text="<!doctype html><title>SearXNG</title>", content_type="text/html"
            )
        query = params.get("q", "")
        if not query:
            return _json({"error": "No query"}, status=400)
        problem = _invalid(params)
        if problem is not None:
            return _json({"error": problem}, status=400)
        results = self.results.get(query, [])
        return _json(
            {
                "query": query,
                "number_of_results": 0,  # most engines report none; SearXNG sends 0 then
                "results": [r.wire(n) for n, r in enumerate(results, start=1)],
                "answers": [],
                "corrections": [],
                "infoboxes": [],
                "suggestions": [],
                "unresponsive_engines": [list(e) for e in self.unresponsive.get(query, [])],
            }
        )


def _invalid(params: dict[str, str]) -> str | None:
    """SearxParameterException's message for the first bad parameter, as SearXNG words it."""
    checks: dict[str, Callable[[str], bool]] = {
        "pageno": lambda v: v.isdigit() and int(v) >= 1,
        "time_range": lambda v: v in ("", *TIME_RANGES),
        "safesearch": lambda v: v in ("0", "1", "2"),
    }
    for name, valid in checks.items():
        value = params.get(name)
        if value is not None and not valid(value):
            return f'Invalid value "{value}" for parameter {name}'
    return None


def _json(
    body: object, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(body), content_type="application/json", headers=headers
    )
