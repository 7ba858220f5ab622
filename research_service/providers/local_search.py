"""The `local` search provider: bm25 over a corpus index on disk, no network."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import sqlite3
import time
from collections import OrderedDict
from pathlib import Path
from typing import Final

from research_service.corpus.files import SUFFIXES, folder_documents
from research_service.corpus.index import (
    CorpusIndex,
    ProgressCallback,
    SyncReport,
    update_failure,
)
from research_service.corpus.stdlib import stdlib_documents
from research_service.errors import ConfigError, SearchError
from research_service.own_thread import OwnThread
from research_service.providers.base import SearchHit
from research_service.settings import Settings

log = logging.getLogger(__name__)

STDLIB_INDEX: Final = "corpus-stdlib.sqlite3"
#: How many recent queries' hits are kept, and for how long (s): the index changes only when
#: it is synced (at start, or by `research-service index` beside a running service, which is
#: then seen within this time).
CACHE_SIZE: Final = 2048
CACHE_TTL_S: Final = 60.0
#: How often a search asks whether the index changed (an `index` run beside the service);
#: the answers kept from before a change are dropped.
VERSION_CHECK_S: Final = 1.0
FOLDER_HASH_CHARS: Final = 12


class LocalSearch:
    """Searches a `CorpusIndex` it is handed, on a thread of its own so the loop never blocks.

    One thread, because the index runs one query at a time anyway: more threads would only
    queue on its lock and take turns with the event loop for the GIL (bench/README.md, search).
    SQLite releases the GIL while it works, and the Python part of a query is short.
    """

    name: str = "local"

    def __init__(self, index: CorpusIndex, *, cache_size: int = CACHE_SIZE) -> None:
        """`cache_size` 0 keeps no answer: every query is searched (the search bench's way)."""
        self.index = index
        self._cache_size = cache_size
        self._thread = OwnThread("local-search", background=True)
        #: (query, limit) → its hits, or the search under way: many runs asking the same
        #: query at once (or within CACHE_TTL_S) search once.
        self._answers: OrderedDict[tuple[str, int], tuple[float, asyncio.Future[list[SearchHit]]]]
        self._answers = OrderedDict()
        self._version: int | None = None
        self._version_checked = -VERSION_CHECK_S

    async def search(self, query: str, *, limit: int) -> list[SearchHit]:
        """Return at most `limit` hits for `query`, best first; raise SearchError on failure."""
        key = (query, limit)
        now = time.monotonic()
        found = self._answers.get(key)
        if found is not None and now - self._version_checked >= VERSION_CHECK_S:
            # A kept answer, and the index not asked of late: an `index` run beside may have
            # changed it. (A search asks it anyway, in the same turn on the thread.)
            await self._check_version()
            found = self._answers.get(key)
        if found is not None and now - found[0] < CACHE_TTL_S:
            self._answers.move_to_end(key)
            # Shielded: one asker going away must not cancel the others' search.
            return list(await asyncio.shield(found[1]))
        answer = asyncio.ensure_future(self._search(query, limit=limit))
        self._answers[key] = (now, answer)
        while len(self._answers) > self._cache_size:
            self._answers.popitem(last=False)
        answer.add_done_callback(functools.partial(self._forget_failure, key))
        return list(await asyncio.shield(answer))

    async def _check_version(self) -> None:
        """Drop the kept answers if the index changed since they were searched."""
        if self._thread.closed:
            return  # the search that follows says the index is closed
        try:
            self._note_version(await self._thread.call(self.index.data_version))
        except sqlite3.Error:
            return  # the search that follows fails with the reason

    def _note_version(self, version: int) -> None:
        """The index's version as just read: answers kept from an earlier one are dropped.

        Searches under way stay: they run on the index as it is when their turn comes.
        """
        self._version_checked = time.monotonic()
        # The first reading only notes it: what was kept before was searched on that index.
        if self._version is not None and version != self._version:
            for key in [key for key, (_, answer) in self._answers.items() if answer.done()]:
                del self._answers[key]
        self._version = version

    def _forget_failure(
        self, key: tuple[str, int], answer: asyncio.Future[list[SearchHit]]
    ) -> None:
        """A search that failed (or was cancelled) is not remembered: the next asks again."""
        if answer.cancelled() or answer.exception() is not None:
            entry = self._answers.get(key)
            if entry is not None and entry[1] is answer:
                del self._answers[key]

    async def _search(self, query: str, *, limit: int) -> list[SearchHit]:
        if self._thread.closed:
            raise self._closed()
        try:
            version, hits = await self._thread.call(
                functools.partial(self._versioned_search, query, limit=limit)
            )
        except sqlite3.ProgrammingError as exc:  # the index closed while the query waited
            raise self._closed() from exc
        except sqlite3.Error as exc:
            raise SearchError(
                f"the local search index {self.index.path} failed ({exc}); "
                "delete that file and restart to rebuild it",
                provider=self.name,
            ) from exc
        self._note_version(version)
        return hits

    def _versioned_search(self, query: str, *, limit: int) -> tuple[int, list[SearchHit]]:
        """On the thread: the index's version, and the hits searched on that version."""
        return self.index.data_version(), self.index.search(query, limit=limit)

    def close(self) -> None:
        """Close the index this provider was handed; searches still queued find it closed."""
        self._thread.close()
        self.index.close()

    def _closed(self) -> SearchError:
        return SearchError(
            "the local search index is closed; the service is shutting down, try again "
            "once it is back",
            provider=self.name,
        )


def corpus_index_path(settings: Settings) -> Path:
    """The index file of the configured corpus: one per source, so switching keeps both."""
    if settings.corpus is None:
        return settings.data_dir / STDLIB_INDEX
    folder = str(corpus_folder(settings.corpus))
    digest = hashlib.sha256(folder.encode()).hexdigest()[:FOLDER_HASH_CHARS]
    return settings.data_dir / f"corpus-{digest}.sqlite3"


def corpus_folder(corpus: Path) -> Path:
    """The absolute form of a `--corpus` folder, which must exist."""
    folder = corpus.expanduser().resolve()
    if not folder.exists():
        raise ConfigError(f"corpus folder {folder} does not exist; create it or drop --corpus")
    if not folder.is_dir():
        raise ConfigError(f"corpus {folder} is a file, not a folder; pass its folder to --corpus")
    return folder


async def open_local_search(
    settings: Settings, *, progress: ProgressCallback | None = None
) -> LocalSearch:
    """Open (creating or updating) the index of the configured corpus and search it."""
    path = corpus_index_path(settings)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the data folder {path.parent} ({exc}); fix it or set --data-dir"
        ) from exc
    index = await asyncio.to_thread(_open_and_sync, settings, path=path, progress=progress)
    return LocalSearch(index)


