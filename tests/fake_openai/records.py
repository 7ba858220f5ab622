"""What the fake saw: each request as received, and how its response went."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from multidict import CIMultiDict

from tests.fake_openai.wire import message_text

if TYPE_CHECKING:
    from tests.fake_openai.script import Reply

CHAT_PATH = "/v1/chat/completions"


@dataclass(eq=False)
class RecordedRequest:
    """One request as received, with live signals about its response.

    `disconnected` is set when the client dropped the connection before the response was
    finished (never for the fake's own Cut or Reset); `completed` when the whole response was
    written; `tokens_sent` counts the deltas written before either happened, and `sent_at`
    holds `time.monotonic()` just after each of them was written (for latency benchmarks).
    """

    method: str
    path: str
    headers: CIMultiDict[str]
    raw: bytes
    at: float  # time.monotonic() on arrival
    body: Any = None  # the parsed JSON body, None if absent or not JSON
    number: int = 0  # 1-based arrival order among all requests to this fake
    status: int | None = None
    reply: Reply | None = None
    tokens_sent: int = 0
    text_sent: str = ""  # the content written, reasoning excluded
    sent_at: list[float] = field(default_factory=list)
    closed_by_server: bool = False
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    completed: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def parse(
        cls, method: str, path: str, headers: CIMultiDict[str], raw: bytes, at: float
    ) -> RecordedRequest:
        """Record a request, parsing its body as JSON when it is JSON."""
        record = cls(method=method, path=path, headers=headers, raw=raw, at=at)
        if raw:
            try:
                record.body = json.loads(raw)
            except ValueError:
                record.body = None
        return record

    @property
    def json(self) -> dict[str, Any]:
        """The JSON object body, or {} when the body was not a JSON object."""
        return self.body if isinstance(self.body, dict) else {}

    @property
    def authorization(self) -> str | None:
        return self.headers.get("Authorization")

    @property
    def model(self) -> str | None:
        model = self.json.get("model")
        return model if isinstance(model, str) else None

    @property
    def messages(self) -> list[dict[str, Any]]:
        messages = self.json.get("messages")
        if not isinstance(messages, list):
            return []
        return [m for m in messages if isinstance(m, dict)]

    @property
    def text(self) -> str:
        """Every message's text, one per line."""
        return "\n".join(message_text(m) for m in self.messages)

    @property
    def last_user_message(self) -> str:
        users = [m for m in self.messages if m.get("role") == "user"]
        return message_text(users[-1]) if users else ""

    @property
    def stream(self) -> bool:
        return self.json.get("stream") is True

    @property
    def include_usage(self) -> bool:
        options = self.json.get("stream_options")
        return self.stream and isinstance(options, dict) and options.get("include_usage") is True

    @property
    def response_format(self) -> dict[str, Any] | None:
        value = self.json.get("response_format")
        return value if isinstance(value, dict) else None

    @property
    def response_format_type(self) -> str | None:
        """`json_schema`, `json_object`, `text`, or None when absent."""
        value = (self.response_format or {}).get("type")
        return value if isinstance(value, str) else None

    @property
    def max_tokens(self) -> int | None:
        """`max_completion_tokens`, else `max_tokens`, when the request set one."""
        for key in ("max_completion_tokens", "max_tokens"):
            value = self.json.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        return None

    def describe(self) -> str:
        """A one-line summary for error messages: method, path, model, stream, last message."""
        last = self.last_user_message.replace("\n", " ")
        if len(last) > 80:
            last = last[:77] + "..."
        return (
            f"{self.method} {self.path} model={self.model!r} stream={self.stream} "
            f"response_format={self.response_format_type!r} last user message={last!r}"
        )
