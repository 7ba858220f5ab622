"""The retry policy's pure decisions, the tenacity runner, and the errors it ends with."""

from __future__ import annotations

import email.utils
import json
import logging

import httpx2
import openai
import pytest

from research_service.errors import ConfigError, LLMError
from research_service.net import retry_after_s
from research_service.providers.backoff import INITIAL_WAIT_S, JITTER, backoff_s
from research_service.providers.llm_errors import (
    LLMAuthError,
    LLMBadRequest,
    LLMBadResponse,
    LLMCall,
    LLMConnectError,
    LLMRateLimited,
    LLMTimeout,
    LLMUnavailable,
    as_llm_error,
    check_failure,
    describe_failure,
)
from research_service.providers.llm_retry import call_with_retries, retry_wait_s, should_retry
from tests.fakes import RecordingReporter

URL = "http://models.test/v1/chat/completions"
CALL = LLMCall("openai", "http://models.test/v1", "tiny-model", "RESEARCH_SYNTH_MODEL")
NOW = 1_700_000_000.0


def request() -> httpx2.Request:
    return httpx2.Request("POST", URL)


def status_error(
    status: int, message: str = "it failed", headers: dict[str, str] | None = None
) -> openai.APIStatusError:
    response = httpx2.Response(status, headers=headers or {}, request=request())
    body = {"message": message, "type": "error"}
    classes: dict[int, type[openai.APIStatusError]] = {
        400: openai.BadRequestError,
        401: openai.AuthenticationError,
        403: openai.PermissionDeniedError,
        404: openai.NotFoundError,
        409: openai.ConflictError,
        422: openai.UnprocessableEntityError,
        429: openai.RateLimitError,
    }
    cls = classes.get(
        status, openai.InternalServerError if status >= 500 else openai.APIStatusError
    )
    return cls(f"Error code: {status} - {body}", response=response, body=body)


def connection_error() -> openai.APIConnectionError:
    try:
        raise httpx2.ConnectError("All connection attempts failed")
    except httpx2.ConnectError as cause:
        try:
            raise openai.APIConnectionError(request=request()) from cause
        except openai.APIConnectionError as exc:
            return exc


def http_date(at: float) -> str:
    return email.utils.formatdate(at, usegmt=True)


# --- Retry-After headers -------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({}, None),
        ({"retry-after": "2"}, 2.0),
        ({"Retry-After": "2"}, 2.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after": "0"}, 0.0),
        ({"retry-after": "-3"}, 0.0),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after-ms": "soon", "retry-after": "3"}, 3.0),
        ({"retry-after": http_date(NOW + 30)}, 30.0),
        ({"retry-after": http_date(NOW - 30)}, 0.0),
        ({"retry-after": "whenever"}, None),
        ({"retry-after": "inf"}, None),
    ],
)
def test_retry_after_headers(headers: dict[str, str], seconds: float | None) -> None:
    assert retry_after_s(httpx2.Headers(headers), now=NOW) == seconds


def test_retry_after_without_headers() -> None:
    assert retry_after_s(None) is None


# --- which failures retry ----------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 529])
def test_transient_statuses_retry(status: int) -> None:
    assert should_retry(status_error(status)) is True


@pytest.mark.parametrize("status", [400, 401, 403, 404, 418, 422])
def test_request_errors_never_retry(status: int) -> None:
    assert should_retry(status_error(status)) is False


def test_never_retry_statuses_ignore_x_should_retry() -> None:
    assert should_retry(status_error(400, headers={"x-should-retry": "true"})) is False


def test_server_can_refuse_a_retry() -> None:
    assert should_retry(status_error(503, headers={"x-should-retry": "false"})) is False


def test_connection_errors_and_timeouts_retry() -> None:
    assert should_retry(connection_error()) is True
    assert should_retry(openai.APITimeoutError(request=request())) is True


