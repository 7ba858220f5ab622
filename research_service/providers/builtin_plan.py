"""The `builtin` model's planning: search queries from the question, the sources and feedback."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from research_service.providers.base import PlanRequest, Source
from research_service.providers.questions import Question
from research_service.text import words

__all__ = ["follow_up_queries", "plan_queries", "replan_queries"]

# A dotted name such as json.loads or asyncio.tasks.gather (not "e.g" or version numbers).
_DOTTED = re.compile(r"\b[a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)+\b")


def follow_up_queries(
    question: str, sources: Sequence[Source], *, asked: Sequence[str], breadth: int
) -> list[str]:
    """What a researcher would search next, from what the sources found and did not.

    First the question's terms that no source mentions, each with the topic ("gzip level"
    when nothing found said "level"); then the dotted names the found snippets use that
    contain a question term and were not searched yet ("json.loads" found in the json
    docs), which reads the pages the first round only pointed to. [] when nothing is left.
    """
    asked_question = Question.read(question)
    topic = asked_question.topic
    if not topic:
        return []
    seen_text = " ".join(f"{s.title} {s.snippet}" for s in sources).lower()
    seen_words = set(words(seen_text))
    searched = {frozenset(q.lower().split()) for q in asked}
    candidates = [
        f"{topic} {term}" if term != topic else term
        for term in asked_question.useful
        if term not in seen_words
    ]
    # "asyncio.gather" also makes "asyncio" a term, so its siblings (asyncio.wait) follow.
    terms = {part for term in asked_question.useful for part in term.split(".")}
    candidates += sorted(
        {
            name
            for name in _DOTTED.findall(seen_text)
            if any(part in terms for part in name.split("."))
        },
        key=seen_text.index,
    )
    queries: list[str] = []
    for query in candidates:
        key = frozenset(query.split())
        if key not in searched:
            searched.add(key)
            queries.append(query)
    return queries[:breadth]


#: Words of a reviewer's feedback that steer the plan rather than name what to search.
_STEERING_WORDS: Final = (
    "focus more less instead please also add include drop remove search look only rather not "
    "avoid prefer about on at in the a an and or of to for with i mean meant want need like it "
    "is be should use just"
)
_STEERING: Final = frozenset(_STEERING_WORDS.split())


def replan_queries(request: PlanRequest, *, breadth: int) -> list[str]:
    """A plan that follows a reviewer's feedback: its terms first, then the question's.

    Queries the reviewer already saw go last, so the new plan differs where it can.
    """
    assert request.feedback is not None
    words = [w.strip(".,;:!?…\"'()") for w in request.feedback.split()]
    asked = [w for w in words if w and not w.isdigit() and w.casefold() not in _STEERING]
    queries = plan_queries(f"{' '.join(asked)} {request.question}", breadth=breadth * 2)
    seen = {" ".join(q.split()).casefold() for q in request.previous}
    fresh = [q for q in queries if q.casefold() not in seen]
    return (fresh + [q for q in queries if q.casefold() in seen])[:breadth]


def plan_queries(question: str, *, breadth: int) -> list[str]:
    """Distinct queries, most telling first, at most `breadth`; never empty.

    Every query keeps the question's topic, so each one's top hits are about it: all the
    useful terms with what the docs call them ("parse json decode load"), which makes the
    snippets show the passage defining them; each identifier alone; the topic with each
    other term ("gzip compress", "gzip file").
    """
    asked = Question.read(question)
    if not asked.terms:
        return [" ".join(question.split()) or "?"]
    useful, topic = asked.useful, asked.topic
    candidates = [" ".join(useful + asked.related)]
    candidates += [t for t in useful if "." in t]
    candidates += [f"{topic} {t}" for t in useful if t != topic]
    queries: list[str] = []
    seen: set[frozenset[str]] = set()
    for query in candidates:
        # Search terms are OR-ed, so "csv read" finds the same as "read csv".
        if frozenset(query.split()) not in seen:
            seen.add(frozenset(query.split()))
            queries.append(query)
    return queries[: max(1, breadth)]
