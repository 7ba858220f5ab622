"""The search contract: every search backend finds, limits, comes back empty and fails alike.

Backends: `local` (a small corpus on disk); `searxng` (the provider over HTTP against the fake
SearXNG); `taping` (local search taped onto a cassette) and `cassette` (that cassette played
back); `no_search`, the replay server's stand-in, only where refusing is the property.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Final

import aiohttp
import pytest

from research_service.corpus.index import CorpusIndex
from research_service.errors import SearchError
from research_service.providers.base import SearchHit, SearchProvider
from research_service.providers.cassettes import (
    Cassette,
    CassetteSearch,
    CassetteWriter,
    TapingSearch,
)
from research_service.providers.local_search import LocalSearch, open_local_search
from research_service.providers.searxng import SearxngSearch, client_timeout
from research_service.recordings.stand_ins import NoSearch
from research_service.settings import Settings
from tests.fake_searxng import FakeSearxng, Hold, Result, Status

FOUND: Final = "green tea brewing"
NOTHING: Final = "xylophone quantum zeppelin"
LIMITS: Final = (0, 1, 5)
DEADLINE_S: Final = 0.3
CORPUS: Final = {
    "tea.md": "# Brewing green tea\n\nGreen tea brewing wants water at about 80 degrees.\n",
    "oolong.md": "# Oolong tea\n\nOolong sits between green and black; brewing takes hot water.\n",
    "matcha.md": "# Matcha\n\nMatcha is powdered green tea, whisked rather than brewed.\n",
    "coffee.md": "# Coffee\n\nFilter coffee is brewed just off the boil.\n",
}
SEARXNG_RESULTS: Final = [
    Result(url="https://tea.example/green", title="Brewing green tea", content="80 degrees."),
    Result(url="https://tea.example/oolong", title="Oolong", content="Between green and black."),
    Result(url="https://tea.example/matcha", title="Matcha", content="Powdered.", score=0.5),
]
WITH_HITS: Final = ("local", "searxng", "taping", "cassette")
FAILING: Final = ("local", "searxng", "taping", "cassette", "no_search")
WAITING: Final = ("local", "searxng")


class StuckIndex(CorpusIndex):
    """A real index whose searches wait for `gate` (a disk that has stopped answering)."""

    gate: threading.Event
    done: threading.Event

    def search(self, query: str, *, limit: int) -> list[SearchHit]:
        try:
            self.gate.wait(timeout=10)
            return super().search(query, limit=limit)
        finally:
            self.done.set()


class Backend:
    """One search provider under contract, and how a test breaks or stalls it."""

    def __init__(self, provider: SearchProvider) -> None:
        self.provider = provider

    def will_fail(self) -> str:
        """Make the next search fail; return the query to search for that."""
        raise AssertionError(f"{self.provider.name} has no failure mode")

    def stuck(self) -> AbstractAsyncContextManager[SearchProvider]:
        """A provider of this kind whose next search does not come back by itself."""
        raise AssertionError(f"{self.provider.name} never waits")


class LocalBackend(Backend):
    def __init__(self, provider: LocalSearch) -> None:
        super().__init__(provider)
        self.local = provider

    def will_fail(self) -> str:
        self.local.close()  # a search after shutdown has begun
        return FOUND

    @asynccontextmanager
    async def stuck(self) -> AsyncIterator[SearchProvider]:
        index = StuckIndex.open(self.local.index.path)
        index.gate, index.done = threading.Event(), threading.Event()
        try:
            yield LocalSearch(index)
        finally:
            index.gate.set()
            # The worker thread goes on after the deadline: let it finish before closing.
            await asyncio.to_thread(index.done.wait, 10)
            index.close()


class SearxngBackend(Backend):
    def __init__(self, provider: SearxngSearch, fake: FakeSearxng) -> None:
        super().__init__(provider)
        self.fake = fake

    def will_fail(self) -> str:
        self.fake.fail(Status(status=404))
        return FOUND

    @asynccontextmanager
    async def stuck(self) -> AsyncIterator[SearchProvider]:
        held = Hold()
        self.fake.fail(held)
        try:
            yield self.provider
        finally:
            held.release.set()


class TapingBackend(LocalBackend):
    def __init__(self, local: LocalSearch, folder: Path) -> None:
        super().__init__(local)
        self.provider = TapingSearch(local, CassetteWriter(folder))


class CassetteBackend(Backend):
    def will_fail(self) -> str:
        return "a query that was never taped"


class NoSearchBackend(Backend):
    def will_fail(self) -> str:
        return FOUND  # it refuses every query


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[LocalSearch]:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, text in CORPUS.items():
        (corpus / name).write_text(text, encoding="utf-8")
    provider = await open_local_search(Settings(data_dir=tmp_path / "data", corpus=corpus))
    yield provider
    provider.close()


async def _tape(local: LocalSearch, folder: Path) -> None:
    """Tape every search the suite makes, so playing it back answers them."""
    taping = TapingSearch(local, CassetteWriter(folder))
    for limit in LIMITS:
        await taping.search(FOUND, limit=limit)
    await taping.search(NOTHING, limit=5)


@pytest.fixture
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path, local: LocalSearch
) -> AsyncIterator[Backend]:
    name = request.param
    if name == "local":
        yield LocalBackend(local)
    elif name == "searxng":
        async with (
            FakeSearxng() as fake,
            aiohttp.ClientSession(timeout=client_timeout(2.0)) as session,
        ):
            fake.script(FOUND, SEARXNG_RESULTS)
            yield SearxngBackend(SearxngSearch(session, base_url=fake.url, attempts=1), fake)
    elif name == "taping":
        yield TapingBackend(local, tmp_path / "taped")
    elif name == "cassette":
        await _tape(local, tmp_path / "cassette")
        yield CassetteBackend(CassetteSearch(Cassette.load(tmp_path / "cassette")))
    else:
        yield NoSearchBackend(NoSearch())


def test_every_backend_is_a_search_provider(local: LocalSearch) -> None:
    providers: list[SearchProvider] = [local, NoSearch()]  # mypy checks the Protocol
    assert all(provider.name for provider in providers)


@pytest.mark.parametrize("backend", WITH_HITS, indirect=True)
async def test_hits_have_a_title_a_url_and_a_snippet_best_first(backend: Backend) -> None:
    hits = await backend.provider.search(FOUND, limit=5)
    assert len(hits) >= 2
    for hit in hits:
        assert isinstance(hit, SearchHit)
        assert hit.title.strip()
        assert hit.url.startswith(("https://", "file://"))
        assert isinstance(hit.snippet, str)
    assert "green" in f"{hits[0].title} {hits[0].snippet}".lower()
    assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)
    assert len({hit.url for hit in hits}) == len(hits)


@pytest.mark.parametrize("backend", WITH_HITS, indirect=True)
async def test_limit_is_respected(backend: Backend) -> None:
    many = await backend.provider.search(FOUND, limit=5)
    (first,) = await backend.provider.search(FOUND, limit=1)
    assert first == many[0]
    assert await backend.provider.search(FOUND, limit=0) == []


@pytest.mark.parametrize("backend", WITH_HITS, indirect=True)
async def test_a_query_nothing_matches_finds_no_hits(backend: Backend) -> None:
    assert await backend.provider.search(NOTHING, limit=5) == []


@pytest.mark.parametrize("backend", FAILING, indirect=True)
async def test_failures_are_search_errors_with_a_code(backend: Backend) -> None:
    query = backend.will_fail()
    with pytest.raises(SearchError) as failed:
        await backend.provider.search(query, limit=5)
    error = failed.value
    assert error.code == "search_error"
    assert error.provider == backend.provider.name
    assert isinstance(error.retryable, bool)
    assert str(error)


@pytest.mark.parametrize("backend", WAITING, indirect=True)
async def test_a_stuck_search_ends_at_the_callers_deadline(backend: Backend) -> None:
    """The pipeline's per-query timeout (`asyncio.timeout`) ends a search that hangs."""
    async with backend.stuck() as provider:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(DEADLINE_S):
                await provider.search(FOUND, limit=5)
        assert time.monotonic() - started < DEADLINE_S + 1.0


async def test_a_server_that_does_not_answer_is_a_search_error_in_time() -> None:
    """A network backend also gives up on its own, after its client timeout."""
    async with (
        FakeSearxng() as fake,
        aiohttp.ClientSession(timeout=client_timeout(DEADLINE_S)) as session,
    ):
        held = Hold()
        fake.fail(held)
        provider = SearxngSearch(session, base_url=fake.url, attempts=1)
        started = time.monotonic()
        with pytest.raises(SearchError, match="did not answer in time") as failed:
            await provider.search(FOUND, limit=5)
        held.release.set()
    assert time.monotonic() - started < DEADLINE_S + 1.0
    assert failed.value.code == "search_error"
    assert failed.value.retryable
