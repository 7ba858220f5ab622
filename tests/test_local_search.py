"""The `local` search provider: opening the right index, searching off the loop, errors."""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from research_service.corpus.index import CorpusIndex
from research_service.errors import ConfigError, SearchError
from research_service.providers.base import SearchHit, SearchProvider
from research_service.providers.local_search import (
    STDLIB_INDEX,
    LocalSearch,
    corpus_index_path,
    open_local_search,
)
from research_service.settings import Settings
from tests.corpus_fixtures import copy_corpus, stdlib_data_dir


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return copy_corpus(tmp_path / "corpus")


@pytest.fixture
def settings(tmp_path: Path, corpus: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", corpus=corpus, token_delay_ms=0)


@pytest.fixture
async def provider(settings: Settings) -> AsyncIterator[LocalSearch]:
    opened = await open_local_search(settings)
    yield opened
    opened.close()


class ThreadRecordingIndex(CorpusIndex):
    """A real index that also notes which thread ran each search."""

    threads: list[int]
    names: list[str]

    def search(self, query: str, *, limit: int) -> list[SearchHit]:
        self.threads.append(threading.get_ident())
        self.names.append(threading.current_thread().name)
        return super().search(query, limit=limit)


@pytest.fixture
def recording(settings: Settings) -> Iterator[ThreadRecordingIndex]:
    path = settings.data_dir / "recording.sqlite3"
    path.parent.mkdir(parents=True)
    index = ThreadRecordingIndex.open(path)
    index.threads, index.names = [], []
    yield index
    index.close()


async def test_provider_satisfies_the_search_protocol(provider: LocalSearch) -> None:
    searcher: SearchProvider = provider
    assert searcher.name == "local"


async def test_user_corpus_is_indexed_and_searchable(provider: LocalSearch, corpus: Path) -> None:
    hits = await provider.search("chlorophyll light energy", limit=3)
    assert hits[0].url == (corpus / "photosynthesis.html").resolve().as_uri()
    assert hits[0].title == "Photosynthesis"
    assert "chlorophyll" in hits[0].snippet


async def test_each_corpus_gets_its_own_index_file(settings: Settings, corpus: Path) -> None:
    user = corpus_index_path(settings)
    assert re.fullmatch(r"corpus-[0-9a-f]{12}\.sqlite3", user.name)
    assert corpus_index_path(settings.with_changes(corpus=corpus / "guides")) != user
    assert corpus_index_path(settings.with_changes(corpus=None)).name == STDLIB_INDEX


async def test_search_runs_in_a_worker_thread(recording: ThreadRecordingIndex) -> None:
    search = LocalSearch(recording)
    try:
        await search.search("anything at all", limit=3)
    finally:
        search.close()
    assert recording.threads
    assert threading.get_ident() not in recording.threads


async def test_concurrent_searches_take_turns_on_the_providers_own_thread(
    recording: ThreadRecordingIndex,
) -> None:
    """The index runs one query at a time: more threads would only contend for the GIL."""
    search = LocalSearch(recording)
    try:
        await asyncio.gather(*(search.search(f"query {n}", limit=3) for n in range(20)))
    finally:
        search.close()
    assert len(recording.threads) == 20
    assert len(set(recording.threads)) == 1
    assert recording.names[0].startswith("local-search")


class GatedIndex(CorpusIndex):
    """A real index whose searches wait for `gate` before they start."""

    gate: threading.Event

    def search(self, query: str, *, limit: int) -> list[SearchHit]:
        self.gate.wait()
        return super().search(query, limit=limit)


async def test_searches_still_queued_at_close_end_as_search_errors(settings: Settings) -> None:
    path = settings.data_dir / "gated.sqlite3"
    path.parent.mkdir(parents=True)
    index = GatedIndex.open(path)
    index.gate = threading.Event()
    search = LocalSearch(index)
    pending = [asyncio.ensure_future(search.search("light", limit=2)) for _ in range(5)]
    await asyncio.sleep(0)  # each search is handed to the provider's thread; the first waits
    search.close()
    index.gate.set()
    outcomes = await asyncio.gather(*pending, return_exceptions=True)
    assert all(isinstance(o, SearchError) and "closed" in str(o) for o in outcomes), outcomes


async def test_concurrent_searches_share_the_index_safely(provider: LocalSearch) -> None:
    queries = ["light", "commit", "status code", "Python history", "transaction"] * 8
    results = await asyncio.gather(*(provider.search(q, limit=2) for q in queries))
    assert all(results)
    assert results[:5] == results[5:10]


async def test_restart_picks_up_changed_files(settings: Settings, corpus: Path) -> None:
    first = await open_local_search(settings)
    first.close()
    (corpus / "guides" / "tides.md").write_text("# Tides\n\nThe Moon raises tides.", "utf-8")
    second = await open_local_search(settings)
    try:
        hits = await second.search("moon tides", limit=3)
    finally:
        second.close()
    assert hits[0].title == "Tides"


async def test_start_up_logs_one_summary_line(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="research_service.providers.local_search"):
        (await open_local_search(settings)).close()
    (line,) = [r.getMessage() for r in caplog.records]
    assert "5 documents (5 added, 0 updated, 0 removed)" in line


async def test_missing_corpus_folder_is_a_config_error(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", corpus=tmp_path / "nope")
    with pytest.raises(ConfigError, match="does not exist; create it or drop --corpus"):
        await open_local_search(settings)


async def test_corpus_that_is_a_file_is_a_config_error(tmp_path: Path, corpus: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", corpus=corpus / "git_basics.rst")
    with pytest.raises(ConfigError, match="not a folder"):
        await open_local_search(settings)


async def test_unreadable_index_file_is_a_config_error(settings: Settings) -> None:
    path = corpus_index_path(settings)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(
        ConfigError, match=r"not a search index, or a damaged one .*delete it to rebuild"
    ):
        await open_local_search(settings)


async def test_a_broken_index_raises_search_error(provider: LocalSearch) -> None:
    with sqlite3.connect(provider.index.path) as db:
        db.execute("DROP TABLE passages")
    db.close()
    with pytest.raises(SearchError, match="delete that file and restart") as raised:
        await provider.search("light", limit=3)
    assert raised.value.provider == "local"


async def test_search_after_close_raises_search_error(settings: Settings) -> None:
    search = await open_local_search(settings)
    search.close()
    with pytest.raises(SearchError, match="closed"):
        await search.search("light", limit=3)


async def test_default_corpus_is_the_standard_library(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    settings = Settings(data_dir=stdlib_data_dir(tmp_path_factory), token_delay_ms=0)
    search = await open_local_search(settings)
    try:
        hits = await search.search("parse JSON", limit=5)
    finally:
        search.close()
    assert hits[0].url.startswith("https://docs.python.org/3/library/json.html")


async def test_runs_asking_the_same_query_share_one_search(
    recording: ThreadRecordingIndex,
) -> None:
    search = LocalSearch(recording)
    try:
        together = await asyncio.gather(*(search.search("light", limit=3) for _ in range(10)))
        later = await search.search("light", limit=3)
        other_limit = await search.search("light", limit=2)
    finally:
        search.close()
    # Ten at once and one after: one search; another limit is another query.
    assert len(recording.threads) == 2
    assert all(hits == together[0] for hits in together)
    assert later == together[0]
    assert other_limit == together[0][:2]


async def test_without_a_cache_every_query_is_searched(recording: ThreadRecordingIndex) -> None:
    """`cache_size=0` (the search bench's provider): no answer kept, each query searched."""
    search = LocalSearch(recording, cache_size=0)
    try:
        first = await search.search("light", limit=3)
        again = await search.search("light", limit=3)
    finally:
        search.close()
    assert len(recording.threads) == 2
    assert again == first


class FailingOnceIndex(CorpusIndex):
    """A real index whose first search fails as a broken file would."""

    failed: bool

    def search(self, query: str, *, limit: int) -> list[SearchHit]:
        if not self.failed:
            self.failed = True
            raise sqlite3.DatabaseError("database disk image is malformed")
        return super().search(query, limit=limit)


async def test_a_failed_search_is_not_remembered(settings: Settings) -> None:
    path = settings.data_dir / "failing.sqlite3"
    path.parent.mkdir(parents=True)
    index = FailingOnceIndex.open(path)
    index.failed = False
    search = LocalSearch(index)
    try:
        with pytest.raises(SearchError, match="malformed"):
            await search.search("light", limit=2)
        assert await search.search("light", limit=2) == []
    finally:
        search.close()