def test_other_failures_do_not_retry() -> None:
    assert should_retry(ValueError("bug")) is False
    assert should_retry(json.JSONDecodeError("bad", "{", 0)) is False


def test_an_error_event_in_a_stream_is_a_server_failure_and_retries() -> None:
    assert should_retry(openai.APIError("stream error", request(), body=None)) is True


def test_each_decision_is_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="research_service.providers.llm_retry")
    should_retry(status_error(429))
    should_retry(status_error(401))
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        "retrying: status 429 is transient",
        "not retrying: status 401 means the request itself is wrong",
    ]


# --- how long to wait ------------------------------------------------------------------


def test_backoff_doubles_until_capped() -> None:
    waits = [backoff_s(n, max_wait_s=3.0, jitter=0.0) for n in range(1, 6)]
    assert waits == [INITIAL_WAIT_S, 1.0, 2.0, 3.0, 3.0]


def test_jitter_shortens_by_at_most_a_quarter() -> None:
    assert backoff_s(2, max_wait_s=10.0, jitter=0.0) == 1.0
    assert backoff_s(2, max_wait_s=10.0, jitter=0.999) == pytest.approx(1.0 * (1 - JITTER * 0.999))
    samples = [backoff_s(3, max_wait_s=10.0) for _ in range(500)]
    assert all(2.0 * (1 - JITTER) <= s <= 2.0 for s in samples)
    assert len(set(samples)) > 1


def test_backoff_survives_huge_attempt_numbers() -> None:
    assert backoff_s(10_000, max_wait_s=5.0, jitter=0.0) == 5.0


def test_server_wait_wins_over_backoff_and_is_capped() -> None:
    asked = status_error(429, headers={"retry-after": "2"})
    assert retry_wait_s(asked, 1, max_wait_s=10.0) == 2.0
    assert retry_wait_s(asked, 1, max_wait_s=0.5) == 0.5
    quick = status_error(503, headers={"retry-after-ms": "20"})
    assert retry_wait_s(quick, 4, max_wait_s=10.0) == 0.02


def test_no_header_means_backoff() -> None:
    assert retry_wait_s(status_error(503), 1, max_wait_s=10.0, jitter=0.0) == INITIAL_WAIT_S
    assert retry_wait_s(connection_error(), 2, max_wait_s=10.0, jitter=0.0) == 1.0


# --- the runner ------------------------------------------------------------------------


