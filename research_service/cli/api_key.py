"""The API key a client command sends: `--api-key`, else RESEARCH_API_KEY, never echoed."""

from __future__ import annotations

import argparse
import os
from typing import Final

from research_service.errors import ClientError

#: The API key sent to a --server that asks for one (`serve --auth keys`); --api-key wins.
API_KEY_ENV: Final = "RESEARCH_API_KEY"
#: What a key may hold: visible ASCII, so it fits a header and no terminal escape hides in it.
API_KEY_CHARS: Final = frozenset(map(chr, range(0x21, 0x7F)))


def api_key_flag(parser: argparse.ArgumentParser, what: str) -> None:
    """Add `--api-key`; `what` says whose key it is."""
    parser.add_argument(
        "--api-key",
        metavar="KEY",
        help=f"{what}, sent as Authorization: Bearer (env {API_KEY_ENV}, which keeps it out "
        "of the process list; default: none)",
    )


def api_key_of(args: argparse.Namespace) -> str | None:
    """--api-key, else RESEARCH_API_KEY, else none; never echoed, even when it is malformed."""
    flag = args.api_key is not None
    key = (args.api_key if flag else os.environ.get(API_KEY_ENV, "")).strip()
    if flag and not key:
        raise ClientError("--api-key is empty; pass the key `research-service keys create` printed")
    if not set(key) <= API_KEY_CHARS:
        where = "--api-key" if flag else API_KEY_ENV
        raise ClientError(
            f"{where} holds a space or a character an API key never has; check how it was "
            "copied (the key is the last line `research-service keys create` prints)"
        )
    return key or None
