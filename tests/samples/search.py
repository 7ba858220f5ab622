"""docs/search.md's captured samples: SearXNG start-up errors, shares, depth, failures, pages."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from research_service.errors import ConfigError
from research_service.providers.registry import search_provider
from tests.fake_searxng import FakeSearxng, Hold, Result, Status
from tests.loopback import refused_port
from tests.loopback_web import LoopbackWeb
from tests.samples.blocks import SampleError
from tests.samples.format import Event, Ids, compact, events, fenced
from tests.samples.service import Env, serving

DOC: Final = "docs/search.md"
#: The addresses the docs show for the fakes.
SEARXNG_PORT: Final = "8899"
PAGES_PORT: Final = "42843"
LIGHTHOUSE: Final = "When was the Skerryvore lighthouse built?"
KEEPERS: Final = "Skerryvore lighthouse keepers lens"
GZIP_DEPTH: Final = {
    "question": "How do I set the compression level with gzip?",
    "options": {"breadth": 2, "max_sources": 4, "depth": 3},
}
PAGES: Final = ("/article", "/to/metadata", "/paper.pdf", "/plain", "/huge", "/slow")
#: Elided from a `done` shown in brief.
DONE_DETAILS: Final = ("timings_ms", "usage", "truncated")


def data_lines(picked: Iterable[Event], *, elide: tuple[str, ...] = ()) -> str:
    return fenced("\n".join(f"data: {compact(e.data, elide=elide)}" for e in picked))


def brief(picked: Iterable[Event]) -> str:
    """`event:` and `data:` lines, a done's details shown as `…`."""
    shown = [
        f"event: {e.name}\ndata: {compact(e.data, elide=DONE_DETAILS if e.name == 'done' else ())}"
        for e in picked
    ]
    return fenced("\n\n".join(shown))


def searching(stream: str) -> list[Event]:
    return [e for e in events(stream) if e.data.get("phase") == "searching"]


async def start_up_errors(ids: Ids) -> dict[str, str]:
    """What `serve --search searxng` says when the instance is not usable, as the console shows."""
    said: list[str] = []
    async with FakeSearxng(formats=("html",)) as html_only:
        ids.fix(f"127.0.0.1:{html_only.port}", "127.0.0.1:8898")
        said.append(await _refusal(html_only.url))
    nothing = refused_port()
    ids.fix(f"127.0.0.1:{nothing}", "127.0.0.1:8888")
    said.append(await _refusal(f"http://127.0.0.1:{nothing}"))
    said.append(await _refusal("localhost:8888"))
    serve = "$ research-service serve --search searxng"
    commands = (
        f"{serve} --searxng-url http://127.0.0.1:8898",
        f"{serve}            # nothing listening at 127.0.0.1:8888",
        f"{serve} --searxng-url localhost:8888",
    )
    lines = [
        ids(f"{command}\nresearch-service: {error}")
        for command, error in zip(commands, said, strict=True)
    ]
    return {
        "search/json-refused": fenced(lines[0], "console"),
        "search/start-up-errors": fenced("\n".join(lines[1:]), "console"),
    }


async def _refusal(url: str) -> str:
    from research_service.settings import Settings

    try:
        async with search_provider(Settings(search="searxng", searxng_url=url)):
            pass
    except ConfigError as exc:
        return str(exc)
    raise AssertionError(f"{url} was accepted")


async def _web_run(
    env: Env,
    searx: FakeSearxng,
    body: dict[str, Any],
    *,
    faults: tuple[Status | Hold, ...] = (),
    **overrides: Any,
) -> str:
    """One run on a service that searches `searx`; `faults` answer its searches, in order."""
    settings = env.settings(
        search="searxng", searxng_url=searx.url, fetch_allow="127.0.0.1", **overrides
    )
    async with serving(env, settings) as service:
        searx.fail(*faults)  # after the start-up check, which would take the first
        created = (await service.request("POST", "/v1/runs", json=body)).json()
        return (await service.stream(created["events_url"])).text


async def web_samples(env: Env, ids: Ids) -> dict[str, str]:
    """Fair shares, failed queries, pages that cannot be read, runs that find nothing."""
    async with LoopbackWeb(huge_bytes=4 * 1024 * 1024) as web, FakeSearxng() as searx:
        ids.fix(f"127.0.0.1:{web.port}", f"127.0.0.1:{PAGES_PORT}")
        ids.fix(f"127.0.0.1:{searx.port}", f"127.0.0.1:{SEARXNG_PORT}")
        titled = [("Skerryvore", "/article"), ("Paper", "/paper.pdf"), ("Huge", "/huge")]
        results = [Result(url=web.url(path), title=title, content=title) for title, path in titled]
        for query in ("skerryvore lighthouse built", "skerryvore lighthouse", "skerryvore built"):
            searx.script(query, results)
        shares = await _web_run(
            env, searx, {"question": LIGHTHOUSE, "options": {"max_sources": 3}}, pages_per_run=0
        )
        searx.script("skerryvore lighthouse", results)
        passing = Hold()
        passing.release.set()
        failures = await _web_run(
            env,
            searx,
            {"question": KEEPERS, "options": {"max_sources": 3}},
            faults=(Status(status=503), Status(status=503), passing, Hold(), Hold()),
            pages_per_run=0,
            search_attempts=2,
            search_timeout_s=1,
        )
        pages = [
            Result(url=web.url(path), title=path.strip("/"), content="Skerryvore") for path in PAGES
        ]
        searx.script("skerryvore lighthouse built", pages)
        read = await _web_run(
            env,
            searx,
            {"question": LIGHTHOUSE, "options": {"breadth": 1, "max_sources": 6}},
            fetch_timeout_s=2,
            fetch_max_bytes=1024 * 1024,
        )
        all_failed = await _web_run(
            env, searx, {"question": KEEPERS}, faults=(Status(status=503),) * 3, search_attempts=1
        )
        searx.results.clear()
        nothing = await _web_run(env, searx, {"question": KEEPERS})
    queried = [e for e in searching(ids(shares)) if "query" in e.data]
    failed = [e for e in searching(ids(failures)) if "error" in e.data]
    page_events = [
        e for e in searching(ids(read)) if "page" in e.data or e.data["status"] == "completed"
    ]
    return {
        "search/fair-share": data_lines(queried, elide=("elapsed_ms",)),
        "search/query-failed": data_lines(failed),
        "search/pages": data_lines(page_events),
        "search/search-failed": brief(events(ids(all_failed))[-2:]),
        "search/no-sources": brief(events(ids(nothing))[-2:]),
    }


async def depth(env: Env) -> dict[str, str]:
    """Follow-up rounds on the default corpus."""
    async with serving(env, env.settings()) as service:
        created = (await service.request("POST", "/v1/runs", json=GZIP_DEPTH)).json()
        stream = (await service.stream(created["events_url"])).text
    rounds = searching(stream)[-1].data["rounds"]
    if rounds != 2:
        raise SampleError(f"search/depth: {rounds} rounds ran; the text says round 3 did not")
    return {"search/depth": data_lines(searching(stream))}


async def capture(env: Env) -> dict[str, str]:
    """Every sample of search.md."""
    ids = Ids()
    captured = await start_up_errors(ids)
    captured |= await web_samples(env, ids)
    captured |= await depth(env)
    return captured
