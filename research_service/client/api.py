"""The JSON endpoints of a research-service, called over HTTP like any other client would."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urljoin

import aiohttp

from research_service import net
from research_service.addresses import redact_url
from research_service.errors import NotAnEventStream, RunRefused, ServiceUnreachable
from research_service.problem_json import detail_of

log = logging.getLogger(__name__)

#: Time allowed for a JSON request (create, snapshot, cancel), connecting included.
REQUEST_TIMEOUT_S: Final = 30.0
#: Requests answered 429 Too Many Requests are sent this many times in all, then given up.
BUSY_ATTEMPTS: Final = 4
#: The wait after a 429 that carries no (readable) Retry-After: the service's own ask.
DEFAULT_BUSY_WAIT_S: Final = 5.0
#: The longest wait after a 429, whatever its Retry-After asks for.
MAX_BUSY_WAIT_S: Final = 30.0
#: What a run's body must carry for the client to follow it.
RUN_FIELDS: Final = ("id", "question", "events_url")
#: What a 401 says, by whether a key was sent: what to do, and never the key itself.
NO_KEY: Final = "the service needs an API key: pass --api-key or set RESEARCH_API_KEY"
BAD_KEY: Final = "the service refused the API key (unknown or revoked)"


@dataclass(frozen=True, slots=True)
class Answer:
    """A non-2xx answer: what it says, and whether it is a problem body (the service's own)."""

    status: int
    detail: str
    is_problem: bool


async def read_answer(response: aiohttp.ClientResponse) -> Answer:
    """What a non-2xx answer says: the problem's detail, else its status and first line."""
    body = await response.read()
    detail = detail_of(body)
    if detail is not None:
        return Answer(response.status, detail, is_problem=True)
    text = body.decode("utf-8", "replace").strip()
    first = text.splitlines()[0][:200] if text else response.reason or ""
    return Answer(response.status, f"HTTP {response.status} {first}".strip(), is_problem=False)


async def problem_detail(response: aiohttp.ClientResponse) -> str:
    """What a non-2xx answer says: the problem's detail, else its status and first line."""
    return (await read_answer(response)).detail


def refused(answer: Answer, *, what: str) -> RunRefused | NotAnEventStream:
    """The error for a 4xx: the service refused (a problem body), or this is not the service."""
    if answer.is_problem:
        return RunRefused(answer.detail, status=answer.status)
    return NotAnEventStream(
        f"{what} answered {answer.detail}, which is not a research-service's answer; "
        "check --server (the service's base URL, e.g. http://127.0.0.1:8080)"
    )


def authorization(api_key: str | None) -> dict[str, str]:
    """The header that signs a request with `api_key`; none without a key.

    RunRefused (as for a wrong key) for one no header can carry (a control character, a
    letter beyond ASCII): no service's key is such, and the HTTP client would fail unsaid.
    """
    if not api_key:
        return {}
    if not api_key.isascii() or not api_key.isprintable() or " " in api_key:
        raise unauthorized(api_key)
    return {"Authorization": f"Bearer {api_key}"}


def unauthorized(api_key: str | None) -> RunRefused:
    """The error for the service's 401: no key was sent, or the one sent is not valid (now)."""
    return RunRefused(BAD_KEY if api_key else NO_KEY, status=401)


def busy_wait_s(headers: Any) -> float:
    """How long to wait after a 429: its Retry-After, else the default, at most the cap."""
    asked = net.retry_after_s(headers)
    wait = DEFAULT_BUSY_WAIT_S if asked is None else asked
    log.debug("429: waiting %.3fs (asked: %s, cap %.0fs)", wait, asked, MAX_BUSY_WAIT_S)
    return min(wait, MAX_BUSY_WAIT_S)


class ServiceClient:
    """Create, inspect and cancel runs on the service at `base_url` (e.g. http://host:8080).

    A request answered 429 Too Many Requests is sent again after the wait its `Retry-After`
    asks for (at most `max_busy_wait_s`), up to BUSY_ATTEMPTS times in all; `notify` hears
    of each wait (for stderr). With `api_key`, every request carries `Authorization: Bearer`.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        notify: Callable[[str], None] | None = None,
        max_busy_wait_s: float = MAX_BUSY_WAIT_S,
        api_key: str | None = None,
    ) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/") + "/"
        #: The service's URL as messages show it: a password in it replaced.
        self.shown_url = redact_url(self.base_url.rstrip("/"))
        self.notify = notify if notify is not None else log.info
        self.max_busy_wait_s = max_busy_wait_s
        self.api_key = api_key

    def __repr__(self) -> str:
        signed = ", with an API key" if self.api_key else ""
        return f"<ServiceClient {self.shown_url}{signed}>"  # never the key itself

    def with_key(self, api_key: str) -> ServiceClient:
        """The same client, its requests carrying `api_key` instead."""
        return ServiceClient(
            self.session,
            self.base_url,
            notify=self.notify,
            max_busy_wait_s=self.max_busy_wait_s,
            api_key=api_key,
        )

    def url(self, path: str) -> str:
        """An absolute URL for a path the service returned (`/v1/runs/…`)."""
        return urljoin(self.base_url, path.lstrip("/"))

    async def create(self, question: str, options: dict[str, Any]) -> dict[str, Any]:
        """`POST /v1/runs`: the created run's body."""
        body: dict[str, Any] = {"question": question}
        if options:
            body["options"] = options
        return _run(await self._json("POST", "v1/runs", body=body), "POST", self.url("v1/runs"))

    async def snapshot(self, run_id: str) -> dict[str, Any]:
        """`GET /v1/runs/{id}`: the run's snapshot."""
        path = f"v1/runs/{run_id}"
        return _run(await self._json("GET", path), "GET", self.url(path))

    async def runs(self, *, limit: int) -> list[dict[str, Any]]:
        """`GET /v1/runs`: the newest runs this client may see, at most `limit`."""
        listing = await self._json("GET", f"v1/runs?limit={limit}")
        runs = listing.get("runs")
        return [run for run in runs if isinstance(run, dict)] if isinstance(runs, list) else []

    async def cancel(self, run_id: str) -> dict[str, Any]:
        """`POST /v1/runs/{id}/cancel`."""
        # `{}` as JSON: a bodiless POST goes out as application/octet-stream, which the service
        # refuses (415) since a cross-site form could send that.
        return await self._json("POST", f"v1/runs/{run_id}/cancel", body={})

    async def decide(self, run_id: str, decision: dict[str, Any]) -> dict[str, Any]:
        """`POST /v1/runs/{id}/plan`: approve (`{}`), edit (`queries`) or re-plan (`feedback`)."""
        return await self._json("POST", f"v1/runs/{run_id}/plan", body=decision)

    async def _json(self, method: str, path: str, *, body: Any = None) -> dict[str, Any]:
        url = self.url(path)
        attempt = 1
        while True:
            try:
                data, wait = await self._request(method, url, body=body)
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise ServiceUnreachable(
                    f"cannot reach the service at {self.shown_url} ({describe(exc)}); is it "
                    "running? Start it with `research-service serve`, or leave out --server to "
                    "use an in-process one"
                ) from exc
            if not isinstance(data, Answer):
                return _object(data, method, url)
            if data.status == 401 and data.is_problem:
                raise unauthorized(self.api_key)
            if data.status != 429 or attempt == BUSY_ATTEMPTS:
                raise _failure(data, method, url, attempts=attempt)
            wait = min(wait, self.max_busy_wait_s)
            attempt += 1
            self.notify(
                f"the service is busy ({data.detail}); trying again in {wait:g} s "
                f"(attempt {attempt} of {BUSY_ATTEMPTS})"
            )
            await asyncio.sleep(wait)

    async def _request(self, method: str, url: str, *, body: Any) -> tuple[Any, float]:
        """The decoded JSON, or the Answer of an error status; and the wait a 429 asks for."""
        async with self.session.request(
            method,
            url,
            json=body,
            headers=authorization(self.api_key),
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
        ) as response:
            if response.status >= 400:
                wait = busy_wait_s(response.headers) if response.status == 429 else 0.0
                return await read_answer(response), wait
            try:
                return await response.json(content_type=None), 0.0
            except ValueError:
                return None, 0.0


def _failure(answer: Answer, method: str, url: str, *, attempts: int) -> Exception:
    """The error for a failed request: failing (5xx), still busy (429), refused or not ours."""
    url = redact_url(url)
    if answer.status >= 500:
        return ServiceUnreachable(f"{method} {url} failed: {answer.detail}")
    if answer.status == 429:
        tries = f" (still busy after {attempts} attempts)" if attempts > 1 else ""
        return RunRefused(answer.detail + tries, status=answer.status)
    return refused(answer, what=f"{method} {url}")


def _object(data: Any, method: str, url: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise NotAnEventStream(
            f"{method} {redact_url(url)} answered something that is not a research-service's JSON; "
            "check --server"
        )
    return data


def _run(data: dict[str, Any], method: str, url: str) -> dict[str, Any]:
    """A run's body, checked for what following it needs."""
    missing = [name for name in RUN_FIELDS if not isinstance(data.get(name), str)]
    if missing:
        raise NotAnEventStream(
            f"{method} {redact_url(url)} answered JSON without a run's {', '.join(missing)}; "
            "check --server (is it a research-service?)"
        )
    return data


def describe(exc: BaseException) -> str:
    """A short reason for a failure of the service's connection or stream."""
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return "no data for too long"
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return "the connection closed in the middle of the response"
    return net.describe(exc)
