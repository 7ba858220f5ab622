"""The passages of a page that best answer a query, within a character budget."""

from __future__ import annotations

import math
from collections import Counter
from typing import Final

from research_service.text import key_terms, passages, shorten, stems, words

PASSAGE_MIN_CHARS: Final = 300
PASSAGE_MAX_CHARS: Final = 800
# BM25's usual constants: term-frequency saturation and length normalisation.
BM25_K1: Final = 1.2
BM25_B: Final = 0.75


def best_passages(text: str, *, query: str, budget_chars: int) -> list[str]:
    """The passages of `text` that best match `query`, in page order, totalling <= budget_chars.

    Passages are ranked by BM25 over the query's terms, with the page's own passages as the
    collection. If none matches, the page's opening passages are taken instead: the search
    engine thought the page relevant, and a page's lead usually says what it is about.
    """
    if budget_chars <= 0:
        return []
    max_chars = min(PASSAGE_MAX_CHARS, budget_chars)
    chunks = passages(text, min_chars=min(PASSAGE_MIN_CHARS, max_chars // 2), max_chars=max_chars)
    scores = bm25(chunks, stems(key_terms(query)))
    ranked = sorted((i for i, score in enumerate(scores) if score > 0), key=lambda i: -scores[i])
    order = ranked or list(range(len(chunks)))
    picked: dict[int, str] = {}
    used = 0
    for index in order:
        chunk = chunks[index]
        room = budget_chars - used
        if len(chunk) > room:
            if picked:
                continue  # a shorter, lower-ranked passage may still fit
            chunk = shorten(chunk, room)
        picked[index] = chunk
        used += len(chunk)
    return [picked[index] for index in sorted(picked)]


def bm25(chunks: list[str], wanted: set[str]) -> list[float]:
    """The BM25 score of each chunk for the query stems `wanted`."""
    if not chunks or not wanted:
        return [0.0] * len(chunks)
    counts = [_stem_counts(chunk) for chunk in chunks]
    lengths = [sum(count.values()) for count in counts]
    average = sum(lengths) / len(lengths) or 1.0
    total = len(chunks)
    idf = {
        term: math.log(1 + (total - df + 0.5) / (df + 0.5))
        for term in wanted
        if (df := sum(1 for count in counts if term in count))
    }
    scores: list[float] = []
    for count, length in zip(counts, lengths, strict=True):
        norm = BM25_K1 * (1 - BM25_B + BM25_B * length / average)
        scores.append(
            sum(
                weight * count[term] * (BM25_K1 + 1) / (count[term] + norm)
                for term, weight in idf.items()
                if term in count
            )
        )
    return scores


def _stem_counts(chunk: str) -> Counter[str]:
    """How often each stem (as `research_service.text.stems` forms them) occurs in `chunk`."""
    counts: Counter[str] = Counter()
    for word in words(chunk):
        counts.update(stems((word,)))
    return counts
