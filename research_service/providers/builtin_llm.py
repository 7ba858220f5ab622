"""The `builtin` model: deterministic keyword planning and an extractive, cited answer."""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Final

from research_service.corpus.text import key_terms, sentences, stem, stems, words
from research_service.providers.base import Source

DEFAULT_TOKEN_DELAY_MS: Final = 15.0
MAX_SENTENCES: Final = 4
MIN_SENTENCE_CHARS: Final = 25
MIN_SENTENCE_WORDS: Final = 4
MIN_LETTER_RATIO: Final = 0.55
# Sentences sharing this much of their vocabulary say the same thing twice.
DUPLICATE_OVERLAP: Final = 0.6
# Search ranks sources best first, so ties go to the earlier source.
SOURCE_BONUS: Final = 0.15
POSITION_PENALTY: Final = 0.02
# A source whose title names the question's terms is about them, not just mentioning them.
TITLE_BONUS: Final = 0.3
LONG_SIGNATURE_CHARS: Final = 30
FOCUS_SUFFIXES: Final = ("example", "usage")
# Words that say what to do rather than what it is done to: a weaker query on their own.
_ACTION_TEXT: Final = (
    "add append call change check compare convert copy create debug define delete find "
    "format handle implement import install iterate join load loop make merge open parse "
    "print read remove replace return run save send sort split start stop test update "
    "write"
)
ACTION_WORDS: Final = frozenset(_ACTION_TEXT.split())
# True of nearly every document in a Python corpus, so they narrow nothing down.
_VAGUE_TEXT: Final = (
    "python code program example examples thing things work works difference best "
    "function functions method methods module modules"
)
VAGUE_WORDS: Final = frozenset(_VAGUE_TEXT.split())
# What a question's verb is usually called in documentation; a match is worth half.
RELATED_TERMS: Final = {
    "parse": ("decode", "deserialize", "load", "loads", "read"),
    "serialize": ("encode", "dump", "dumps", "write"),
    "convert": ("encode", "decode", "format", "cast"),
    "download": ("urlopen", "fetch", "request", "retrieve"),
    "fetch": ("urlopen", "request", "get"),
    "delete": ("remove", "unlink", "rmtree"),
    "remove": ("delete", "unlink", "discard", "pop"),
    "run": ("execute", "call", "subprocess"),
    "concurrent": ("thread", "threads", "asyncio", "parallel"),
    "parallel": ("concurrent", "thread", "process", "multiprocessing"),
    "copy": ("copyfile", "duplicate", "clone"),
}
RELATED_CREDIT: Final = 0.5
VAGUE_WEIGHT: Final = 0.3
# A sentence must match more than this share of the best sentence's score to be kept.
KEEP_RATIO: Final = 0.5
MAX_CODE_SYMBOLS: Final = 0.03
CODE_SYMBOLS: Final = frozenset("{}[]|$=<>;\\")
NOTHING_FOUND: Final = (
    "I found nothing relevant to this question in the corpus. Try other words for it, "
    "or point --corpus at documents that cover it."
)

_LONG_CALL = re.compile(rf"`([\w.]+)\(([^`]{{{LONG_SIGNATURE_CHARS},}})\)`")
_BRACKETED_NUMBER = re.compile(r"\[(\d+)\]")
_PIECE = re.compile(r"\S+\s*|\s+")
# Prose starts with a capital or a `code` name; docstrings also start with `call(...)`.
_SENTENCE_START = re.compile(r"(?:class |coroutine )?[`\"'(\[*]?[A-Z0-9`]|[\w.]+\(")


class BuiltinLLM:
    """A stand-in language model that needs no network and always answers the same way."""

    name: str = "builtin"

    def __init__(self, *, token_delay_ms: float = DEFAULT_TOKEN_DELAY_MS) -> None:
        self.token_delay_ms = token_delay_ms

    async def plan(self, question: str, *, breadth: int) -> list[str]:
        """Return 1..`breadth` search queries built from the question's key terms."""
        return plan_queries(question, breadth=breadth)

    async def synthesize(self, question: str, sources: Sequence[Source]) -> AsyncIterator[str]:
        """Stream an extractive answer word by word, citing sources as `[id]`."""
        delay = self.token_delay_ms / 1000
        for n, piece in enumerate(pieces(compose_answer(question, sources))):
            # Sleeping 0 still yields to the loop, so a fast answer cannot starve other runs.
            await asyncio.sleep(delay if n and delay else 0)
            yield piece


def pieces(answer: str) -> list[str]:
    """`answer` split into words with their trailing whitespace; they join back exactly."""
    return _PIECE.findall(answer)


def _specificity(term: str) -> int:
    if "." in term or "_" in term or any(c.isdigit() for c in term):
        return 3  # an identifier names exactly one thing
    if term in VAGUE_WORDS:
        return 0
    return 1 if term in ACTION_WORDS else 2


