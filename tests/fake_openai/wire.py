"""The Chat Completions wire format as OpenAI speaks it: JSON bodies, SSE frames, request checks."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

JSON = dict[str, Any]

SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"
DONE_FRAME = b"data: [DONE]\n\n"
FINGERPRINT = "fp_fake_openai"
CREATED = 1_700_000_000
OWNER = "fake-openai"
RESPONSE_FORMATS = ("text", "json_object", "json_schema")

# OpenAI's error `type` for each status the fake can be told to return.
ERROR_TYPES: Mapping[int, str] = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    408: "timeout",
    409: "invalid_request_error",
    422: "invalid_request_error",
    429: "requests",
    500: "server_error",
    502: "server_error",
    503: "server_error",
}

_TOKEN = re.compile(r"\s*\S+|\s+")


def split_tokens(text: str) -> list[str]:
    """Split text into word pieces with their leading whitespace; they concatenate to `text`."""
    return _TOKEN.findall(text)


def sse(payload: JSON) -> bytes:
    """One SSE event carrying a JSON payload, framed as OpenAI frames it."""
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def error_body(
    status: int, message: str, *, code: str | None = None, param: str | None = None
) -> JSON:
    """An OpenAI error object: `{"error": {"message", "type", "param", "code"}}`."""
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def usage_body(prompt: int, completion: int, *, reasoning: int = 0) -> JSON:
    """A `usage` object; reasoning tokens are reported inside the completion tokens."""
    usage: JSON = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if reasoning:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return usage


def completion(
    *,
    id: str,
    model: str,
    content: str,
    reasoning: str | None,
    reasoning_field: str,
    finish_reason: str,
    usage: JSON | None,
) -> JSON:
    """A non-streaming `chat.completion` object with one choice."""
    message: JSON = {"role": "assistant", "content": content, "refusal": None}
    if reasoning is not None:
        message[reasoning_field] = reasoning
    body: JSON = {
        "id": id,
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "system_fingerprint": FINGERPRINT,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
        ],
    }
    if usage is not None:
        body["usage"] = usage
    return body


def chunk(
    *,
    id: str,
    model: str,
    delta: JSON,
    finish_reason: str | None = None,
    with_usage: bool = False,
) -> JSON:
    """A `chat.completion.chunk` with one choice; `usage: null` when usage was requested."""
    body: JSON = {
        "id": id,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
        "system_fingerprint": FINGERPRINT,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    if with_usage:
        body["usage"] = None
    return body


def usage_chunk(*, id: str, model: str, usage: JSON) -> JSON:
    """The last chunk under `stream_options.include_usage`: no choices, just usage."""
    return {
        "id": id,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
        "system_fingerprint": FINGERPRINT,
        "choices": [],
        "usage": usage,
    }


def models_list(models: Sequence[str]) -> JSON:
    """The body of `GET /v1/models`."""
    return {"object": "list", "data": [model_body(name) for name in models]}


def model_body(name: str) -> JSON:
    """One `model` object."""
    return {"id": name, "object": "model", "created": CREATED, "owned_by": OWNER}


def problem(body: Any) -> str | None:
    """Why a chat completions request body is invalid, as OpenAI would say it, or None."""
    if not isinstance(body, dict):
        return "We could not parse the JSON body of your request."
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "you must provide a model parameter"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty array"
    if any(not isinstance(m, dict) or "role" not in m for m in messages):
        return "each message must be an object with a 'role'"
    if body.get("stream_options") is not None and body.get("stream") is not True:
        return "The 'stream_options' parameter is only allowed when 'stream' is enabled."
    return _format_problem(body.get("response_format"))


def _format_problem(response_format: Any) -> str | None:
    if response_format is None:
        return None
    if not isinstance(response_format, dict) or response_format.get("type") not in RESPONSE_FORMATS:
        return f"Invalid value for 'response_format': {response_format!r}"
    if response_format["type"] != "json_schema":
        return None
    schema = response_format.get("json_schema")
    if not isinstance(schema, dict) or not isinstance(schema.get("name"), str):
        return "Missing required parameter: 'response_format.json_schema.name'."
    return None


def message_text(message: Mapping[str, Any]) -> str:
    """The text of a message whose content is a string or a list of text parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""
