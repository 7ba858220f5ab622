"""A fake OpenAI Chat Completions server that the real `openai` SDK talks to over loopback.

    async with FakeOpenAI() as fake:
        fake.script.reply("Hello [1].", usage=Usage(12, 3))
        fake.script.fail(rate_limited(retry_after=2))
        client = AsyncOpenAI(base_url=fake.base_url, api_key="test", max_retries=0)

Run it by hand with `python -m tests.fake_openai --help`.
"""

from tests.fake_openai.app import DEFAULT_MODEL, FakeState, create_app
from tests.fake_openai.faults import (
    Cut,
    ErrorEvent,
    Fault,
    HTTPError,
    Malformed,
    Pause,
    Reset,
    SlowResponse,
    Stall,
    rate_limited,
)
from tests.fake_openai.records import RecordedRequest
from tests.fake_openai.script import (
    Predicate,
    Reply,
    Script,
    Usage,
    for_model,
    mentions,
    streaming,
    wants_json,
    wants_json_schema,
)
from tests.fake_openai.server import FakeOpenAI

__all__ = [
    "DEFAULT_MODEL",
    "Cut",
    "ErrorEvent",
    "FakeOpenAI",
    "FakeState",
    "Fault",
    "HTTPError",
    "Malformed",
    "Pause",
    "Predicate",
    "RecordedRequest",
    "Reply",
    "Reset",
    "Script",
    "SlowResponse",
    "Stall",
    "Usage",
    "create_app",
    "for_model",
    "mentions",
    "rate_limited",
    "streaming",
    "wants_json",
    "wants_json_schema",
]
