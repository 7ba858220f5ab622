"""When and how long to retry a failed web search request: small pure decisions run by tenacity."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Final, TypeVar

import aiohttp
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from research_service.net import describe, retry_after_s
from research_service.providers.backoff import wait_s
from research_service.providers.instrumented import note_retry

log = logging.getLogger(__name__)

DEFAULT_MAX_WAIT_S: Final = 4.0
# Request timeout and rate limit; every 5xx is retried too. Any other 4xx means the request
# itself is wrong (or refused), and sending it again cannot help.
RETRY_STATUSES: Final = frozenset({408, 429})

T = TypeVar("T")


class HTTPStatusFailure(Exception):
    """A search request answered with an HTTP error status."""

    def __init__(self, status: int, *, detail: str = "", retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status}" + (f": {detail}" if detail else ""))
        self.status = status
        self.detail = detail
        self.retry_after = retry_after

    @classmethod
    def from_headers(
        cls, status: int, headers: Mapping[str, str], *, detail: str = ""
    ) -> HTTPStatusFailure:
        """The failure, with the wait the response's `Retry-After` asked for."""
        return cls(status, detail=detail, retry_after=retry_after_s(headers))


def should_retry(exc: BaseException) -> bool:
    """Whether a failed request is worth sending again (connection, timeout, 408, 429, 5xx)."""
    if isinstance(exc, HTTPStatusFailure):
        if exc.status in RETRY_STATUSES or exc.status >= 500:
            log.debug("retrying: status %i is transient", exc.status)
            return True
        log.debug("not retrying: status %i means the request itself is wrong", exc.status)
        return False
    # aiohttp's timeouts are TimeoutError; a refused or dropped connection, a truncated
    # body: ClientConnectionError and ClientPayloadError.
    if isinstance(exc, TimeoutError | aiohttp.ClientConnectionError | aiohttp.ClientPayloadError):
        log.debug("retrying: %s", describe(exc))
        return True
    log.debug("not retrying: %s is not a transient failure", describe(exc))
    return False


def retry_wait_s(
    exc: BaseException, attempt: int, *, max_wait_s: float, jitter: float | None = None
) -> float:
    """How long to wait before the attempt after `attempt`: the server's ask, or backoff."""
    asked = exc.retry_after if isinstance(exc, HTTPStatusFailure) else None
    return wait_s(asked, attempt, max_wait_s=max_wait_s, jitter=jitter)


async def with_retries(
    attempt: Callable[[], Awaitable[T]],
    *,
    what: str,
    attempts: int,
    max_wait_s: float = DEFAULT_MAX_WAIT_S,
) -> T:
    """Run `attempt` until it succeeds or fails for good; re-raise its last failure.

    `what` names the request in the log line written before each wait.
    """
    total = max(1, attempts)

    def wait(state: RetryCallState) -> float:
        return retry_wait_s(_failure(state), state.attempt_number, max_wait_s=max_wait_s)

    def before_sleep(state: RetryCallState) -> None:
        log.info(
            "%s failed (%s); attempt %i of %i in %.3fs",
            what,
            describe(_failure(state)),
            state.attempt_number + 1,
            total,
            state.upcoming_sleep,
        )
        note_retry()  # counted for GET /metrics when the pipeline made the call

    retrying = AsyncRetrying(
        stop=stop_after_attempt(total),
        retry=retry_if_exception(should_retry),
        wait=wait,
        before_sleep=before_sleep,
        reraise=True,
    )
    return await retrying(attempt)


def _failure(state: RetryCallState) -> BaseException:
    """The exception the attempt just raised (tenacity calls wait/before_sleep only then)."""
    exc = state.outcome.exception() if state.outcome is not None else None
    if exc is None:  # pragma: no cover - tenacity only waits after a failure
        raise RuntimeError("retry state without a failure")
    return exc
