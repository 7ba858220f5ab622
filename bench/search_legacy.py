"""The local search as it was before issue 16 (research-service 36f0c67), kept to measure against.

Its query and its re-ranking are copied verbatim from that commit's `CorpusIndex.search` and
`corpus/ranking.py`. It reads only the `documents` and `passages` tables, which the index still
has in the same form, so it runs on today's index: the bench times it beside today's search and
a bare FTS5 bm25() query on one file, in one run, and checks that both searches answer alike.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from research_service.corpus.index import fts_query
from research_service.hits import SearchHit
from research_service.text import key_terms, snippet, stems, words

EXACT_NAME: Final = 2.0
SOME_PART: Final = 1.3
DEFINES_BONUS: Final = 1.0
LEAD_BONUS: Final = 1.0
OVERFETCH: Final = 3
MIN_FETCH: Final = 20
SNIPPET_CHARS: Final = 400
_HEADING = re.compile(r"^(?:class |coroutine )?`([\w.]+)[(`]", re.MULTILINE)

SEARCH: Final = """
WITH hits AS MATERIALIZED (
    SELECT rowid >> 20 AS doc_id, rowid & 1048575 AS n, body,
           bm25(passages, 10.0, 4.0, 1.0) AS rank
    FROM passages WHERE passages MATCH ?
),
top AS (SELECT doc_id, MIN(rank) AS rank FROM hits GROUP BY doc_id ORDER BY rank LIMIT ?)
SELECT top.doc_id, d.name, d.title, d.url, top.rank, hits.n, hits.body
FROM top JOIN hits USING (doc_id) JOIN documents AS d ON d.id = top.doc_id
ORDER BY top.rank, top.doc_id, hits.rank
"""


@dataclass(frozen=True, slots=True)
class _Found:
    score: float
    fit: float
    title: str
    url: str
    body: str


class LegacySearch:
    """`CorpusIndex.search` of 36f0c67 on its own connection (links are not rebased)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._lock = threading.Lock()

    def search(self, query: str, *, limit: int) -> list[SearchHit]:
        """The `limit` best documents for free-text `query`, each with its best passage."""
        expression = fts_query(query)
        if not expression or limit <= 0:
            return []
        fetch = max(limit * OVERFETCH, MIN_FETCH)
        with self._lock:
            rows = self._db.execute(SEARCH, (expression, fetch)).fetchall()
        terms = key_terms(query)
        wanted = stems(terms)
        found: dict[int, _Found] = {}
        for doc_id, name, title, url, doc_rank, number, body in rows:
            factor = name_factor(name, terms)
            lead = number == 0 and factor == EXACT_NAME
            fit = passage_fit(body, terms, wanted, opening=lead)
            if doc_id in found and (found[doc_id].fit, False) >= (fit, lead):
                continue
            found[doc_id] = _Found(-doc_rank * factor, fit, title, url, body)
        ranked = sorted(found.values(), key=lambda f: -f.score)[:limit]
        return [
            SearchHit(
                title=f.title,
                url=f.url,
                snippet=snippet(f.body, terms, limit=SNIPPET_CHARS),
                score=round(f.score, 4),
            )
            for f in ranked
        ]


def name_factor(name: str, terms: Iterable[str]) -> float:
    if not name:
        return 1.0
    said = _said(terms)
    parts = name.lower().split(".")
    if _named(name.lower(), said):
        return EXACT_NAME
    return SOME_PART if any(_named(part, said) for part in parts) else 1.0


def passage_fit(body: str, terms: Iterable[str], wanted: set[str], *, opening: bool) -> float:
    fit: float = len(wanted & stems(set(words(body))))
    said = {t.lower() for t in terms}
    names = [m.group(1).rsplit(".", 1)[-1].lower() for m in _HEADING.finditer(body)]
    if any(name in said for name in names):
        fit += DEFINES_BONUS
    elif any(wanted & stems([name]) for name in names):
        fit += DEFINES_BONUS / 2
    if opening and not _HEADING.match(body):
        fit += LEAD_BONUS
    return fit


def _said(terms: Iterable[str]) -> set[str]:
    said: set[str] = set()
    for term in terms:
        parts = term.lower().split(".")
        said.update(".".join(parts[:n]) for n in range(1, len(parts) + 1))
        said.update(parts)
    return said


def _named(name: str, said: set[str]) -> bool:
    return any(form in said for form in (name, f"{name}s", name.removesuffix("s"))) or (
        name.endswith("es") and name[:-2] in said
    )
