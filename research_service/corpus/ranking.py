"""How much a query naming a document's subject (`csv`, `urllib.request`) lifts that document."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from research_service.text import stems, words

# A query term equal to the whole name (`json`) or to a part of it (`json` in
# `json.scanner`): the package's own page outranks its helpers, and both outrank pages
# that only mention the word. A part counts for less because it is often a plain word
# ("parse" in `urllib.parse` for "parse command line arguments").
EXACT_NAME: Final = 2.0
SOME_PART: Final = 1.3
# What makes a passage the one to show, on top of each query term it covers.
DEFINES_BONUS: Final = 1.0
LEAD_BONUS: Final = 1.0

# A docstring heading: "`gzip.compress(data)`:" or "class `csv.Dialect`:".
_HEADING = re.compile(r"^(?:class |coroutine )?`([\w.]+)[(`]", re.MULTILINE)


def name_factor(name: str, terms: Iterable[str]) -> float:
    """The multiplier for a document called `name` found by a query with key terms `terms`."""
    if not name:
        return 1.0
    said = _said(terms)
    parts = name.lower().split(".")
    if _named(name.lower(), said):
        return EXACT_NAME
    return SOME_PART if any(_named(part, said) for part in parts) else 1.0


def passage_fit(body: str, terms: Iterable[str], wanted: set[str], *, opening: bool) -> float:
    """How well a passage answers a query with key `terms`, whose stems are `wanted`.

    One point per term it covers; one more if a heading in it is named by a term (it
    defines `gzip.compress` for "compress"), half if a term is part of that name; and one
    more for the `opening` of the document the query names when it is prose, not a heading:
    it says what that document is for.
    """
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
    """The terms, and the prefixes of dotted ones: `os.path.join` also says `os.path`, `os`."""
    said: set[str] = set()
    for term in terms:
        parts = term.lower().split(".")
        said.update(".".join(parts[:n]) for n in range(1, len(parts) + 1))
        said.update(parts)
    return said


def _named(name: str, said: set[str]) -> bool:
    """Whether `name` was said, allowing a plural either way (`dataclass`, `dataclasses`)."""
    return any(form in said for form in (name, f"{name}s", name.removesuffix("s"))) or (
        name.endswith("es") and name[:-2] in said
    )
