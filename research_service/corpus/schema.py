"""The index's SQLite layout: its tables, how passages are numbered, and its search query."""

from __future__ import annotations

from typing import Final

# Bump when the tables, the tokenizer or the passage splitting change: an index of another
# version is rebuilt from scratch.
SCHEMA_VERSION: Final = "2"
# A title match says more about a document than one more mention in its body, and a query
# that names what a document documents (`csv`, `gzip`) wants that document above all.
NAME_WEIGHT: Final = 10.0
TITLE_WEIGHT: Final = 4.0
BODY_WEIGHT: Final = 1.0
# Passage n of document d has rowid (d << ROWID_BITS) + n, so dropping a document's passages
# is a rowid range delete, which FTS5 does without scanning the table.
ROWID_BITS: Final = 20
MAX_PASSAGES: Final = (1 << ROWID_BITS) - 1

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
)

# bm25() only works in the query that runs MATCH, so the per-passage ranks are materialized
# first; documents are ranked by their best passage, and all their matching passages come
# back so that the snippet can be taken from the one that answers the query best.
SEARCH: Final = f"""
WITH hits AS MATERIALIZED (
    SELECT rowid >> {ROWID_BITS} AS doc_id, rowid & {MAX_PASSAGES} AS n, body,
           bm25(passages, {NAME_WEIGHT}, {TITLE_WEIGHT}, {BODY_WEIGHT}) AS rank
    FROM passages WHERE passages MATCH ?
),
top AS (SELECT doc_id, MIN(rank) AS rank FROM hits GROUP BY doc_id ORDER BY rank LIMIT ?)
SELECT top.doc_id, d.name, d.title, d.url, top.rank, hits.n, hits.body
FROM top JOIN hits USING (doc_id) JOIN documents AS d ON d.id = top.doc_id
ORDER BY top.rank, top.doc_id, hits.rank
"""
