"""The think filter: reasoning never reaches the answer, however the stream is chunked."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
from openai.types.chat import ChatCompletionChunk

from research_service.providers.reasoning import AnswerStream, ThinkFilter, strip_think

# (streamed text, visible text)
CASES = [
    ("plain answer [1].", "plain answer [1]."),
    ("", ""),
    ("<think>secret</think>Answer.", "Answer."),
    ("<think>secret</think>\n\nAnswer [1].", "Answer [1]."),
    ("Before <think>secret</think> after.", "Before after."),
    ("<think>a</think>A<think>b</think>B", "AB"),
    ("<think></think>Empty thoughts.", "Empty thoughts."),
    ("<think>multi\nline\nreasoning</think>\nDone.", "Done."),
    ("Answer then <think>unfinished thoughts", "Answer then "),
    ("<think>only reasoning", ""),
    ("a < b and c > d", "a < b and c > d"),
    (
        "<b>bold</b> is <thin> but <thinking> is not a tag",
        "<b>bold</b> is <thin> but <thinking> is not a tag",
    ),
    ("ends with <thi", "ends with <thi"),
    ("ends with <", "ends with <"),
    ("<think>x</thi", ""),
    ("stray </think> close", "stray </think> close"),
    ("<think>a <think> b</think>C", "C"),
    ("<<think>x</think>y", "<y"),
    ("<think>x</think>   ", ""),
    ("<think>x<</think>y", "y"),
]


def run_filter(pieces: list[str]) -> str:
    think = ThinkFilter()
    return "".join(think.feed(piece) for piece in pieces) + think.flush()


def splits(text: str, cuts: tuple[int, ...]) -> list[str]:
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


@pytest.mark.parametrize(("text", "visible"), CASES)
def test_whole_text(text: str, visible: str) -> None:
    assert run_filter([text]) == visible
    assert strip_think(text) == visible


@pytest.mark.parametrize(("text", "visible"), CASES)
def test_one_split_anywhere(text: str, visible: str) -> None:
    for cut in range(len(text) + 1):
        assert run_filter(splits(text, (cut,))) == visible, cut


@pytest.mark.parametrize(("text", "visible"), CASES)
def test_two_splits_anywhere(text: str, visible: str) -> None:
    for cuts in itertools.combinations_with_replacement(range(len(text) + 1), 2):
        assert run_filter(splits(text, cuts)) == visible, cuts


@pytest.mark.parametrize(("text", "visible"), CASES)
def test_character_by_character(text: str, visible: str) -> None:
    assert run_filter(list(text)) == visible


def test_visible_text_is_not_held_back_needlessly() -> None:
    think = ThinkFilter()
    assert think.feed("Hello ") == "Hello "
    assert think.feed("world") == "world"


def test_partial_tag_is_held_until_decided() -> None:
    think = ThinkFilter()
    assert think.feed("Hi <th") == "Hi "
    assert think.feed("ere") == "<there"


def test_reasoning_is_dropped_as_it_streams() -> None:
    think = ThinkFilter()
    assert think.feed("<think>") == ""
    assert think.feed("long reasoning") == ""
    assert think.feed("</think>") == ""
    assert think.feed("\n\n") == ""
    assert think.feed("Answer") == "Answer"


def test_flush_resets_for_reuse() -> None:
    think = ThinkFilter()
    think.feed("<think>unfinished")
    assert think.flush() == ""
    assert think.feed("<thi") == ""
    assert think.flush() == "<thi"
    assert think.flush() == ""


def chunk(delta: dict[str, Any], **fields: Any) -> ChatCompletionChunk:
    choice = {"index": 0, "delta": delta, "finish_reason": fields.pop("finish_reason", None)}
    body = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [choice],
        **fields,
    }
    return ChatCompletionChunk.model_validate(body)


def test_answer_stream_ignores_reasoning_fields_but_counts_them() -> None:
    state = AnswerStream()
    assert state.take(chunk({"reasoning_content": "hidden"})) == ""
    assert state.take(chunk({"reasoning": "also hidden"})) == ""
    assert state.take(chunk({"content": "<think>x</think>Shown"})) == "Shown"
    assert state.received_chars == len("hidden" + "also hidden" + "<think>x</think>Shown")


def test_answer_stream_keeps_finish_reason_and_usage() -> None:
    state = AnswerStream()
    state.take(chunk({"content": "A"}, finish_reason="length"))
    usage_only = ChatCompletionChunk.model_validate(
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "m",
            "choices": [],
            "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
        }
    )
    assert state.take(usage_only) == ""
    assert state.finish_reason == "length"
    assert state.usage is not None
    assert (state.usage.prompt_tokens, state.usage.completion_tokens) == (7, 2)


def test_answer_stream_reads_only_the_first_choice() -> None:
    state = AnswerStream()
    other = chunk({"content": "first"})
    other.choices[0].index = 1
    assert state.take(other) == ""


def test_the_whole_text_form_and_the_stream_agree_on_any_mix_of_tags() -> None:
    """`strip_think` (one regular expression) and ThinkFilter (fed in pieces) are one rule."""
    parts = ["<think>", "</think>", "<thi", "nk>", "</th", "a", " ", "\n", "x y", "<", ">", "/"]
    rng = random.Random(7)
    for _ in range(20_000):
        text = "".join(rng.choice(parts) for _ in range(rng.randint(0, 12)))
        think, streamed, at = ThinkFilter(), [], 0
        while at < len(text):
            size = rng.randint(1, 5)
            streamed.append(think.feed(text[at : at + size]))
            at += size
        streamed.append(think.flush())
        assert "".join(streamed) == strip_think(text), text


def test_a_reply_of_many_tags_is_read_in_one_pass() -> None:
    """A million tags: each step starts where the last ended (no copy of the rest per tag)."""
    reply = "<think></think>x" * 1_000_000
    think = ThinkFilter()
    assert think.feed(reply) + think.flush() == "x" * 1_000_000
    assert strip_think(reply) == "x" * 1_000_000
