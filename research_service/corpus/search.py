"""One search of the index: documents ranked by bm25 and their names, each with its best passage.

bm25 ranks passages inside SQLite. The Python here re-ranks a few dozen documents by the name
they document, then picks the passage to show for the few it keeps, from what was noted of
each passage when it was indexed (research_service/corpus/facts.py): substring tests and set
lookups, no stemming and no regular expressions at query time.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Final

from research_service.corpus.facts import stored_snippet
from research_service.corpus.links import LinkBase
from research_service.corpus.ranking import EXACT_NAME, Query, fit, query_name_factor
from research_service.corpus.schema import (
    DOCUMENT_PASSAGES,
    MAX_PASSAGES,
    ROWID_BITS,
    SENTENCES,
    TOP_DOCUMENTS,
)
from research_service.hits import SearchHit

# Documents fetched per wanted hit, so that a named document ranked lower by bm25 alone
# can still be lifted into the results.
OVERFETCH: Final = 3
MIN_FETCH: Final = 20
SNIPPET_CHARS: Final = 400


@dataclass(frozen=True, slots=True)
class Shown:
    """A document found, scored, and the stored sentences of its passage to show."""

    score: float
    title: str
    url: str
    sentences: str


@dataclass(slots=True)
class _Found:
    """A document kept for the results, and its passage that answers the query best so far."""

    score: float
    named: bool  # by the query: its opening says what the query asks about
    title: str
    url: str
    passage: int = -1  # rowid
    fit: float = -1.0


def find(db: sqlite3.Connection, expression: str, query: Query, *, limit: int) -> list[Shown]:
    """The `limit` best documents for `query` (whose FTS5 form is `expression`), best first.

    Three reads on `db`, which the caller holds in one transaction.
    """
    fetch = max(limit * OVERFETCH, MIN_FETCH)
    found = _best_documents(db.execute(TOP_DOCUMENTS, (expression, fetch)), query, limit=limit)
    if not found:
        return []
    rows = db.execute(DOCUMENT_PASSAGES, (expression, json.dumps(list(found))))
    for rowid, stems, headings, heading_stems, heading_first in rows:
        doc = found[rowid >> ROWID_BITS]
        # Rows come best first, so a later passage wins only by answering better:
        # "asyncio.gather" should show gather's definition, not a page that says
        # "gather" five times about cancelling it.
        lead = doc.named and rowid & MAX_PASSAGES == 0
        score = fit(
            stems, headings, heading_stems, heading_first=heading_first, query=query, opening=lead
        )
        if score > doc.fit or (lead and score == doc.fit):  # the opening wins a tie
            doc.passage, doc.fit = rowid, score
    passages = json.dumps([doc.passage for doc in found.values()])
    sentences: dict[int, str] = dict(db.execute(SENTENCES, (passages,)).fetchall())
    return [Shown(doc.score, doc.title, doc.url, sentences[doc.passage]) for doc in found.values()]


def hits(shown: list[Shown], query: Query, *, link: LinkBase | None) -> list[SearchHit]:
    """The search results: each document with its snippet, linked under `link` if set."""
    return [
        SearchHit(
            title=doc.title,
            url=doc.url if link is None else link.rebase(doc.url),
            snippet=stored_snippet(doc.sentences, query.wanted, limit=SNIPPET_CHARS),
            score=round(doc.score, 4),
        )
        for doc in shown
    ]


def _best_documents(rows: sqlite3.Cursor, query: Query, *, limit: int) -> dict[int, _Found]:
    """The `limit` best of the documents bm25 ranked (best first), by bm25 times their name."""
    candidates: list[tuple[int, _Found]] = []
    for doc_id, rank, name, title, url in rows:
        factor = query_name_factor(name, query)
        candidates.append((doc_id, _Found(-rank * factor, factor == EXACT_NAME, title, url)))
    # Stable: equal scores keep bm25's order.
    candidates.sort(key=lambda item: -item[1].score)
    return dict(candidates[:limit])
