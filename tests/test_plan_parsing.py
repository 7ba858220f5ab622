"""Reading a search plan out of a model's reply, and how the plan is asked for."""

from __future__ import annotations

import httpx2
import openai
import pytest

from research_service.providers.plan_parsing import (
    PlanFormat,
    PlanParseError,
    clean_queries,
    parse_plan,
    plan_messages,
    plan_response_format,
    rejects_format,
    retry_plan_messages,
)

USABLE = [
    ('{"queries": ["a b", "c d"]}', ["a b", "c d"]),
    ('  {"queries": ["a"]}  \n', ["a"]),
    ('```json\n{"queries": ["fenced"]}\n```', ["fenced"]),
    ('```\n{"queries": ["bare fence"]}\n```', ["bare fence"]),
    ('Here is the plan:\n```json\n{"queries": ["x"]}\n```\nGood luck!', ["x"]),
    ('Sure! {"queries": ["in prose"]} Hope that helps.', ["in prose"]),
    ('{"queries": ["trailing", "comma",],}', ["trailing", "comma"]),
    ('{\n  "queries": [\n    "one",\n    "two",\n  ]\n}', ["one", "two"]),
    ('["top", "level", "list"]', ["top", "level", "list"]),
    ('{"queries": "a single string"}', ["a single string"]),
    ('"just a string"', None),  # a bare JSON string is not a plan
    ('{"search_queries": ["alias"]}', ["alias"]),
    ('{"query": "singular alias"}', ["singular alias"]),
    ('{"plan": ["only list value"]}', ["only list value"]),
    ('{"queries": [{"query": "obj one"}, {"q": "obj two"}]}', ["obj one", "obj two"]),
    ('[{"query": "list of objects"}]', ["list of objects"]),
    ('{"queries": ["  spaced   out  ", "dup", "DUP", ""]}', ["spaced out", "dup"]),
    ('{"queries": ["\\"quoted\\""]}', ["quoted"]),
    ('<think>let me plan</think>{"queries": ["after thinking"]}', ["after thinking"]),
    ('<think>{"queries": ["in thoughts"]}</think>{"queries": ["real"]}', ["real"]),
    ('See [1] for context. {"queries": ["skip the brackets"]}', ["skip the brackets"]),
    ("1. first query\n2. second query\n", ["first query", "second query"]),
    ("- bullet one\n* bullet two\n• bullet three", ["bullet one", "bullet two", "bullet three"]),
    ('{"queries": ["a", "b", "c", "d", "e"]}', ["a", "b", "c"]),
]

UNUSABLE = [
    (None, "the reply was empty"),
    ("", "the reply was empty"),
    ("   \n", "the reply was empty"),
    ("<think>only thoughts</think>", "held only reasoning"),
    ("I am not sure what to search for.", "no JSON object found"),
    ('{"queries": []}', "held no non-empty search queries"),
    ('{"queries": ["", "   "]}', "held no non-empty search queries"),
    ('{"queries": [1, 2]}', "must hold strings, not a number"),
    ('{"queries": [null]}', "must hold strings, not null"),
    ('{"queries": 42}', "must be a list of strings, not a number"),
    ('{"queries": {"nested": true}}', "must be a list of strings, not an object"),
    ('{"queries": [{"name": "x"}]}', "must hold strings, not objects"),
    ('{"answer": "no list", "why": "none"}', "has no \"queries\" list (it has 'answer', 'why')"),
    ('{"a": ["x"], "b": ["y"]}', 'has no "queries" list'),
    ('{"queries": ["unterminated"', "no JSON object found"),
]


@pytest.mark.parametrize(("reply", "queries"), USABLE)
def test_usable_replies(reply: str, queries: list[str] | None) -> None:
    if queries is None:
        with pytest.raises(PlanParseError):
            parse_plan(reply, breadth=3)
        return
    assert parse_plan(reply, breadth=3) == queries


@pytest.mark.parametrize(("reply", "reason"), UNUSABLE)
def test_unusable_replies_say_why(reply: str | None, reason: str) -> None:
    with pytest.raises(PlanParseError, match=None) as caught:
        parse_plan(reply, breadth=3)
    assert reason in str(caught.value)


def test_error_quotes_the_start_of_a_long_reply() -> None:
    reply = "No JSON here, " * 20
    with pytest.raises(PlanParseError) as caught:
        parse_plan(reply, breadth=3)
    message = str(caught.value)
    assert "'No JSON here, No JSON here," in message
    assert "…" in message
    assert len(message) < 150


def test_breadth_caps_the_queries() -> None:
    assert parse_plan('{"queries": ["a", "b", "c"]}', breadth=1) == ["a"]


def test_overlong_queries_are_cut() -> None:
    (query,) = parse_plan('{"queries": ["' + "x" * 1000 + '"]}', breadth=3)
    assert len(query) == 300


def test_clean_queries_strips_typographic_quotes() -> None:
    assert clean_queries(["“curly”", "'single'", "`tick`"]) == ["curly", "single", "tick"]


def test_json_schema_format_is_strict_and_requires_queries() -> None:
    fmt = plan_response_format(PlanFormat.JSON_SCHEMA)
    assert fmt is not None
    assert fmt["type"] == "json_schema"
    spec = fmt["json_schema"]
    assert spec["strict"] is True
    assert spec["schema"]["required"] == ["queries"]
    assert spec["schema"]["additionalProperties"] is False


def test_looser_formats() -> None:
    assert plan_response_format(PlanFormat.JSON_OBJECT) == {"type": "json_object"}
    assert plan_response_format(PlanFormat.PROMPT) is None
    assert PlanFormat.JSON_SCHEMA.looser() is PlanFormat.JSON_OBJECT
    assert PlanFormat.JSON_OBJECT.looser() is PlanFormat.PROMPT
    assert PlanFormat.PROMPT.looser() is PlanFormat.PROMPT


def test_plan_messages_state_the_breadth() -> None:
    system, user = plan_messages("What is X?", breadth=4)
    assert "1 to 4" in str(system.get("content"))
    assert user == {"role": "user", "content": "What is X?"}


def test_retry_messages_feed_the_error_back() -> None:
    error = PlanParseError("no JSON object found in the reply ('nope')")
    assistant, user = retry_plan_messages("nope", error=error, breadth=2)
    assert assistant == {"role": "assistant", "content": "nope"}
    assert "no JSON object found in the reply ('nope')" in str(user.get("content"))
    assert "1 to 2" in str(user.get("content"))


def status_error(status: int, message: str) -> openai.APIStatusError:
    request = httpx2.Request("POST", "http://test/v1/chat/completions")
    response = httpx2.Response(status, request=request)
    body = {"message": message, "type": "invalid_request_error"}
    return openai.APIStatusError(message, response=response, body=body)


@pytest.mark.parametrize(
    ("status", "message", "rejects"),
    [
        (400, "response_format type 'json_schema' is not supported", True),
        (400, "Unknown field json_object", True),
        (422, "response_format: extra fields not permitted", True),
        (400, "max_tokens is too large", False),
        (500, "response_format crashed us", False),
        (429, "slow down", False),
    ],
)
def test_rejects_format(status: int, message: str, rejects: bool) -> None:
    assert rejects_format(status_error(status, message)) is rejects
