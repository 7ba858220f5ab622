"""A full-text index of one corpus in one SQLite file (FTS5, bm25), kept in sync incrementally."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from research_service import sqlite_errors
from research_service.corpus.documents import Document, DocumentRef
from research_service.corpus.facts import passage_facts
from research_service.corpus.links import LinkBase
from research_service.corpus.ranking import Query
from research_service.corpus.schema import MAX_PASSAGES, ROWID_BITS, SCHEMA, SCHEMA_VERSION, TABLES
from research_service.corpus.search import find, hits
from research_service.hits import SearchHit
from research_service.text import STOPWORDS, key_terms, passages

log = logging.getLogger(__name__)

MAX_QUERY_TERMS: Final = 32
BUSY_TIMEOUT_S: Final = 30.0
# The `meta` row holding the indexer's `--base-url` (JSON), read by every search.
LINK_BASE_KEY: Final = "link_base"
# After this many changed documents the FTS b-trees are merged, which keeps queries fast.
OPTIMIZE_AFTER: Final = 100

ProgressCallback = Callable[[int, int], None]
"""Called with (documents looked at, documents in total) after each document of a sync."""


@dataclass(frozen=True, slots=True)
class SyncReport:
    """How many documents one sync added, updated, removed, left alone, or could not read."""

    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    skipped: int = 0

    @property
    def changed(self) -> int:
        """Documents whose passages were written or deleted."""
        return self.added + self.updated + self.removed


@dataclass(frozen=True, slots=True)
class IndexStats:
    """The size of an index."""

    documents: int
    passages: int


def update_failure(path: Path, exc: sqlite3.Error | OSError) -> str:
    """Why the index at `path` could not be opened or updated, and what to do about it."""
    if path.is_dir():
        return f"{path} is a folder, not an index file; give the index a file of its own"
    code = sqlite_errors.primary_code(path, exc)
    if code == sqlite_errors.FULL:
        return f"the disk holding the search index {path} is full; free some space and try again"
    if code == sqlite_errors.BUSY:
        return (
            f"another research-service (`serve` or `index`) is writing the search index {path}; "
            "wait for it to finish and try again"
        )
    if code in (sqlite_errors.NOTADB, sqlite_errors.CORRUPT):
        return (
            f"{path} is not a search index, or a damaged one ({exc}); if it is an index, "
            "delete it to rebuild it, else give the index another file"
        )
    if code in (sqlite_errors.READONLY, sqlite_errors.CANTOPEN):
        return (
            f"the search index {path} cannot be written ({exc}); check the permissions of the "
            "file and its folder"
        )
    return f"the search index {path} failed ({exc}); delete the file to rebuild it"


def fts_query(text: str) -> str:
    """Free text as a safe FTS5 query: each term quoted, terms OR-ed; '' when none is left."""
    phrases: dict[str, None] = {}
    for term in key_terms(text):
        # Terms hold only word characters and dots, so quoting makes FTS5 syntax inert.
        phrases.setdefault(f'"{term}"')
        if "." in term:
            # `asyncio.gather` is the phrase "asyncio gather"; its parts also match alone.
            for part in term.split("."):
                if len(part) > 1 and part not in STOPWORDS:
                    phrases.setdefault(f'"{part}"')
    return " OR ".join(list(phrases)[:MAX_QUERY_TERMS])


class CorpusIndex:
    """Documents split into passages, searchable by bm25, in one SQLite file.

    Thread-safe: one connection (opened with check_same_thread=False) is shared by the
    threads that call `search`, and a lock serializes its use. A query takes about a
    millisecond of CPU (bench/README.md), so serializing them costs less than a connection
    per call. Each passage is written with its facts (research_service/corpus/facts.py), so
    that a search ranks without re-reading passages.
    """

    def __init__(self, connection: sqlite3.Connection, *, path: Path) -> None:
        self._db = connection
        self._lock = threading.Lock()
        self.path = path

    @classmethod
    def open(cls, path: Path) -> Self:
        """Open the index at `path`, creating it (or rebuilding an old schema) as needed."""
        db = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        try:
            # Checked inside the write lock, so two processes opening a new file agree.
            db.execute("BEGIN IMMEDIATE")
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None or row[0] != SCHEMA_VERSION:
                if row is not None:
                    log.info("search index %s has schema %s; rebuilding it", path, row[0])
                for table in TABLES:
                    db.execute(f"DROP TABLE IF EXISTS {table}")
                for statement in SCHEMA:
                    db.execute(statement)
                db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema', ?)",
                    (SCHEMA_VERSION,),
                )
            db.execute("COMMIT")
        except BaseException:
            db.close()
            raise
        return cls(db, path=path)

    def sync(
        self, documents: Iterable[DocumentRef], *, progress: ProgressCallback | None = None
    ) -> SyncReport:
        """Make the index hold exactly `documents`, re-reading only changed ones."""
        refs = list(documents)
        total = len(refs)
        added = updated = unchanged = skipped = 0
        with self._lock:
            stored: dict[str, tuple[int, str]] = {
                key: (doc_id, fingerprint)
                for doc_id, key, fingerprint in self._db.execute(
                    "SELECT id, key, fingerprint FROM documents"
                )
            }
            seen: set[str] = set()
            # One transaction: a sync is all or nothing, and thousands of inserts commit once.
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for done, ref in enumerate(refs, start=1):
                    if ref.key in seen:
                        log.warning("two documents share the key %r; keeping the first", ref.key)
                        continue
                    old = stored.get(ref.key)
                    if old is not None and old[1] == ref.fingerprint:
                        unchanged += 1
                        seen.add(ref.key)
                    elif (document := ref.load()) is None:
                        skipped += 1  # unreadable now: a stale copy must not linger either
                    else:
                        seen.add(ref.key)
                        self._write(document, doc_id=None if old is None else old[0])
                        if old is None:
                            added += 1
                        else:
                            updated += 1
                    if progress is not None:
                        progress(done, total)
                gone = [doc_id for key, (doc_id, _) in stored.items() if key not in seen]
                for doc_id in gone:
                    self._delete(doc_id)
                report = SyncReport(added, updated, len(gone), unchanged, skipped)
                if report.changed >= OPTIMIZE_AFTER:
                    self._db.execute("INSERT INTO passages (passages) VALUES ('optimize')")
                self._db.execute("COMMIT")
            except BaseException:
                # SQLite rolls back by itself on a full disk: a ROLLBACK then would fail, and
                # hide why ("cannot rollback - no transaction is active").
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        return report

    def _write(self, document: Document, *, doc_id: int | None) -> None:
        """Insert a document, or replace the one with `doc_id`, and its passages."""
        chunks = passages(document.text)
        if len(chunks) > MAX_PASSAGES:
            log.warning("document %r is too long; indexing its start only", document.key)
            chunks = chunks[:MAX_PASSAGES]
        values = (document.name, document.title, document.url, document.fingerprint, len(chunks))
        if doc_id is None:
            cursor = self._db.execute(
                "INSERT INTO documents (key, name, title, url, fingerprint, passages) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (document.key, *values),
            )
            assert cursor.lastrowid is not None  # an INSERT into a rowid table always sets it
            doc_id = cursor.lastrowid
        else:
            self._delete_passages(doc_id)
            self._db.execute(
                "UPDATE documents SET name = ?, title = ?, url = ?, fingerprint = ?, passages = ? "
                "WHERE id = ?",
                (*values, doc_id),
            )
        base = doc_id << ROWID_BITS
        self._db.executemany(
            "INSERT INTO passages (rowid, name, title, body) VALUES (?, ?, ?, ?)",
            ((base + n, document.name, document.title, chunk) for n, chunk in enumerate(chunks)),
        )
        facts = (passage_facts(chunk) for chunk in chunks)
        self._db.executemany(
            "INSERT INTO passage_facts (id, stems, headings, heading_stems, heading_first, "
            "sentences) VALUES (?, ?, ?, ?, ?, ?)",
            ((base + n, f.stems, f.headings, f.heading_stems, f.heading_first, f.sentences)
             for n, f in enumerate(facts)),
        )  # fmt: skip

    def _delete(self, doc_id: int) -> None:
        self._delete_passages(doc_id)
        self._db.execute("DELETE FROM documents WHERE id = ?", (doc_id,))

    def _delete_passages(self, doc_id: int) -> None:
        span = (doc_id << ROWID_BITS, (doc_id << ROWID_BITS) + MAX_PASSAGES)
        self._db.execute("DELETE FROM passages WHERE rowid BETWEEN ? AND ?", span)
        self._db.execute("DELETE FROM passage_facts WHERE id BETWEEN ? AND ?", span)

    def search(self, query: str, *, limit: int) -> list[SearchHit]:
        """The `limit` best documents for free-text `query`, each with its best passage."""
        expression = fts_query(query)
        if not expression or limit <= 0:
            return []
        asked = Query.of(query)
        with self._lock:
            # One read transaction: a sync in another process cannot land between the reads.
            self._db.execute("BEGIN")
            try:
                shown = find(self._db, expression, asked, limit=limit)
                link = self._link_base()
            finally:
                self._db.execute("COMMIT")
        return hits(shown, asked, link=link)  # the snippets, with the connection free

    def data_version(self) -> int:
        """A number that changes whenever another connection (an `index` beside) commits."""
        with self._lock:
            row = self._db.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    def link_base(self) -> LinkBase | None:
        """Where results link to instead of their `file://` URLs; None when nowhere else."""
        with self._lock:
            return self._link_base()

    def set_link_base(self, link: LinkBase | None) -> None:
        """Make every later search (in any process) link under `link`, or drop it with None."""
        with self._lock:
            if link is None:
                self._db.execute("DELETE FROM meta WHERE key = ?", (LINK_BASE_KEY,))
            else:
                value = json.dumps({"prefix": link.prefix, "base": link.base})
                self._db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (LINK_BASE_KEY, value)
                )

    def _link_base(self) -> LinkBase | None:
        # Read on every search, so a running service follows a re-run of the indexer.
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (LINK_BASE_KEY,)).fetchone()
        if row is None:
            return None
        stored = json.loads(row[0])
        return LinkBase(prefix=str(stored["prefix"]), base=str(stored["base"]))

    def stats(self) -> IndexStats:
        """How many documents and passages the index holds."""
        with self._lock:
            count, total = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(passages), 0) FROM documents"
            ).fetchone()
        return IndexStats(documents=count, passages=total)

    def close(self) -> None:
        """Close the database; later calls fail with sqlite3.ProgrammingError."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
