"""Reading a Chat Completions reply the SDK hands over unchecked: its message, its usage."""

from __future__ import annotations

from typing import Final

from openai import AsyncStream
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessage
from openai.types.completion_usage import CompletionUsage

from research_service.providers.base import Usage
from research_service.providers.llm_errors import MalformedReply

#: More tokens than any one call could use (no context window comes near): a server's figure
#: past this is taken as no figure, and the call's usage estimated.
MAX_REPORTED_TOKENS: Final = 100_000_000


def reported_usage(usage: object) -> Usage | None:
    """The server's usage report as a Usage, if it sent one that holds counts."""
    if not isinstance(usage, CompletionUsage):
        return None
    counts = (usage.prompt_tokens or 0, usage.completion_tokens or 0)
    if not all(type(count) is int and 0 <= count <= MAX_REPORTED_TOKENS for count in counts):
        # The SDK does not check: "many", -3 or 10**30 would break the run's accounting.
        return None
    return Usage(*counts)


def completion_message(completion: object) -> ChatCompletionMessage | None:
    """The first choice's message of a completion; raise MalformedReply if it has no such shape.

    The SDK does not validate replies: a 200 that is not JSON comes back as a `str`, and a
    JSON object of another shape as a ChatCompletion whose fields hold anything.
    """
    if not isinstance(completion, ChatCompletion):
        raise MalformedReply("a body that is not JSON")
    choices = completion.choices
    if choices is not None and not isinstance(choices, list):
        raise MalformedReply("its choices are not a list")
    if not choices:
        return None
    message = getattr(choices[0], "message", None)
    if not isinstance(message, ChatCompletionMessage):
        raise MalformedReply("its first choice has no message")
    if not isinstance(message.content, str | None) or not isinstance(message.refusal, str | None):
        raise MalformedReply("its message's content is not text")
    return message


def check_event_stream(stream: AsyncStream[ChatCompletionChunk]) -> None:
    """Raise MalformedReply if an answer that ended without a chunk was not an event stream.

    The SDK reads any body as a stream: a proxy's HTML page is a stream of no events.
    """
    content_type = stream.response.headers.get("content-type", "")
    if "text/event-stream" not in content_type.lower():
        raise MalformedReply(f"a {content_type or 'untyped'} body, not an event stream")
