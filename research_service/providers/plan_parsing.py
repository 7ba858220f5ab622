"""The planning protocol: how a plan is asked for, and reading it out of the model's reply.

Parsing forgives the ways models wrap and bend JSON: code fences, prose around it, trailing
commas, a bare list, a single string.
"""

from __future__ import annotations

import enum
import itertools
import json
import re
from collections.abc import Iterator, Sequence
from typing import Final

import openai
from openai.types.chat import ChatCompletionMessageParam
from openai.types.chat.completion_create_params import ResponseFormat

from research_service.providers.base import Source
from research_service.providers.reasoning import strip_think
from research_service.text import well_formed

PLAN_KEY: Final = "queries"
# Words in a 400/422 that mean the server does not support the response format we asked for.
FORMAT_REJECTION_WORDS: Final = ("response_format", "json_schema", "json_object")
# Keys models use instead of "queries" when they drift from the prompt.
PLAN_KEY_ALIASES: Final = ("queries", "search_queries", "searches", "query", "search_query")
QUERY_ITEM_KEYS: Final = ("query", "q", "text", "search")
MAX_QUERY_CHARS: Final = 300
# A plan is a few hundred characters; past this a reply is read no further (parsing runs on
# the event loop, and no plan needs more).
MAX_REPLY_CHARS: Final = 16_000
# Brackets tried as the start of the plan's JSON; each failed try may have read to the end.
MAX_DECODE_TRIES: Final = 100
EXCERPT_CHARS: Final = 80

PLAN_SYSTEM_PROMPT: Final = (
    "You plan web searches for a research question. Reply with JSON only, no prose and no "
    'code fences: {{"queries": ["...", "..."]}} holding 1 to {breadth} short, distinct search '
    "queries that together cover the question."
)
FOLLOW_UP_PROMPT: Final = (
    "You plan follow-up web searches for a research question. You are shown the searches "
    "already made and the sources they found. Reply with JSON only: "
    '{{"queries": ["...", "..."]}} holding up to {breadth} new, short search queries for what '
    "the sources do not answer yet, or an empty list when they answer the question fully."
)
FOLLOW_UP_SNIPPET_CHARS: Final = 300
PLAN_RETRY_PROMPT: Final = (
    "That reply was not a usable plan: {error}. Reply again with only a JSON object of the "
    'form {{"queries": ["..."]}} holding 1 to {breadth} search queries.'
)

# Each written so that no two parts can match the same characters: a reply of blanks
# cannot make them backtrack (a model that pads its reply must not stall the event loop).
_FENCE = re.compile(r"```(?:[ \t]*(?:json5?|JSON))?(.*?)```", re.DOTALL)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")
_LIST_ITEM = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+(\S.*)$")
_QUOTES = "\"'`“”‘’"  # noqa: RUF001 - models quote queries with typographic quotes too


class PlanParseError(ValueError):
    """The reply holds no usable plan; the message says why, in words a model can act on."""


class PlanFormat(enum.Enum):
    """How the plan's JSON is asked for, most to least strict; servers may reject the first two."""

    JSON_SCHEMA = "json_schema"
    JSON_OBJECT = "json_object"
    PROMPT = "prompt"

    def looser(self) -> PlanFormat:
        """The next format to try when the server rejects this one."""
        order = list(PlanFormat)
        return order[min(order.index(self) + 1, len(order) - 1)]


def plan_response_format(fmt: PlanFormat) -> ResponseFormat | None:
    """The `response_format` request field for `fmt` (None: rely on the prompt alone)."""
    if fmt is PlanFormat.JSON_OBJECT:
        return {"type": "json_object"}
    if fmt is PlanFormat.PROMPT:
        return None
    # No minItems/maxItems: not every strict-mode implementation accepts them; the prompt
    # states the count and parsing caps it.
    schema: dict[str, object] = {
        "type": "object",
        "properties": {"queries": {"type": "array", "items": {"type": "string"}}},
        "required": ["queries"],
        "additionalProperties": False,
    }
    return {
        "type": "json_schema",
        "json_schema": {"name": "search_plan", "strict": True, "schema": schema},
    }


def plan_messages(
    question: str, *, breadth: int, previous: Sequence[str] = (), feedback: str | None = None
) -> list[ChatCompletionMessageParam]:
    """The chat messages that ask for a plan of 1..`breadth` queries for `question`.

    A re-plan after review shows the model the plan the reviewer saw, then their feedback.
    """
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": PLAN_SYSTEM_PROMPT.format(breadth=breadth)},
        {"role": "user", "content": question},
    ]
    if feedback is not None:
        messages += [
            {"role": "assistant", "content": json.dumps({"queries": list(previous)})},
            {"role": "user", "content": REPLAN_PROMPT.format(feedback=feedback, breadth=breadth)},
        ]
    return messages


def follow_up_messages(
    question: str, sources: Sequence[Source], *, asked: Sequence[str], breadth: int
) -> list[ChatCompletionMessageParam]:
    """The chat messages that ask for follow-up queries given what the searches found."""
    searched = "\n".join(f"- {query}" for query in asked)
    found = "\n".join(f"[{s.id}] {s.title}: {s.snippet[:FOLLOW_UP_SNIPPET_CHARS]}" for s in sources)
    return [
        {"role": "system", "content": FOLLOW_UP_PROMPT.format(breadth=breadth)},
        {
            "role": "user",
            "content": f"Question: {question}\n\nAlready searched:\n{searched}\n\n"
            f"Found so far:\n{found or '(nothing)'}",
        },
    ]