def plan_queries(question: str, *, breadth: int) -> list[str]:
    """Distinct queries, broadest first, at most `breadth`; never empty.

    All key terms; those without vague words; each identifier alone; adjacent pairs; single
    specific terms; then the most specific term with "example" and "usage".
    """
    terms = key_terms(question)
    if not terms:
        return [" ".join(question.split()) or "?"]
    useful = [t for t in terms if _specificity(t) > 0]
    top = max(terms, key=_specificity)  # the first of the most specific ones
    candidates = [" ".join(terms), " ".join(useful)]
    candidates += [t for t in terms if "." in t]
    candidates += [f"{a} {b}" for a, b in itertools.pairwise(useful)]
    candidates += sorted(
        (t for t in useful if _specificity(t) >= 2), key=_specificity, reverse=True
    )
    candidates += [f"{top} {suffix}" for suffix in FOCUS_SUFFIXES]
    queries: list[str] = []
    for query in candidates:
        if query and query not in queries:
            queries.append(query)
    return queries[: max(1, breadth)]


@dataclass(frozen=True, slots=True)
class _Candidate:
    score: float
    matched: float
    rank: int
    position: int
    sentence: str
    source_id: int
    vocabulary: frozenset[str]


def compose_answer(question: str, sources: Sequence[Source]) -> str:
    """The best few sentences of the sources' snippets, each followed by its citation."""
    if not sources:
        return NOTHING_FOUND
    weights = {t: (VAGUE_WEIGHT if t in VAGUE_WORDS else 1.0) for t in key_terms(question)}
    total = sum(weights.values()) or 1.0
    candidates: list[_Candidate] = []
    for rank, source in enumerate(sources):
        title_words = frozenset(stems(words(source.title)))
        title_bonus = TITLE_BONUS * sum(w * _match(t, title_words) for t, w in weights.items())
        title_bonus /= total
        # A snippet's lines are paragraphs; a heading line need not end with a full stop.
        # A source's own "[2]" (a footnote, a list index) must not read as a citation.
        text = _BRACKETED_NUMBER.sub(r"(\1)", source.snippet)
        found = [s for line in text.splitlines() for s in sentences(line)]
        for position, sentence in enumerate(found):
            if not _readable(sentence):
                continue
            vocabulary = frozenset(stems(words(sentence)))
            matched = sum(w * _match(t, vocabulary) for t, w in weights.items()) / total
            if matched <= 0:
                continue
            score = matched + SOURCE_BONUS * (1 - rank / len(sources)) + title_bonus
            score -= POSITION_PENALTY * position
            candidates.append(
                _Candidate(score, matched, rank, position, sentence, source.id, vocabulary)
            )
    candidates.sort(key=lambda c: (-c.score, c.rank, c.position))
    chosen: list[_Candidate] = []
    for candidate in candidates:
        if chosen and candidate.matched <= KEEP_RATIO * chosen[0].matched:
            continue
        if not any(_similar(candidate.vocabulary, c.vocabulary) for c in chosen):
            chosen.append(candidate)
        if len(chosen) == MAX_SENTENCES:
            break
    if not chosen:
        return _closest(sources)
    return " ".join(_cite(c.sentence, c.source_id) for c in chosen)


def _match(term: str, vocabulary: frozenset[str]) -> float:
    """How well `vocabulary` covers `term`: 1 if it has it, less for related words or parts."""
    parts = [p for p in term.split(".") if p]
    if len(parts) > 1:
        if term in vocabulary:
            return 1.0
        return 0.5 if any(stem(p) in vocabulary for p in parts) else 0.0
    if stem(term) in vocabulary:
        return 1.0
    related = RELATED_TERMS.get(term, ())
    return RELATED_CREDIT if any(stem(r) in vocabulary for r in related) else 0.0


def _readable(sentence: str) -> bool:
    """Whether a sentence reads as prose on its own (not code, a fragment or a cut-off)."""
    letters = sum(c.isalpha() or c.isspace() for c in sentence)
    return (
        len(sentence) >= MIN_SENTENCE_CHARS
        and len(sentence.split()) >= MIN_SENTENCE_WORDS
        and letters / len(sentence) >= MIN_LETTER_RATIO
        and ">>>" not in sentence
        and sum(c in CODE_SYMBOLS for c in sentence) / len(sentence) <= MAX_CODE_SYMBOLS
        and not sentence.endswith(("…", ":", ","))
        and _SENTENCE_START.match(sentence) is not None
    )


def _similar(a: frozenset[str], b: frozenset[str]) -> bool:
    return bool(a and b) and len(a & b) / len(a | b) >= DUPLICATE_OVERLAP


def _cite(sentence: str, source_id: int) -> str:
    """`sentence` with `[id]` before its final stop, long signatures shortened to `f(…)`."""
    text = _LONG_CALL.sub(r"`\1(…)`", sentence.strip())
    if text[-1] in ".!?":
        return f"{text[:-1]} [{source_id}]{text[-1]}"
    return f"{text} [{source_id}]."


def _closest(sources: Sequence[Source]) -> str:
    """The answer when no sentence mentions the question's terms: point at the top sources."""
    named = [f"{s.title} [{s.id}]" for s in sources[:3]]
    if len(named) == 1:
        closest = f"The closest match is {named[0]}"
    else:
        closest = f"The closest matches are {', '.join(named[:-1])} and {named[-1]}"
    return (
        f"None of the sources found answers this directly. {closest}; try asking with other words."
    )