class Flaky:
    """Fails with the given errors in turn, then returns "ok"."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


async def test_retries_then_succeeds_and_reports_each_wait() -> None:
    report = RecordingReporter()
    attempt = Flaky(status_error(429, headers={"retry-after": "1"}), connection_error())
    result = await call_with_retries(
        attempt, call=CALL, report=report, max_attempts=3, max_wait_s=0.004
    )
    assert result == "ok"
    assert attempt.calls == 3
    assert report.retries[0] == (2, 4, "429 Too Many Requests")
    assert report.retries[1][0] == 3
    assert report.retries[1][2] == "connection error"
    assert 3 <= report.retries[1][1] <= 4


async def test_gives_up_after_max_attempts_with_a_coded_error() -> None:
    report = RecordingReporter()
    attempt = Flaky(*(status_error(503) for _ in range(5)))
    with pytest.raises(LLMUnavailable) as caught:
        await call_with_retries(attempt, call=CALL, report=report, max_attempts=3, max_wait_s=0.001)
    assert attempt.calls == 3
    assert [r[0] for r in report.retries] == [2, 3]
    assert caught.value.code == "llm_unavailable"
    assert caught.value.retryable is True
    assert "after 3 attempts" in str(caught.value)
    assert isinstance(caught.value.__cause__, openai.InternalServerError)


async def test_does_not_retry_a_bad_request() -> None:
    report = RecordingReporter()
    attempt = Flaky(status_error(400, "max_tokens is too large"))
    with pytest.raises(LLMBadRequest, match="max_tokens is too large"):
        await call_with_retries(attempt, call=CALL, report=report, max_attempts=5, max_wait_s=0.001)
    assert attempt.calls == 1
    assert report.retries == []


async def test_one_attempt_means_no_retry() -> None:
    attempt = Flaky(connection_error())
    with pytest.raises(LLMConnectError):
        await call_with_retries(attempt, call=CALL, report=RecordingReporter(), max_attempts=1)
    assert attempt.calls == 1


async def test_llm_errors_pass_through_untouched() -> None:
    own = LLMError("already explained", provider="openai")
    with pytest.raises(LLMError) as caught:
        await call_with_retries(Flaky(own), call=CALL, report=RecordingReporter())
    assert caught.value is own


# --- the errors a failure becomes ----------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "cls", "code", "says"),
    [
        (
            status_error(429, headers={"retry-after": "7"}),
            LLMRateLimited,
            "llm_rate_limited",
            "rate limit",
        ),
        (status_error(503), LLMUnavailable, "llm_unavailable", "503 Service Unavailable"),
        (status_error(408), LLMUnavailable, "llm_unavailable", "try again later"),
        (status_error(401, "Incorrect API key"), LLMAuthError, "llm_auth", "set OPENAI_API_KEY"),
        (status_error(403), LLMAuthError, "llm_auth", "RESEARCH_SYNTH_MODEL"),
        (
            status_error(404, "no such model"),
            LLMBadRequest,
            "llm_bad_request",
            "does not serve model 'tiny-model'",
        ),
        (
            status_error(400, "bad field"),
            LLMBadRequest,
            "llm_bad_request",
            "400 Bad Request: bad field",
        ),
        (status_error(422), LLMBadRequest, "llm_bad_request", "check RESEARCH_SYNTH_MODEL"),
        (connection_error(), LLMConnectError, "llm_connect", "All connection attempts failed"),
        (
            openai.APITimeoutError(request=request()),
            LLMTimeout,
            "llm_timeout",
            "did not answer in time",
        ),
        (
            json.JSONDecodeError("Expecting value", "x", 0),
            LLMBadResponse,
            "llm_bad_response",
            "not valid JSON",
        ),
        (
            openai.APIError("boom", request(), body={"message": "boom"}),
            LLMError,
            "llm_error",
            "boom",
        ),
    ],
)
def test_failures_become_coded_errors_that_say_what_to_do(
    exc: BaseException, cls: type[LLMError], code: str, says: str
) -> None:
    error = as_llm_error(
        exc, call=CALL, attempts=2, retry_after=7.0 if code == "llm_rate_limited" else None
    )
    assert type(error) is cls
    assert error.code == code
    assert error.provider == "openai"
    assert says in str(error)


def test_rate_limit_error_carries_retry_after() -> None:
    error = as_llm_error(status_error(429), call=CALL, attempts=3, retry_after=7.0)
    assert error.retry_after == 7.0
    assert error.retryable is True
    assert "after 3 attempts" in str(error)


def test_describe_failure() -> None:
    assert describe_failure(status_error(429)) == "429 Too Many Requests"
    assert describe_failure(status_error(599)) == "599"
    assert describe_failure(connection_error()) == "connection error"
    assert describe_failure(openai.APITimeoutError(request=request())) == "timeout"


@pytest.mark.parametrize(
    ("exc", "says"),
    [
        (
            status_error(401),
            "rejected the API key (401 Unauthorized: it failed); set OPENAI_API_KEY",
        ),
        (connection_error(), "cannot reach the model server at http://x/v1: All connection"),
        (status_error(500), "answered 500 Internal Server Error"),
        (json.JSONDecodeError("Expecting value", "<html>", 0), "does not speak the OpenAI API"),
    ],
)
def test_check_failures_are_config_errors(exc: BaseException, says: str) -> None:
    error = check_failure(exc, base_url="http://x/v1")
    assert isinstance(error, ConfigError)
    assert says in str(error)
