"""What the index notes of each passage as it writes it, so that a search need not re-read it.

Stemming every matching passage at query time was two thirds of a search's cost (issue 16);
the same stems, headings and sentences are worked out once here, when the passage is indexed,
and the search only compares sets and picks a sentence.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Final

from research_service.corpus.ranking import heading_names, opens_with_heading, spaced, stem_set
from research_service.text import sentences, shorten, words

# The paragraph break of `research_service.text.snippet`, whose snippets these reproduce
# (tests/test_corpus_index.py checks that both agree on every passage of the stdlib).
_PARAGRAPH_BREAK: Final = re.compile(r"\n[ \t]*\n+")


@dataclass(frozen=True, slots=True)
class PassageFacts:
    """A passage's ranking inputs, as stored: space-separated words and a JSON list."""

    stems: str  # the stems of every word in it
    headings: str  # what its docstring headings define (`compress` for `gzip.compress`)
    heading_stems: str  # the stems of those names
    heading_first: bool  # it starts with a heading, not prose
    sentences: str  # JSON [[paragraph number, sentence, the sentence's stems], ...]


def passage_facts(body: str) -> PassageFacts:
    """Everything a search needs of the passage `body` but its text."""
    parts: list[tuple[int, str, str]] = []
    # Sentences only lose whitespace, which no word spans: their stems are the passage's.
    every: set[str] = set()
    for number, paragraph in enumerate(_PARAGRAPH_BREAK.split(body)):
        for sentence in sentences(paragraph):
            found = stem_set(words(sentence))
            every |= found
            parts.append((number, sentence, " ".join(sorted(found))))
    names = heading_names(body)
    return PassageFacts(
        stems=spaced(every),
        headings=spaced(names),
        heading_stems=spaced(stem_set(names)),
        heading_first=opens_with_heading(body),
        sentences=json.dumps(parts, ensure_ascii=False, separators=(",", ":")),
    )


def covered(stems: str, wanted: frozenset[str]) -> int:
    """How many of the `wanted` stems a sentence with stored `stems` (space-separated) holds."""
    return len(wanted.intersection(stems.split()))


def stored_snippet(stored: str, wanted: frozenset[str], *, limit: int) -> str:
    """`research_service.text.snippet` of a passage, from its stored sentences.

    The part of the passage (about `limit` chars) from the sentence that covers most of the
    `wanted` stems; sentences joined by a space within a paragraph, a newline between.
    """
    parts: list[tuple[int, str, str]] = json.loads(stored)
    if not parts:
        return ""
    hits = [covered(stems, wanted) for _, _, stems in parts]
    start = hits.index(max(hits))
    # When the match is near the end, some text before it is better than a short snippet.
    while start > 0 and sum(len(s) + 1 for _, s, _ in parts[start - 1 :]) < limit // 2:
        start -= 1
    pieces: list[str] = []
    for index in range(start, len(parts)):
        number, sentence, _ = parts[index]
        if index > start:
            pieces.append(" " if parts[index - 1][0] == number else "\n")
        pieces.append(sentence)
        if sum(map(len, pieces)) > limit:
            break
    return shorten("".join(pieces), limit)