def _open_and_sync(
    settings: Settings, *, path: Path, progress: ProgressCallback | None
) -> CorpusIndex:
    """Blocking: list the corpus, open its index and bring it up to date."""
    started = time.perf_counter()
    if settings.corpus is None:
        label, refs = "the Python standard library", stdlib_documents()
    else:
        folder = corpus_folder(settings.corpus)
        label, refs = str(folder), folder_documents(folder)
        if not refs:
            kinds = ", ".join(sorted(SUFFIXES))
            log.warning("corpus folder %s has no files of the kinds indexed (%s)", folder, kinds)
    try:
        index = CorpusIndex.open(path)
        try:
            report = index.sync(refs, progress=progress)
            stats = index.stats()
        except BaseException:
            index.close()
            raise
    except (sqlite3.Error, OSError) as exc:
        raise ConfigError(update_failure(path, exc)) from exc
    _log_summary(label, stats.documents, report, seconds=time.perf_counter() - started)
    return index


def _log_summary(label: str, documents: int, report: SyncReport, *, seconds: float) -> None:
    skipped = f", {report.skipped} unreadable" if report.skipped else ""
    log.info(
        "search corpus (%s): %d documents (%d added, %d updated, %d removed%s) in %.2f s",
        label,
        documents,
        report.added,
        report.updated,
        report.removed,
        skipped,
        seconds,
    )
