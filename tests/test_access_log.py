"""The access line: aiohttp's default format, made in one step, its stream token redacted."""

from __future__ import annotations

import logging
import re

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from aiohttp.web_log import AccessLogger

from research_service.logs import ACCESS_FIELDS
from research_service.web.access_log import LOGGED_ALREADY, QuietAccessLogger

STAMP = re.compile(r"\[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\]")
HEADERS = {"Host": "127.0.0.1", "Referer": "http://127.0.0.1/panel", "User-Agent": "curl/8.5.0"}


def _aiohttps_line(request: web.BaseRequest, response: web.StreamResponse) -> str:
    """What aiohttp's own access logger writes for the request."""
    logger = AccessLogger(logging.getLogger("x"))
    values = logger._format_line(request, response, 0.25)
    return logger._log_format % tuple(value for _, value in values)


def _logged(
    request: web.BaseRequest, response: web.StreamResponse, caplog: pytest.LogCaptureFixture
) -> list[logging.LogRecord]:
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    QuietAccessLogger(logging.getLogger("aiohttp.access")).log(request, response, 0.25)
    return [record for record in caplog.records if record.name == "aiohttp.access"]


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/v1/runs?limit=5&before=a%20b", HEADERS),
        ("/healthz", {"Host": "127.0.0.1"}),  # no Referer, no User-Agent: "-"
    ],
)
def test_the_line_is_what_aiohttps_default_format_writes(
    path: str, headers: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    request = make_mocked_request("GET", path, headers=headers)
    response = web.Response(status=200)
    (record,) = _logged(request, response, caplog)
    ours, theirs = record.getMessage(), _aiohttps_line(request, response)
    assert STAMP.search(ours), ours
    # The start time is the second the request began: compare the rest of the line.
    assert STAMP.sub("[T]", ours) == STAMP.sub("[T]", theirs)
    assert f'"GET {path} HTTP/1.1" 200 ' in ours


def test_a_stream_token_is_redacted_in_the_line_and_its_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    request = make_mocked_request(
        "GET",
        "/v1/runs/0123456789abcdef/events?token=secret.value&after=5",
        headers=HEADERS,
        match_info={"run_id": "0123456789abcdef"},
    )
    (record,) = _logged(request, web.Response(status=200), caplog)
    line = record.getMessage()
    assert "secret" not in line
    assert "/v1/runs/0123456789abcdef/events?token=REDACTED&after=5 HTTP/1.1" in line
    fields = getattr(record, ACCESS_FIELDS)
    assert fields["path"] == "/v1/runs/0123456789abcdef/events?token=REDACTED&after=5"
    assert fields["run_id"] == "0123456789abcdef"
    assert (fields["method"], fields["status"], fields["duration_ms"]) == ("GET", 200, 250.0)


def test_a_request_answered_by_the_protocol_error_handler_gets_no_second_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    request = make_mocked_request("GET", "/", headers=HEADERS)
    request[LOGGED_ALREADY] = True
    assert _logged(request, web.Response(status=400), caplog) == []


def test_no_line_is_made_when_the_access_log_is_off() -> None:
    logger = logging.getLogger("aiohttp.access.test-off")
    logger.setLevel(logging.WARNING)
    assert not QuietAccessLogger(logger).enabled


def test_another_format_is_refused_rather_than_ignored() -> None:
    with pytest.raises(ValueError, match="default format only"):
        QuietAccessLogger(logging.getLogger("aiohttp.access"), "%a %t")
