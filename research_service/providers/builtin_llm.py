"""The `builtin` model: deterministic keyword planning and an extractive, cited answer."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Final

from research_service.own_thread import OwnThread
from research_service.providers.base import (
    AnswerRequest,
    FollowUpRequest,
    Plan,
    PlanRequest,
    Source,
    Usage,
    estimate_tokens,
)
from research_service.providers.builtin_plan import (
    follow_up_queries,
    plan_queries,
    replan_queries,
)
from research_service.providers.questions import GENERIC_WORDS, RELATED_TERMS, VAGUE_WORDS, Question
from research_service.text import sentences, stem, stems, words

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
# When some source's title names the question's topic, the others only mention it in
# passing ("read CSV files" in the logging docs): their sentences count for less.
OFF_TOPIC_FACTOR: Final = 0.5
# Sentences that explain: the definition of a name the question uses ("`gzip.compress(…)`:
# Compress data …"), and a module's own summary ("This module provides …").
DEFINES_BONUS: Final = 0.3
SUMMARY_BONUS: Final = 0.2
LONG_SIGNATURE_CHARS: Final = 30
RELATED_CREDIT: Final = 0.5
VAGUE_WEIGHT: Final = 0.3
GENERIC_WEIGHT: Final = 0.5
# A sentence must be at least this relevant, relative to the best one, to be kept.
KEEP_RATIO: Final = 0.6
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
# "`gzip.compress(data)`: Compress …" or "class `csv.Dialect`: Describe …".
_DEFINITION = re.compile(r"(?:class |coroutine )?`([\w.]+)[(`]")
_SUMMARY = re.compile(r"(?:This|The [\w.]+) (?:module|package|library) ")


#: The builtin model's work is CPU (reading and scoring the sources' sentences), so it runs on a
#: thread of its own, one per process, never on the event loop: at 300 runs at once, answers
#: composed on the loop held it for up to ~200 ms (bench/README.md, scale benchmark).
_THREAD: Final = OwnThread("builtin-model", background=True)


class BuiltinLLM:
    """A stand-in language model that needs no network and always answers the same way."""

    name: str = "builtin"

    def __init__(self, *, token_delay_ms: float = DEFAULT_TOKEN_DELAY_MS) -> None:
        self.token_delay_ms = token_delay_ms

    async def plan(self, request: PlanRequest) -> Plan:
        """Return 1..`breadth` search queries built from the question's key terms."""
        if request.feedback is None:
            queries = await _THREAD.call(
                partial(plan_queries, request.question, breadth=request.breadth)
            )
        else:
            queries = await _THREAD.call(partial(replan_queries, request, breadth=request.breadth))
        request.report.usage(
            Usage(estimate_tokens(request.question), estimate_tokens(" ".join(queries))),
            estimated=True,
        )
        return Plan(queries)

    async def follow_up(self, request: FollowUpRequest) -> list[str]:
        """Queries for question terms no source mentions, then names the sources point to."""
        question, sources = request.question, request.sources
        queries = await _THREAD.call(
            partial(
                follow_up_queries, question, sources, asked=request.asked, breadth=request.breadth
            )
        )
        found = " ".join(s.snippet for s in sources)
        request.report.usage(
            Usage(estimate_tokens(question + found), estimate_tokens(" ".join(queries) or "-")),
            estimated=True,
        )
        return queries

    async def synthesize(self, request: AnswerRequest) -> AsyncIterator[str]:
        """Stream an extractive answer word by word, citing sources as `[id]`."""
        delay = self.token_delay_ms / 1000
        answer = await _THREAD.call(compose_answer, request.question, request.sources)
        prompt = estimate_tokens(request.question + "".join(s.snippet for s in request.sources))
        sent = 0
        try:
            for n, piece in enumerate(pieces(answer)):
                # Sleeping 0 still yields to the loop, so a fast answer cannot starve others.
                await asyncio.sleep(delay if n and delay else 0)
                # Counted before it is handed over: the run may stop reading right after.
                sent += len(piece)
                yield piece
        finally:
            # What was written, also when the run stopped reading early.
            request.report.usage(Usage(prompt, estimate_tokens(answer[:sent])), estimated=True)


def pieces(answer: str) -> list[str]:
    """`answer` split into words with their trailing whitespace; they join back exactly."""
    return _PIECE.findall(answer)


@dataclass(frozen=True, slots=True)
class _Candidate:
    score: float
    relevance: float
    rank: int
    position: int
    sentence: str
    source_id: int
    vocabulary: frozenset[str]


def compose_answer(question: str, sources: Sequence[Source]) -> str:
    """The best few sentences of the sources' snippets, each followed by its citation."""
    if not sources:
        return NOTHING_FOUND
    candidates, readable = _candidates(Question.read(question), sources)
    chosen = _choose(candidates)
    if not chosen:
        return _closest(sources)
    cited = [_cite(c.sentence, c.source_id) for c in chosen]
    best = chosen[0]
    # The sentence after the best one goes on explaining the same thing ("Coroutines will
    # be wrapped in a future …" after gather's definition), whatever words it uses.
    follow = readable.get((best.rank, best.position + 1))
    if (
        follow
        and not _DEFINITION.match(follow)
        and not any(_similar(_vocabulary(follow), c.vocabulary) for c in chosen)
    ):
        cited.insert(1, _cite(follow, best.source_id))
    return " ".join(cited[:MAX_SENTENCES])


