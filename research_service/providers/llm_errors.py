"""What went wrong talking to an OpenAI-compatible server, as LLMErrors whose codes name it."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Final

import openai

from research_service.errors import ConfigError, LLMError
from research_service.providers.capped_http import ReplyTooLarge
from research_service.text import well_formed

SERVER_MESSAGE_CHARS: Final = 300
#: Why an answer stream that ended before its first text failed (retried as a dropped
#: connection is).
ENDED_EARLY: Final = "the stream ended before the answer began"


# --- the failures, one class and code each (candidates to move into errors.py) ----------


class LLMRateLimited(LLMError):
    """The server kept answering 429 Too Many Requests."""

    code = "llm_rate_limited"


class LLMUnavailable(LLMError):
    """The server kept failing (408, 409 or 5xx)."""

    code = "llm_unavailable"


class LLMAuthError(LLMError):
    """The server refused the API key (401) or its access to the model (403)."""

    code = "llm_auth"


class LLMBadRequest(LLMError):
    """The server refused the request itself (400, 404, 422 …): retrying cannot help."""

    code = "llm_bad_request"


class LLMTimeout(LLMError):
    """The server did not answer within the client's timeout."""

    code = "llm_timeout"


class LLMConnectTimeout(LLMTimeout):
    """No connection to the server within the connect timeout."""

    code = "llm_connect_timeout"


class LLMConnectError(LLMError):
    """The server could not be reached, or dropped the connection before answering."""

    code = "llm_connect"


class LLMBadResponse(LLMError):
    """The server answered with something that is not the OpenAI wire protocol."""

    code = "llm_bad_response"


class LLMStreamBroken(LLMError):
    """The answer stream failed after some of the answer was sent; it is not restarted."""

    code = "llm_stream_broken"


class MalformedReply(ValueError):
    """A reply or chunk that is not shaped as the Chat Completions API shapes it."""


#: What reading a reply may raise besides the SDK's errors (RecursionError: JSON nested deeper
#: than Python decodes, as a hostile server may send; UnicodeDecodeError: bytes that are not
#: UTF-8, which the SDK decodes strictly, in a stream's line or a whole body).
BAD_REPLY_ERRORS: Final = (json.JSONDecodeError, MalformedReply, RecursionError, UnicodeDecodeError)


@dataclass(frozen=True, slots=True)
class LLMCall:
    """What an error message needs to say which call failed and what to change."""

    provider: str
    base_url: str
    model: str
    model_setting: str
    #: The variable the API key came from, to fix when the server rejects it.
    key_setting: str = "OPENAI_API_KEY"
    #: The API key (and a gateway's password, as written and as basic auth sends it), never
    #: shown: a server that echoes one in an error has it replaced.
    secret: tuple[str, ...] = field(default=(), repr=False)


def describe_failure(exc: BaseException, *, hiding: Sequence[str] = ()) -> str:
    """A short reason for a failed call, such as "429 Too Many Requests" or "timeout"."""
    if (cut := too_large(exc)) is not None:
        return str(cut)
    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, openai.APIConnectionError):
        return "connection error"
    if isinstance(exc, openai.APIStatusError):
        return status_text(exc.status_code)
    if isinstance(exc, BAD_REPLY_ERRORS):
        return "malformed response"
    if type(exc) is openai.APIError:  # an error event inside a 200 stream
        return f"the server's error: {server_message(exc, hiding=hiding)}"
    return type(exc).__name__


def status_text(status: int) -> str:
    """An HTTP status with its reason phrase, as in "503 Service Unavailable"."""
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def server_message(exc: openai.APIError, *, hiding: Sequence[str] = ()) -> str:
    """The server's own explanation of an error, shortened to one line, `hiding` replaced.

    Some servers quote the API key they refused ("Incorrect API key provided: sk-…").
    """
    body = exc.body
    text: object = body.get("message") if isinstance(body, dict) else body
    if not isinstance(text, str) or not text.strip():
        text = exc.message
    flat = well_formed(" ".join(str(text).split()))
    for secret in hiding:
        if secret and secret in flat:
            flat = flat.replace(secret, "***")
    return flat if len(flat) <= SERVER_MESSAGE_CHARS else flat[:SERVER_MESSAGE_CHARS] + "…"


def connection_reason(exc: BaseException) -> str:
    """Why a connection failed, from the transport error underneath the SDK's, if any."""
    cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    text = str(cause) if cause is not None else str(exc)
    return text or type(cause or exc).__name__


