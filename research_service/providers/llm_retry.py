"""When and how long to retry a failed model call: small pure decisions run by tenacity."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import openai
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from research_service.errors import LLMError
from research_service.net import retry_after_s
from research_service.providers.backoff import wait_s
from research_service.providers.base import Reporter
from research_service.providers.llm_errors import (
    BAD_REPLY_ERRORS,
    LLMCall,
    as_llm_error,
    describe_failure,
    too_large,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_ATTEMPTS: Final = 3
DEFAULT_MAX_WAIT_S: Final = 8.0
# Request timeout, lock timeout, rate limit; every 5xx is retried too.
RETRY_STATUSES: Final = frozenset({408, 409, 429})
# The request itself is wrong: sending it again cannot help, whatever the headers say.
NEVER_RETRY_STATUSES: Final = frozenset({400, 401, 403, 404, 422})

T = TypeVar("T")


def should_retry(exc: BaseException) -> bool:
    """Whether a failed call is worth sending again (connection, timeout, 408, 409, 429, 5xx)."""
    if isinstance(exc, openai.APIConnectionError) and too_large(exc) is None:  # timeouts too
        log.debug("retrying: %s", describe_failure(exc))
        return True
    if type(exc) is openai.APIError:
        # An `{"error": …}` event inside a 200 stream (vLLM and others send one when the
        # server fails mid-request): a server-side failure, like a 5xx.
        log.debug("retrying: the server sent an error event: %s", describe_failure(exc))
        return True
    if not isinstance(exc, openai.APIStatusError):
        log.debug("not retrying: %s is not a transient failure", describe_failure(exc))
        return False
    status = exc.status_code
    if status in NEVER_RETRY_STATUSES:
        log.debug("not retrying: status %i means the request itself is wrong", status)
        return False
    if exc.response.headers.get("x-should-retry") == "false":
        log.debug("not retrying: the server said x-should-retry: false")
        return False
    if status in RETRY_STATUSES or status >= 500:
        log.debug("retrying: status %i is transient", status)
        return True
    log.debug("not retrying: status %i", status)
    return False


def retry_wait_s(
    exc: BaseException, attempt: int, *, max_wait_s: float, jitter: float | None = None
) -> float:
    """How long to wait before the attempt after `attempt`: the server's ask, or backoff."""
    return wait_s(server_wait_s(exc), attempt, max_wait_s=max_wait_s, jitter=jitter)


def server_wait_s(exc: BaseException) -> float | None:
    """The wait a failed response's headers ask for, if it was an HTTP error."""
    if isinstance(exc, openai.APIStatusError):
        return retry_after_s(exc.response.headers)
    return None


async def call_with_retries(
    attempt: Callable[[], Awaitable[T]],
    *,
    call: LLMCall,
    report: Reporter,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    max_wait_s: float = DEFAULT_MAX_WAIT_S,
) -> T:
    """Run `attempt` until it succeeds, retrying transient failures; raise LLMError at the end.

    Before each wait the retry is logged and reported, so listeners see it is not stuck.
    """
    attempts = 0

    async def counted() -> T:
        nonlocal attempts
        attempts += 1
        return await attempt()

    def wait(state: RetryCallState) -> float:
        exc = _failure(state)
        return retry_wait_s(exc, state.attempt_number, max_wait_s=max_wait_s)

    async def before_sleep(state: RetryCallState) -> None:
        exc = _failure(state)
        wait_s = state.upcoming_sleep
        reason = describe_failure(exc, hiding=call.secret)
        log.info(
            "%s call to %s failed (%s); attempt %i of %i in %.3fs",
            call.model,
            call.base_url,
            reason,
            state.attempt_number + 1,
            max_attempts,
            wait_s,
        )
        await report.retrying(
            attempt=state.attempt_number + 1, wait_ms=round(wait_s * 1000), reason=reason
        )

    retrying = AsyncRetrying(
        stop=stop_after_attempt(max(1, max_attempts)),
        retry=retry_if_exception(should_retry),
        wait=wait,
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        return await retrying(counted)
    except LLMError:
        raise
    except (openai.OpenAIError, *BAD_REPLY_ERRORS) as exc:
        raise as_llm_error(
            exc, call=call, attempts=attempts, retry_after=server_wait_s(exc)
        ) from exc


def _failure(state: RetryCallState) -> BaseException:
    """The exception the attempt just raised (tenacity calls wait/before_sleep only then)."""
    exc = state.outcome.exception() if state.outcome is not None else None
    if exc is None:  # pragma: no cover - tenacity only waits after a failure
        raise RuntimeError("retry state without a failure")
    return exc
