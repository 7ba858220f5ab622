"""One exception tree for research-service; every message says what to do."""

from __future__ import annotations


class ResearchError(Exception):
    """Base of every error research-service raises on purpose."""

    code = "internal"


class ConfigError(ResearchError):
    """The service cannot start with the settings it was given."""

    code = "config"


# --- request errors: become application/problem+json responses -------------------------


class RequestError(ResearchError):
    """Something a client sent is wrong; rendered as an RFC 9457 problem."""

    status = 400
    slug = "invalid-request"
    title = "Invalid request"
    #: The connection is closed after the answer (its request cannot be read to the end).
    close_connection = False
    #: Seconds after which the request may succeed (sent as Retry-After), if it may.
    retry_after: int | None = None

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


class InvalidInput(RequestError):
    """A field or parameter has the wrong type or value."""

    slug = "invalid-input"
    title = "Invalid input"


class MalformedJSON(RequestError):
    """The request body is not valid JSON."""

    slug = "malformed-json"
    title = "Malformed JSON"


class MalformedBody(RequestError):
    """The request body cannot be read as its headers say (its Content-Encoding, its framing)."""

    slug = "malformed-request"
    title = "Malformed request"
    close_connection = True


class InvalidEventId(RequestError):
    """A Last-Event-ID that this run never issued."""

    slug = "invalid-event-id"
    title = "Invalid Last-Event-ID"


class NotFound(RequestError):
    """The run (or route) does not exist."""

    status = 404
    slug = "not-found"
    title = "Not found"


def unknown_run(run_id: str) -> NotFound:
    """The error for a run that does not exist (or that the asker may not see)."""
    return NotFound(f"no run with id {run_id!r}; list runs with GET /v1/runs")


class ReviewConflict(RequestError):
    """A plan decision the run does not take now (not waiting, decided already, no re-plans)."""

    status = 409
    slug = "not-awaiting-review"
    title = "The run does not await this decision"


class MethodNotAllowed(RequestError):
    """The route exists but not with this HTTP method."""

    status = 405
    slug = "method-not-allowed"
    title = "Method not allowed"

    def __init__(self, detail: str, *, allowed: tuple[str, ...]) -> None:
        super().__init__(detail)
        self.allowed = allowed


class Unauthorized(RequestError):
    """No usable credentials: no key, an unknown or revoked one, an expired token."""

    status = 401
    slug = "unauthorized"
    title = "Authentication required"

    def __init__(self, detail: str, *, error: str | None = None) -> None:
        super().__init__(detail)
        # RFC 6750: `invalid_token` when credentials were sent and are no good.
        params = 'realm="research-service"' + (f', error="{error}"' if error else "")
        self.challenge = f"Bearer {params}"


class Forbidden(RequestError):
    """The request may not be made this way, whoever makes it (a token outside its use)."""

    status = 403
    slug = "forbidden"
    title = "Forbidden"

    def __init__(self, detail: str, *, slug: str = "forbidden", title: str = "Forbidden") -> None:
        super().__init__(detail)
        self.slug = slug
        self.title = title


class MisdirectedRequest(RequestError):
    """The Host header names a host this service does not serve (DNS rebinding)."""

    status = 421
    slug = "host-not-allowed"
    title = "Host not allowed"


class BodyTooLarge(RequestError):
    """The request body is over the size limit."""

    status = 413
    slug = "body-too-large"
    title = "Request body too large"


class BodyTimeout(RequestError):
    """The client did not send the whole request body within --body-timeout-s."""

    status = 408
    slug = "body-timeout"
    title = "Request body too slow"
    close_connection = True


class UnsupportedMediaType(RequestError):
    """The request body is not JSON."""

    status = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type"


class ExpectationFailed(RequestError):
    """The request's `Expect` header asks for more than `100-continue`."""

    status = 417
    slug = "expectation-failed"
    title = "Expectation failed"
    #: Whether the client sends its body now is unknown: the connection cannot be read on.
    close_connection = True


class TooManyRequests(RequestError):
    """A limit was reached; the request may succeed after `retry_after` seconds."""

    status = 429

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class TooManyRuns(TooManyRequests):
    """The service is running as many runs as it is allowed to."""

    slug = "too-many-runs"
    title = "Too many active runs"


class TooManySignIns(TooManyRequests):
    """One key signed in (`POST /v1/session`) more often than a minute allows."""

    slug = "too-many-sign-ins"
    title = "Too many sign-ins"


class StoreUnavailable(RequestError):
    """The run store cannot write (a full disk, a read-only or failing file system).

    Raised by the store; a request that needed the write is answered 503 with `slug`
    naming the cause. Expected in operation, so it is logged in one line, never a traceback.
    """

    status = 503
    title = "Run store unavailable"

    def __init__(
        self, cause: str, *, slug: str, retry_after: int, advise_retry: bool = False
    ) -> None:
        """`cause` says what failed and what to fix; `advise_retry` adds "retry in N s"."""
        super().__init__(f"{cause}; retry in {retry_after} s" if advise_retry else cause)
        #: What failed, without the client's retry hint: what an operator's console shows.
        self.cause = cause
        self.slug = slug
        self.retry_after = retry_after


class ClusterUnavailable(StoreUnavailable):
    """Redis, which hands runs out and carries live events between nodes, does not answer."""

    title = "Cluster unavailable"

    def __init__(self, cause: str, *, retry_after: int) -> None:
        super().__init__(
            cause, slug="cluster-unavailable", retry_after=retry_after, advise_retry=True
        )


# --- provider and pipeline errors: become `error` events in a run's stream --------------


class ProviderError(ResearchError):
    """An LLM or search provider failed."""

    code = "provider_error"

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.retryable = retryable
        self.retry_after = retry_after


class LLMError(ProviderError):
    """The language model provider failed."""

    code = "llm_error"


class SearchError(ProviderError):
    """The search provider failed."""

    code = "search_error"


class PipelineError(ResearchError):
    """The research pipeline cannot go on; ends the run as failed."""

    def __init__(self, message: str, *, code: str, phase: str) -> None:
        super().__init__(message)
        self.code = code
        self.phase = phase


# --- client errors: the terminal client (`ask`, `listen`) -------------------------------


class ClientError(ResearchError):
    """The terminal client cannot go on; `exit_code` is what the command exits with."""

    code = "client"
    exit_code = 1


class RunRefused(ClientError):
    """The service answered a request with a 4xx problem (an unknown run, a bad question)."""

    exit_code = 2

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class ServiceUnreachable(ClientError):
    """The service could not be reached, or stayed unreachable longer than allowed."""

    exit_code = 4


class NotAnEventStream(ClientError):
    """A response that is not a research-service event stream (wrong URL or server)."""

    exit_code = 4


class UsageError(ClientError):
    """What the command line asks for cannot be done as written: exit status 2."""

    exit_code = 2


class OutputFailed(ClientError):
    """Stdout cannot be written (closed, a full disk): the command ends with this one line."""

    exit_code = 1