def as_llm_error(
    exc: BaseException, *, call: LLMCall, attempts: int, retry_after: float | None = None
) -> LLMError:
    """The LLMError for a call that failed for good after `attempts` attempts."""
    tries = f"after {attempts} attempt{'s' if attempts != 1 else ''}"
    where = f"the model server at {call.base_url}"
    provider = call.provider
    if isinstance(exc, openai.APITimeoutError) and _connect_timed_out(exc):
        return LLMConnectTimeout(
            f"could not connect to {where} within --llm-connect-timeout-s ({tries}); "
            "check OPENAI_BASE_URL and the network, or raise the timeout",
            retryable=True,
            provider=provider,
        )
    if isinstance(exc, openai.APITimeoutError):
        return LLMTimeout(
            f"{where} did not answer in time ({tries}); try again later or raise the timeout",
            retryable=True,
            provider=provider,
        )
    if (cut := too_large(exc)) is not None:
        return LLMBadResponse(
            f"{where} sent a reply that never ended ({cut}); check that OPENAI_BASE_URL "
            "points at an OpenAI-compatible API (usually ending in /v1)",
            provider=provider,
        )
    if isinstance(exc, openai.APIConnectionError):
        # A stream that ended before its answer reached the server, which then said nothing.
        fix = "check its logs" if exc.message == ENDED_EARLY else "start it or fix OPENAI_BASE_URL"
        return LLMConnectError(
            f"cannot reach {where} ({connection_reason(exc)}) {tries}; {fix}",
            retryable=True,
            provider=provider,
        )
    if isinstance(exc, openai.APIStatusError):
        return _status_error(exc, call=call, tries=tries, where=where, retry_after=retry_after)
    if isinstance(exc, json.JSONDecodeError):
        return LLMBadResponse(
            f"{where} sent a reply that is not valid JSON ({exc}); "
            "check that OPENAI_BASE_URL points at an OpenAI-compatible API (usually ending in /v1)",
            provider=provider,
        )
    if isinstance(exc, UnicodeDecodeError):
        return LLMBadResponse(
            f"{where} sent a reply that is not valid UTF-8 (a byte {exc.object[exc.start]:#04x} "
            f"at {exc.start}); check the server's logs and that OPENAI_BASE_URL points at an "
            "OpenAI-compatible API",
            provider=provider,
        )
    if isinstance(exc, MalformedReply | RecursionError):
        what = exc if isinstance(exc, MalformedReply) else "JSON nested too deep to read"
        return LLMBadResponse(
            f"{where} sent a reply that is not a chat completion ({what}); "
            "check that OPENAI_BASE_URL points at an OpenAI-compatible API (usually ending in /v1)",
            provider=provider,
        )
    if isinstance(exc, openai.APIError):
        return LLMError(
            f"{where} reported an error: {server_message(exc, hiding=call.secret)}; "
            "try again or check its logs",
            provider=provider,
        )
    return LLMError(f"calling {where} failed: {exc!r}; check its logs", provider=provider)


def _status_error(
    exc: openai.APIStatusError, *, call: LLMCall, tries: str, where: str, retry_after: float | None
) -> LLMError:
    """The LLMError for an HTTP error status."""
    status = exc.status_code
    said = f"{status_text(status)}: {server_message(exc, hiding=call.secret)}"
    model = f"model {call.model!r}"
    if status == 429:
        return LLMRateLimited(
            f"{where} kept rate-limiting requests ({said}) {tries}; "
            "wait and try again, or raise your rate limit",
            provider=call.provider,
            retryable=True,
            retry_after=retry_after,
        )
    if status == 401:
        return LLMAuthError(
            f"{where} rejected the API key ({said}); set {call.key_setting}", provider=call.provider
        )
    if status == 403:
        return LLMAuthError(
            f"the API key may not use {model} ({said}); "
            f"use a key with access to it or set {call.model_setting}",
            provider=call.provider,
        )
    if status in (408, 409) or status >= 500:
        return LLMUnavailable(
            f"{where} kept failing ({said}) {tries}; try again later or check its logs",
            provider=call.provider,
            retryable=True,
            retry_after=retry_after,
        )
    if status == 404:
        return LLMBadRequest(
            f"{where} does not serve {model} ({said}); set {call.model_setting} to a model "
            "it serves, and check that OPENAI_BASE_URL ends in /v1",
            provider=call.provider,
        )
    return LLMBadRequest(
        f"{where} rejected the request for {model} ({said}); check {call.model_setting} "
        "and the server's logs",
        provider=call.provider,
    )


def check_failure(exc: BaseException, *, base_url: str, secret: Sequence[str] = ()) -> ConfigError:
    """The ConfigError for a start-up check of the server that failed with `exc`."""
    where = f"the model server at {base_url}"
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        said = f"{status_text(exc.status_code)}: {server_message(exc, hiding=secret)}"
        return ConfigError(f"{where} rejected the API key ({said}); set OPENAI_API_KEY")
    if isinstance(exc, openai.APIConnectionError) and too_large(exc) is None:
        return ConfigError(
            f"cannot reach {where}: {connection_reason(exc)}; start it or fix OPENAI_BASE_URL"
        )
    if isinstance(exc, openai.APIStatusError):
        return ConfigError(
            f"{where} answered {status_text(exc.status_code)} "
            f"({server_message(exc, hiding=secret)}); "
            "check OPENAI_BASE_URL and the server's logs"
        )
    return ConfigError(
        f"{where} does not speak the OpenAI API ({describe_failure(exc)}); "
        "check OPENAI_BASE_URL (it usually ends in /v1)"
    )


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then what it was raised from or while handling, down to the first error."""
    cause: BaseException | None = exc
    while cause is not None:
        yield cause
        cause = cause.__cause__ or cause.__context__


def too_large(exc: BaseException) -> ReplyTooLarge | None:
    """The ReplyTooLarge a failed call comes from (the SDK wraps it), if it does."""
    return next((cause for cause in _chain(exc) if isinstance(cause, ReplyTooLarge)), None)


def _connect_timed_out(exc: BaseException) -> bool:
    """True if the timeout happened while connecting (the HTTP client's ConnectTimeout)."""
    return any(type(cause).__name__ == "ConnectTimeout" for cause in _chain(exc))
