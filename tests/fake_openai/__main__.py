"""Serve the fake OpenAI server by hand, answering every request with one scripted reply.

    python -m tests.fake_openai --port 8081 --reply "Hello [1]."

Flags:
  --host HOST            interface to listen on (default 127.0.0.1)
  --port PORT            port to listen on (default 8081; 0 picks a free one)
  --reply TEXT           the answer to every chat completion request
  --plan JSON            the answer to requests asking for JSON (response_format); default --reply
  --reasoning TEXT       stream this as `reasoning_content` deltas before the answer
  --model NAME           a model listed by GET /v1/models (repeatable; default fake-model)
  --api-key KEY          answer 401 unless the request carries `Authorization: Bearer KEY`
  --interval SECONDS     pace streamed deltas this far apart (0.001 is 1,000 tokens/s)
  --reject-json-schema   answer json_schema response formats with a 400, like older servers
  --no-usage             report no usage, even when the client asks for it

Point a client at http://HOST:PORT/v1, e.g. OPENAI_BASE_URL=http://127.0.0.1:8081/v1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from tests.fake_openai.app import DEFAULT_MODEL
from tests.fake_openai.script import Reply, wants_json
from tests.fake_openai.server import FakeOpenAI
from tests.loopback import HOST

DEFAULT_PORT = 8081
DEFAULT_REPLY = "Hello from the fake OpenAI server [1]."


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fake_openai",
        description="A fake OpenAI Chat Completions server with one scripted reply.",
    )
    parser.add_argument("--host", default=HOST, help="interface to listen on")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    parser.add_argument("--reply", default=DEFAULT_REPLY, help="the answer to every request")
    parser.add_argument("--plan", help="the answer to requests asking for JSON output")
    parser.add_argument("--reasoning", help="reasoning_content streamed before the answer")
    parser.add_argument(
        "--model", action="append", dest="models", help="a model to list (repeatable)"
    )
    parser.add_argument("--api-key", help="require this bearer token")
    parser.add_argument("--interval", type=float, default=0.0, help="seconds between deltas")
    parser.add_argument(
        "--reject-json-schema", action="store_true", help="answer json_schema formats with a 400"
    )
    parser.add_argument("--no-usage", action="store_true", help="report no token usage")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    """Serve until cancelled."""
    fake = FakeOpenAI(
        host=args.host,
        port=args.port,
        models=args.models or [DEFAULT_MODEL],
        api_key=args.api_key,
        reject_json_schema=args.reject_json_schema,
        strict=False,
    )
    options: dict[str, Any] = {"interval": args.interval, "reasoning": args.reasoning}
    if args.no_usage:
        options["usage"] = None
    if args.plan is not None:
        fake.script.always(Reply(args.plan, when=wants_json, **options))
    fake.script.always(Reply(args.reply, **options))
    async with fake:
        print(f"fake OpenAI server on {fake.base_url} (Ctrl-C to stop)", flush=True)
        await asyncio.Event().wait()


def main(argv: Sequence[str] | None = None) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(parse_args(argv)))


if __name__ == "__main__":
    main()