#: A reviewer's feedback on the plan: plan again, taking it into account.
REPLAN_PROMPT: Final = (
    "A person reviewed this plan before any search ran, and asks for changes:\n\n{feedback}\n\n"
    "Plan again, taking their feedback into account: reply with JSON "
    '{{"queries": [...]}}, 1 to {breadth} search queries.'
)


def retry_plan_messages(
    reply: str | None, *, error: PlanParseError, breadth: int
) -> list[ChatCompletionMessageParam]:
    """The follow-up messages that show the model its unusable plan and why it was unusable."""
    return [
        {"role": "assistant", "content": reply or ""},
        {"role": "user", "content": PLAN_RETRY_PROMPT.format(error=error, breadth=breadth)},
    ]


def rejects_format(exc: openai.APIStatusError) -> bool:
    """Whether a 400/422 says the server does not support the requested response_format."""
    if exc.status_code not in (400, 422):
        return False
    said = f"{exc.message} {exc.body}".lower()
    return any(word in said for word in FORMAT_REJECTION_WORDS)


def parse_plan(text: str | None, *, breadth: int) -> list[str]:
    """Return the reply's search queries (1..`breadth`, cleaned); raise PlanParseError if none."""
    if text is None or not text.strip():
        raise PlanParseError("the reply was empty")
    visible = strip_think(text).strip()[:MAX_REPLY_CHARS]
    if not visible:
        raise PlanParseError("the reply held only reasoning, no plan")
    value = _find_json(visible)
    if value is _NOTHING:
        queries = _list_lines(visible)
        if not queries:
            raise PlanParseError(f"no JSON object found in the reply ({_excerpt(visible)})")
    else:
        queries = _queries_from(value)
    cleaned = clean_queries(queries)
    if not cleaned:
        raise PlanParseError(f'"{PLAN_KEY}" held no non-empty search queries')
    return cleaned[:breadth]


def clean_queries(queries: list[str]) -> list[str]:
    """Collapse whitespace, strip quotes, drop empty and repeated (case-insensitively) queries."""
    seen: set[str] = set()
    result: list[str] = []
    for query in queries:
        # The reply's JSON may hold lone surrogates ("\ud800"), which no event can carry.
        text = well_formed(" ".join(query.split()).strip(_QUOTES).strip()[:MAX_QUERY_CHARS])
        if text and text.casefold() not in seen:
            seen.add(text.casefold())
            result.append(text)
    return result


_NOTHING: Final = object()


def _find_json(text: str) -> object:
    """The first JSON value the reply holds (fenced, bare, or inside prose), or _NOTHING."""
    for candidate in _candidates(text):
        for source in (candidate, _TRAILING_COMMA.sub(r"\1", candidate)):
            value = _decode_first(source)
            if value is not _NOTHING:
                return value
    return _NOTHING


def _candidates(text: str) -> Iterator[str]:
    """Where JSON may be: inside code fences first, then the reply as a whole."""
    for match in _FENCE.finditer(text):
        yield match.group(1).strip()
    yield text


def _decode_first(text: str) -> object:
    """Decode the first `{…}` or `[…]` value in `text`, skipping prose before it."""
    decoder = json.JSONDecoder()
    starts = (index for index, char in enumerate(text) if char in "{[")
    for index in itertools.islice(starts, MAX_DECODE_TRIES):
        try:
            value, _ = decoder.raw_decode(text, index)
        except ValueError:
            continue
        except RecursionError:
            # Nested deeper than Python decodes: no plan, and trying from every bracket
            # inside it would take seconds.
            return _NOTHING
        if isinstance(value, dict) or (isinstance(value, list) and _looks_like_queries(value)):
            return value
    return _NOTHING


def _looks_like_queries(items: list[object]) -> bool:
    """Whether a bare list is a plan rather than prose like "see [1]"."""
    return bool(items) and all(isinstance(item, str | dict) for item in items)


def _queries_from(value: object) -> list[str]:
    """The queries a decoded JSON value holds; raise PlanParseError if its shape is wrong."""
    if isinstance(value, dict):
        found = next((value[key] for key in PLAN_KEY_ALIASES if key in value), _NOTHING)
        if found is _NOTHING:
            lists = [item for item in value.values() if isinstance(item, list)]
            if len(lists) != 1:
                keys = ", ".join(repr(key) for key in value) or "no keys"
                raise PlanParseError(f'the JSON object has no "{PLAN_KEY}" list (it has {keys})')
            found = lists[0]
        value = found
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise PlanParseError(f'"{PLAN_KEY}" must be a list of strings, not {_kind(value)}')
    queries: list[str] = []
    for item in value:
        if isinstance(item, str):
            queries.append(item)
        elif isinstance(item, dict):
            text = next((item[k] for k in QUERY_ITEM_KEYS if isinstance(item.get(k), str)), None)
            if text is None:
                raise PlanParseError(f'"{PLAN_KEY}" must hold strings, not objects like {item}')
            queries.append(text)
        else:
            raise PlanParseError(f'"{PLAN_KEY}" must hold strings, not {_kind(item)}')
    return queries


def _list_lines(text: str) -> list[str]:
    """Queries written as a bulleted or numbered list, when the model ignored the JSON request."""
    return [
        match.group(1).strip() for line in text.splitlines() if (match := _LIST_ITEM.match(line))
    ]


def _kind(value: object) -> str:
    """A JSON type name for `value`, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return "a string"


def _excerpt(text: str) -> str:
    """The start of `text` on one line, for an error message."""
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= EXCERPT_CHARS else flat[:EXCERPT_CHARS] + "…")
