"""What a cassette line must hold, checked when the cassette loads, not when a run meets it.

A line edited by hand (or cut by a full disk) that passed as an exchange failed the runs that
asked for it with `internal` errors quoting Python (`KeyError('usage')`), or played wrong runs:
negative token counts, an answer string streamed a character at a time.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Final

from research_service.hits import SearchHit

#: The exchange kinds a cassette holds, by what taped them.
KINDS: Final = frozenset({"plan", "follow_up", "synthesize", "search"})
_HIT_FIELDS: Final = {f.name for f in fields(SearchHit)}
_HIT_TEXT: Final = ("title", "url", "snippet")


def check_exchange(entry: Any) -> None:
    """Raise ValueError saying what is wrong unless `entry` is a cassette exchange."""
    if not isinstance(entry, dict):
        raise ValueError("not a JSON object")
    kind = entry.get("kind")
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is none of {', '.join(sorted(KINDS))}")
    if not isinstance(entry.get("key"), str):
        raise ValueError("no key")
    if "response" not in entry:
        raise ValueError("no response")
    response = entry["response"]
    if kind == "search":
        _hits(response)
        return
    if not isinstance(response, dict):
        raise ValueError(f"the {kind} response is not an object")
    if kind == "synthesize":
        _texts(response.get("pieces"), "pieces")
    else:
        _texts(response.get("queries"), "queries")
    if kind == "plan" and not isinstance(response.get("fallback", ...), str | None):
        raise ValueError("the plan's fallback is neither text nor null")
    _usage(response.get("usage"))


def _texts(value: Any, name: str) -> None:
    if not isinstance(value, list) or not all(isinstance(text, str) for text in value):
        raise ValueError(f"{name} is not a list of strings")


def _usage(value: Any) -> None:
    if not isinstance(value, list):
        raise ValueError("usage is not a list")
    for item in value:
        if not (
            isinstance(item, list)
            and len(item) == 3
            and all(_count(n) for n in item[:2])
            and isinstance(item[2], bool)
        ):
            raise ValueError("usage holds something other than [prompt, completion, estimated]")


def _count(value: Any) -> bool:
    return type(value) is int and value >= 0


def _hits(value: Any) -> None:
    if not isinstance(value, list):
        raise ValueError("the search response is not a list of hits")
    for hit in value:
        if not isinstance(hit, dict) or not set(_HIT_TEXT) <= set(hit) <= _HIT_FIELDS:
            raise ValueError(f"a hit is not an object of {', '.join(sorted(_HIT_FIELDS))}")
        if not all(isinstance(hit[name], str) for name in _HIT_TEXT):
            raise ValueError("a hit's title, url or snippet is not text")
        score = hit.get("score", 0.0)
        if isinstance(score, bool) or not isinstance(score, int | float):
            raise ValueError("a hit's score is not a number")