def _candidates(
    asked: Question, sources: Sequence[Source]
) -> tuple[list[_Candidate], dict[tuple[int, int], str]]:
    """The scored sentences that say something the question asks, and all readable ones.

    The readable ones are keyed by (source rank, position in its snippet).
    """
    weights = {t: _weight(t) for t in asked.terms}
    total = sum(weights.values()) or 1.0
    # The names whose definition answers the question: its terms and what the docs call them.
    defined = {stem(t) for t in [*asked.terms, *asked.related] if t not in VAGUE_WORDS}
    subjects = asked.subjects
    titles = [frozenset(stems(words(s.title))) for s in sources]
    on_topic = [not subjects or any(_match(t, title) for t in subjects) for title in titles]
    focused = any(on_topic)
    candidates: list[_Candidate] = []
    readable: dict[tuple[int, int], str] = {}
    for rank, source in enumerate(sources):
        title_bonus = TITLE_BONUS * sum(w * _match(t, titles[rank]) for t, w in weights.items())
        title_bonus /= total
        # A snippet's lines are paragraphs; a heading line need not end with a full stop.
        # A source's own "[2]" (a footnote, a list index) must not read as a citation.
        text = _BRACKETED_NUMBER.sub(r"(\1)", source.snippet)
        found = [s for line in text.splitlines() for s in sentences(line)]
        for position, raw in enumerate(found):
            sentence = _LONG_CALL.sub(r"`\1(…)`", raw)
            if not _readable(sentence):
                continue
            readable[rank, position] = sentence
            vocabulary = _vocabulary(sentence)
            matched = sum(w * _match(t, vocabulary) for t, w in weights.items()) / total
            mentions = any(_match(t, vocabulary) for t in subjects)
            if matched <= 0 or (focused and not on_topic[rank] and not mentions):
                continue  # says nothing the question asks, or is off its topic
            defines = _defines(sentence, subjects)
            factor = 1.0 if on_topic[rank] or defines or not focused else OFF_TOPIC_FACTOR
            relevance = matched * factor + _explains(sentence, defined)
            score = relevance + SOURCE_BONUS * (1 - rank / len(sources)) + title_bonus
            score -= POSITION_PENALTY * position
            candidates.append(
                _Candidate(score, relevance, rank, position, sentence, source.id, vocabulary)
            )
    return candidates, readable


def _choose(candidates: list[_Candidate]) -> list[_Candidate]:
    """The best candidates, dropping weak ones and ones that repeat an earlier choice."""
    chosen: list[_Candidate] = []
    for candidate in sorted(candidates, key=lambda c: (-c.score, c.rank, c.position)):
        if chosen and candidate.relevance < KEEP_RATIO * chosen[0].relevance:
            continue
        if not any(_similar(candidate.vocabulary, c.vocabulary) for c in chosen):
            chosen.append(candidate)
        if len(chosen) == MAX_SENTENCES:
            break
    return chosen


def _weight(term: str) -> float:
    if term in VAGUE_WORDS:
        return VAGUE_WEIGHT
    return GENERIC_WEIGHT if term in GENERIC_WORDS else 1.0


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


def _vocabulary(sentence: str) -> frozenset[str]:
    """The stems a sentence says something about.

    A definition's heading counts with its full name and its last part, not the module
    it sits in: every sentence of `http.cookiejar` is in `http.*`, but that does not
    make each one about HTTP.
    """
    definition = _DEFINITION.match(sentence)
    if not definition:
        return frozenset(stems(words(sentence)))
    name = definition.group(1).lower()
    parts = name.split(".")
    # After the heading's closing backtick: its parameters are not what the text says.
    text = sentence[sentence.find("`", definition.end()) + 1 :]
    said = stems(set(words(text)))
    return frozenset(said | stems([parts[-1]]) | {name, f"{parts[0]}.{parts[-1]}"})


def _explains(sentence: str, defined: set[str]) -> float:
    """A bonus for defining a name the question uses, or for summing up a module."""
    definition = _DEFINITION.match(sentence)
    if definition:
        name = definition.group(1).rsplit(".", 1)[-1].lower()
        return DEFINES_BONUS if stem(name) in defined else 0.0
    return SUMMARY_BONUS if _SUMMARY.match(sentence) else 0.0


def _defines(sentence: str, subjects: list[str]) -> bool:
    """Whether a sentence is the definition of a subject: "`list.sort(…)`: Sort …"."""
    definition = _DEFINITION.match(sentence)
    if not definition:
        return False
    parts = set(definition.group(1).lower().split("."))
    return any(stem(t) in {stem(p) for p in parts} or t in parts for t in subjects)


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
    """`sentence` with `[id]` before its final stop."""
    text = sentence.strip()
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
