"""schemathesis against a live `research-service serve`: no 5xx, every answer as documented.

The service is a real child process on a free loopback port (the builtin model without token
delays, the small test corpus, runs in memory), fuzzed operation by operation from the OpenAPI
document (research_service/web/static/openapi.json) and then statefully along its links
(create -> snapshot -> events -> cancel, plan, recording).

Event streams cannot hang a test: runs on the builtin model finish in milliseconds, and
schemathesis stops reading a stream after 20 events or the request timeout, whichever comes
first (a stream cut short is still checked event by event, each event's data by its schema).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis import Case, CheckContext, GenerationMode, Response
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.openapi_check import DOCUMENT, check_recording_line
from tests.served import CORPUS

#: Longest any one request may take, stream included (a hang fails the test).
REQUEST_TIMEOUT_S: Final = 5.0
STARTUP_TIMEOUT_S: Final = 60.0
#: Examples per operation, and scenarios of the stateful run: the whole file well under a minute.
EXAMPLES: Final = 25
SCENARIOS: Final = 15


def recording_lines_conform(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    """Each line of a recording (JSON Lines, which schemathesis does not read) is valid."""
    content_type = response.headers.get("content-type") or [""]
    if not content_type[0].startswith("application/x-ndjson"):
        return None
    for line in response.text.split("\n")[:-1]:
        check_recording_line(json.loads(line))
    return True


CHECKS: Final = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    recording_lines_conform,
]
#: The admin key of the service fuzzed with auth on (its keys file holds only this one).
ADMIN_KEY: Final = "fuzz-admin-" + "k" * 32
READY: Final = re.compile(r"Running on (http://\S+)")

schema = schemathesis.openapi.from_path(DOCUMENT)
# Both kinds: valid requests, and invalid ones the service must refuse with a documented 4xx.
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=EXAMPLES
)
schema.config.update(request_timeout=REQUEST_TIMEOUT_S)

FUZZ_SETTINGS: Final = hypothesis.settings(
    max_examples=EXAMPLES,
    deadline=None,
    # No shrinking: a failure is reported as found, which keeps a failing run short too.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)


def _wait_ready(stream: IO[str], found: list[str], ready: threading.Event) -> None:
    """Read the service's log to its end, noting the address it says it serves on."""
    for line in stream:
        if not found and (match := READY.search(line)):
            found.append(match.group(1))
            ready.set()
    ready.set()  # the process ended (it will have said why)


@dataclass(frozen=True)
class Live:
    """A running service: its base URL and the headers every request carries."""

    base: str
    headers: dict[str, str]


@pytest.fixture(scope="module", params=["auth-off", "auth-keys"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    """`research-service serve` on a free port, with auth off, or on with an admin key."""
    data = tmp_path_factory.mktemp("schemathesis-data")
    args = [
        *("--port", "0", "--data-dir", str(data), "--store", "memory"),
        *("--corpus", str(CORPUS), "--token-delay-ms", "0"),
        # Fuzzed runs that ask for a review or find no listener must not hold run slots long.
        *("--review-timeout-s", "1", "--abandon-after-s", "2", "--shutdown-grace-s", "1"),
    ]
    headers: dict[str, str] = {}
    if request.param == "auth-keys":
        keys = data / "keys.txt"
        keys.write_text(f"ops:{ADMIN_KEY}:admin\n", encoding="utf-8")
        args += ["--auth", "keys", "--api-keys-file", str(keys)]
        headers["Authorization"] = f"Bearer {ADMIN_KEY}"
    process = subprocess.Popen(
        [sys.executable, "-m", "research_service", "serve", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    found: list[str] = []
    ready = threading.Event()
    reader = threading.Thread(target=_wait_ready, args=(process.stderr, found, ready), daemon=True)
    reader.start()
    try:
        assert ready.wait(STARTUP_TIMEOUT_S), "the service did not start in time"
        assert found, f"the service stopped at start (exit status {process.poll()})"
        yield Live(found[0], headers)
    finally:
        process.terminate()
        process.wait(timeout=30)
        reader.join(timeout=5)
        process.stderr.close()


@schema.parametrize()
@FUZZ_SETTINGS
def test_every_operation_answers_as_documented(case: Case[Any], served: Live) -> None:
    case.call_and_validate(base_url=served.base, headers=served.headers, checks=CHECKS)


def test_every_link_followed_answers_as_documented(served: Live) -> None:
    machine: Any = schema.as_state_machine()

    class Machine(machine):  # type: ignore[misc]  # a class schemathesis makes at run time
        """The document's state machine, calling the live service."""

        def get_call_kwargs(self, case: Case[Any]) -> dict[str, Any]:
            return {"base_url": served.base, "headers": served.headers}

        def validate_response(self, response: Any, case: Case[Any], **kwargs: Any) -> None:
            case.validate_response(response, checks=CHECKS, transport_kwargs=kwargs)

    Machine.run(
        settings=hypothesis.settings(
            max_examples=SCENARIOS,
            stateful_step_count=6,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
    )


def test_the_fuzzed_document_is_the_served_one(served: Live) -> None:
    """The service fuzzed serves the file the fuzzing read."""
    with urllib.request.urlopen(f"{served.base}/openapi.json", timeout=REQUEST_TIMEOUT_S) as answer:
        assert answer.read() == Path(DOCUMENT).read_bytes()
