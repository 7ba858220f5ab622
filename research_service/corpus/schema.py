"""The index's SQLite layout: its tables, how passages are numbered, and its search queries."""

from __future__ import annotations

from typing import Final

# Bump when the tables, the tokenizer, the passage splitting or what is noted of a passage
# change: an index of another version is rebuilt from scratch (a sync with progress).
# 3: `passage_facts` (issue 16).
SCHEMA_VERSION: Final = "3"
# A title match says more about a document than one more mention in its body, and a query
# that names what a document documents (`csv`, `gzip`) wants that document above all.
NAME_WEIGHT: Final = 10.0
TITLE_WEIGHT: Final = 4.0
BODY_WEIGHT: Final = 1.0
# Passage n of document d has rowid (d << ROWID_BITS) + n, so dropping a document's passages
# is a rowid range delete, which FTS5 does without scanning the table.
ROWID_BITS: Final = 20
MAX_PASSAGES: Final = (1 << ROWID_BITS) - 1

TABLES: Final = ("documents", "passages", "passage_facts")
SCHEMA: Final = (
    """CREATE TABLE documents (
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        title TEXT NOT NULL,
        url TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        passages INTEGER NOT NULL
    )""",
    "CREATE VIRTUAL TABLE passages USING fts5("
    "name, title, body, tokenize = 'porter unicode61 remove_diacritics 2')",
    # Keyed by the passage's rowid in `passages`; see research_service/corpus/facts.py.
    """CREATE TABLE passage_facts (
        id INTEGER PRIMARY KEY,
        stems TEXT NOT NULL,
        headings TEXT NOT NULL,
        heading_stems TEXT NOT NULL,
        heading_first INTEGER NOT NULL,
        sentences TEXT NOT NULL
    )""",
)

_BM25: Final = f"bm25(passages, {NAME_WEIGHT}, {TITLE_WEIGHT}, {BODY_WEIGHT})"

# A search is three reads in one transaction. First the documents, ranked by their best
# passage: bm25() only works in the query that runs MATCH, so the per-passage ranks are
# materialized first, and nothing but rowid and rank is carried for each matching passage.
TOP_DOCUMENTS: Final = f"""
WITH hits AS MATERIALIZED (
    SELECT rowid AS id, {_BM25} AS rank FROM passages WHERE passages MATCH ?
),
top AS (
    SELECT id >> {ROWID_BITS} AS doc_id, MIN(rank) AS rank
    FROM hits GROUP BY doc_id ORDER BY rank LIMIT ?
)
SELECT top.doc_id, top.rank, d.name, d.title, d.url
FROM top JOIN documents AS d ON d.id = top.doc_id
ORDER BY top.rank, top.doc_id
"""
# Then the matching passages of the few documents kept (a JSON list of ids), best first, with
# what was noted of each to pick the one to show. bm25 is worked out for these rows only.
DOCUMENT_PASSAGES: Final = f"""
SELECT passages.rowid, f.stems, f.headings, f.heading_stems, f.heading_first
FROM passages CROSS JOIN passage_facts AS f ON f.id = passages.rowid
WHERE passages MATCH ? AND passages.rowid >> {ROWID_BITS} IN (SELECT value FROM json_each(?))
ORDER BY {_BM25}, passages.rowid
"""
# Last, the sentences of the passages shown (a JSON list of rowids), for their snippets.
SENTENCES: Final = """
SELECT id, sentences FROM passage_facts WHERE id IN (SELECT value FROM json_each(?))
"""
