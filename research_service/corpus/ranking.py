"""How a query naming a document's subject lifts it, and which of its passages answers best."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Self

from research_service.text import key_terms, stems, words

# A query term equal to the whole name (`json`) or to a part of it (`json` in
# `json.scanner`): the package's own page outranks its helpers, and both outrank pages
# that only mention the word. A part counts for less because it is often a plain word
# ("parse" in `urllib.parse` for "parse command line arguments").
EXACT_NAME: Final = 2.0
SOME_PART: Final = 1.3
# What makes a passage the one to show, on top of each query term it covers.
DEFINES_BONUS: Final = 1.0
LEAD_BONUS: Final = 1.0

# Up to this many wanted stems, a passage's stems are searched for each; beyond, split once.
FEW_PROBES: Final = 12

# A docstring heading: "`gzip.compress(data)`:" or "class `csv.Dialect`:".
_HEADING = re.compile(r"^(?:class |coroutine )?`([\w.]+)[(`]", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Query:
    """A free-text query as the ranking sees it: its key terms and the forms they take."""

    terms: tuple[str, ...]
    wanted: frozenset[str]  # their stems: what a passage covers
    said: frozenset[str]  # as written (lowercase): what a heading is named by
    names: frozenset[str]  # with the prefixes of dotted terms: what a document is named by
    wanted_probes: tuple[str, ...]  # each wanted stem between spaces, to find in `spaced`
    said_probes: tuple[str, ...]  # each term said, between spaces

    @classmethod
    def of(cls, text: str) -> Self:
        """The query `text`, split into key terms once for every document and passage."""
        return cls.from_terms(key_terms(text))

    @classmethod
    def from_terms(cls, terms: Iterable[str], wanted: Iterable[str] | None = None) -> Self:
        """A query of these key terms, whose stems are `wanted` (by default, theirs)."""
        kept = tuple(terms)
        stemmed = frozenset(stems(kept) if wanted is None else wanted)
        said = frozenset(t.lower() for t in kept)
        return cls(
            terms=kept,
            wanted=stemmed,
            said=said,
            names=frozenset(_said(kept)),
            wanted_probes=tuple(f" {stem} " for stem in sorted(stemmed)),
            said_probes=tuple(f" {term} " for term in sorted(said)),
        )


def name_factor(name: str, terms: Iterable[str]) -> float:
    """The multiplier for a document called `name` found by a query with key terms `terms`."""
    return query_name_factor(name, Query.from_terms(terms))


def query_name_factor(name: str, query: Query) -> float:
    """`name_factor` for a query split once."""
    if not name:
        return 1.0
    whole, parts = _name_forms(name)
    if not query.names.isdisjoint(whole):
        return EXACT_NAME
    return 1.0 if query.names.isdisjoint(parts) else SOME_PART


def heading_names(body: str) -> list[str]:
    """What the docstring headings in `body` define, lowercased: `compress` for `gzip.compress`."""
    return [m.group(1).rsplit(".", 1)[-1].lower() for m in _HEADING.finditer(body)]


def opens_with_heading(body: str) -> bool:
    """Whether `body` starts with a docstring heading rather than prose."""
    return _HEADING.match(body) is not None


# A corpus repeats the same few thousand words. Tuples of strings, which the garbage collector
# stops tracking: a cache of sets would make every full collection of the service slower.
@functools.lru_cache(maxsize=1 << 16)
def term_stems(term: str) -> tuple[str, ...]:
    """`stems([term])`, cached: `stems` of many terms is the union of theirs."""
    return tuple(stems((term,)))


def stem_set(terms: Iterable[str]) -> set[str]:
    """`stems(terms)`, from the cache of each term's stems."""
    return set().union(*map(term_stems, terms))


def spaced(items: Iterable[str]) -> str:
    """The distinct `items`, sorted, each between spaces, so that `" word " in` finds one."""
    kept = sorted(set(items))
    return f" {' '.join(kept)} " if kept else ""


def fit(
    stems: str,
    headings: str,
    heading_stems: str,
    *,
    heading_first: bool,
    query: Query,
    opening: bool,
) -> float:
    """How well a passage answers `query`, from words noted of it when it was indexed.

    `stems` are the stems of its words, `headings` what its docstring headings define and
    `heading_stems` their stems, each `spaced`. One point per wanted stem it covers; one more
    if a heading in it is named by a term (it defines `gzip.compress` for "compress"), half
    if a term's stem is part of that name; and one more for the `opening` of the document the
    query names when it is prose, not a heading: it says what that document is for.
    """
    if len(query.wanted_probes) <= FEW_PROBES:
        score = float(len([probe for probe in query.wanted_probes if probe in stems]))
    else:  # splitting once beats many substring searches
        score = float(len(query.wanted.intersection(stems.split())))
    if headings:
        if any(probe in headings for probe in query.said_probes):
            score += DEFINES_BONUS
        elif any(probe in heading_stems for probe in query.wanted_probes):
            score += DEFINES_BONUS / 2
    if opening and not heading_first:
        score += LEAD_BONUS
    return score


def passage_fit(body: str, terms: Iterable[str], wanted: set[str], *, opening: bool) -> float:
    """How well a passage answers a query with key `terms`, whose stems are `wanted` (see `fit`)."""
    names = heading_names(body)
    return fit(
        spaced(stem_set(set(words(body)))),
        spaced(names),
        spaced(stem_set(names)),
        heading_first=opens_with_heading(body),
        query=Query.from_terms(terms, wanted),
        opening=opening,
    )


def _said(terms: Iterable[str]) -> set[str]:
    """The terms, and the prefixes of dotted ones: `os.path.join` also says `os.path`, `os`."""
    said: set[str] = set()
    for term in terms:
        parts = term.lower().split(".")
        said.update(".".join(parts[:n]) for n in range(1, len(parts) + 1))
        said.update(parts)
    return said


@functools.lru_cache(maxsize=1 << 12)  # the names of one corpus's documents
def _name_forms(name: str) -> tuple[frozenset[str], frozenset[str]]:
    """What says the name `name` (`json.scanner`), and what says one of its parts (`json`)."""
    lowered = name.lower()
    parts = frozenset().union(*map(_forms, lowered.split(".")))
    return _forms(lowered), parts


def _forms(name: str) -> frozenset[str]:
    """`name` with a plural either way (`dataclass`, `dataclasses`; `process`, `processes`)."""
    forms = {name, f"{name}s", name.removesuffix("s")}
    if name.endswith("es"):
        forms.add(name[:-2])
    return frozenset(forms)
