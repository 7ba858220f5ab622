"""Diagnostic (bench/README.md, issue 16): what one access line costs the event loop.

`python bench/diagnostics/access_line.py` logs the access line of one `POST /v1/runs` many
times, through the service's logging (`configure_logging`, text and JSON, the writer thread
writing to /dev/null), with aiohttp's own `AccessLogger` and with the service's
`QuietAccessLogger`, alternating, and prints the best of five rounds per line in µs.
"""

from __future__ import annotations

import logging
import os
import sys
import timeit
from collections.abc import Callable

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.test_utils import make_mocked_request
from aiohttp.web_log import AccessLogger

from research_service import logs
from research_service.web.access_log import QuietAccessLogger

LINES = 30_000
ROUNDS = 5


def per_line(logger: AbstractAccessLogger) -> float:
    """Best of ROUNDS, in µs per line."""
    request = make_mocked_request(
        "POST", "/v1/runs", headers={"Host": "127.0.0.1:8080", "User-Agent": "python/3.11"}
    )
    response = web.Response(status=201, body=b"{}")
    call: Callable[[], None] = lambda: logger.log(request, response, 0.0123)  # noqa: E731
    return min(timeit.repeat(call, number=LINES, repeat=ROUNDS)) / LINES * 1e6


def main() -> int:
    """Print µs per line for each logger and log format."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stderr.fileno())  # the writer thread writes the lines here
    access = logging.getLogger("aiohttp.access")
    rows = []
    for fmt in logs.LOG_FORMATS:
        logging.getLogger().handlers.clear()
        logs.log_writer.current = None
        logs.configure_logging("INFO", fmt)
        aiohttps = per_line(AccessLogger(access))
        ours = per_line(QuietAccessLogger(access))
        rows.append(f"| {fmt} | {aiohttps:.1f} | {ours:.1f} | {ours / aiohttps:.2f} |")
    print("| log format | aiohttp's AccessLogger, µs a line | QuietAccessLogger | ratio |")
    print("|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
