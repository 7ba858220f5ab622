"""The `searxng` search provider: a SearXNG instance's JSON API, over a session it is handed."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp

from research_service import __version__
from research_service.addresses import public_url
from research_service.defaults import DEFAULT_SEARCH_ATTEMPTS
from research_service.errors import ConfigError, SearchError
from research_service.net import describe
from research_service.providers.base import SearchHit
from research_service.providers.search_retry import (
    DEFAULT_MAX_WAIT_S,
    HTTPStatusFailure,
    with_retries,
)
from research_service.providers.urls import canonical_url
from research_service.settings import Settings
from research_service.settings_fields import env_name
from research_service.text import shorten, well_formed

log = logging.getLogger(__name__)

SEARCH_PATH: Final = "/search"
CONNECT_TIMEOUT_S: Final = 5.0
# A page of SearXNG results is tens of kilobytes; anything this big is not one.
MAX_RESPONSE_BYTES: Final = 4 * 1024 * 1024
READ_CHUNK_BYTES: Final = 64 * 1024
# SearXNG's titles and snippets are a line or two; longer ones are cut (they fill the prompt).
TITLE_CHARS: Final = 300
SNIPPET_CHARS: Final = 1000
# Results looked at per hit wanted, best first: SearXNG merges duplicates itself, so a reply
# whose best hundreds are one page again is not a search worth reading further.
MAX_CANDIDATES_PER_HIT: Final = 20
# Results read of one reply, in SearXNG's order (a page of results is tens of them).
MAX_RESULTS_READ: Final = 1000
# A reply larger than this is parsed off the event loop: 4 MiB of JSON takes ~0.2 s to read.
PARSE_ON_LOOP_BYTES: Final = 64 * 1024
WEB_SCHEMES: Final = ("http", "https")
REQUEST_HEADERS: Final = {
    "Accept": "application/json",
    "User-Agent": f"research-service/{__version__}",
}
JSON_REFUSED: Final = (
    "SearXNG refused format=json; enable json in its settings.yml (search: formats: [html, json])"
)
SET_URL: Final = "start it or set SEARXNG_URL"


def client_timeout(search_timeout_s: float) -> aiohttp.ClientTimeout:
    """The timeout of one SearXNG request: the search timeout, and a shorter one to connect."""
    return aiohttp.ClientTimeout(
        total=search_timeout_s, connect=min(CONNECT_TIMEOUT_S, search_timeout_s)
    )


class SearxngSearch:
    """Asks a SearXNG instance's `/search?format=json` API; retries what is worth retrying."""

    name: str = "searxng"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        engines: Sequence[str] = (),
        language: str = "",
        time_range: str = "",
        attempts: int = DEFAULT_SEARCH_ATTEMPTS,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in WEB_SCHEMES or not parts.netloc:
            raise ConfigError(
                f"SEARXNG_URL {base_url!r} is not an http(s) URL; set it to the instance's "
                "address, e.g. http://127.0.0.1:8888"
            )
        self.session = session
        # Requests go to the URL as given (a user and password in it are sent as basic
        # auth); messages, which reach run events and the open /readyz, show it without them.
        self._search_url = base_url.rstrip("/") + SEARCH_PATH
        self.base_url = public_url(base_url)
        self.endpoint = self.base_url + SEARCH_PATH
        self.engines = tuple(engines)
        self.language = language
        self.time_range = time_range
        self.attempts = max(1, attempts)
        self.max_wait_s = max_wait_s

    @classmethod
    def from_settings(cls, session: aiohttp.ClientSession, settings: Settings) -> SearxngSearch:
        """The provider configured by `settings` (`searxng_*`, `search_attempts`)."""
        engines = [e.strip() for e in settings.searxng_engines.split(",") if e.strip()]
        return cls(
            session,
            base_url=settings.searxng_url,
            engines=engines,
            language=settings.searxng_language,
            time_range=settings.searxng_time_range,
            attempts=settings.search_attempts,
        )

    def params(self, query: str) -> dict[str, str]:
        """The query string of a search; unset options are left to the instance's defaults.

        `safesearch` is not sent, so the instance's own `search.safe_search` applies.
        """
        params = {"q": query, "format": "json", "pageno": "1"}
        if self.engines:
            params["engines"] = ",".join(self.engines)
        if self.language:
            params["language"] = self.language
        if self.time_range:
            params["time_range"] = self.time_range
        return params

    async def search(self, query: str, *, limit: int) -> list[SearchHit]:
        """Return at most `limit` hits for `query`, best first; raise SearchError on failure."""
        if limit <= 0 or not query.strip():
            return []
        attempts = 0

        async def attempt() -> Any:
            nonlocal attempts
            attempts += 1
            status, headers, body = await self._get(self.params(query))
            if status != 200:
                raise HTTPStatusFailure.from_headers(status, headers, detail=_error_detail(body))
            if len(body) > PARSE_ON_LOOP_BYTES:
                return await asyncio.to_thread(self._decode, body)
            return self._decode(body)

        try:
            payload = await with_retries(
                attempt,
                what=f"SearXNG search for {query!r}",
                attempts=self.attempts,
                max_wait_s=self.max_wait_s,
            )
        except (HTTPStatusFailure, TimeoutError, aiohttp.ClientError) as exc:
            raise self._error(exc, attempts=attempts) from exc
        return self._hits(payload, query=query, limit=limit)

    async def check(self) -> None:
        """Make one cheap request (a search without a query); raise ConfigError if it fails.

        SearXNG answers it with a 400 `{"error": "No query"}` when JSON is enabled and a 403
        when it is not, without asking any engine.
        """
        try:
            status, headers, body = await self._get({"format": "json"})
        except TimeoutError as exc:
            raise ConfigError(f"SearXNG at {self.base_url} did not answer; {SET_URL}") from exc
        except aiohttp.ClientError as exc:
            raise ConfigError(
                f"cannot reach SearXNG at {self.base_url} ({describe(exc)}); {SET_URL}"
            ) from exc
        except SearchError as exc:
            raise ConfigError(str(exc)) from exc
        if status in (200, 400) and isinstance(_json_or_none(body), dict):
            log.info("SearXNG at %s serves JSON", self.base_url)
            return
        if status in (200, 400):
            raise ConfigError(
                f"{self.endpoint} answered, but not with SearXNG's JSON; set SEARXNG_URL to "
                "the SearXNG instance itself"
            )
        failure = HTTPStatusFailure.from_headers(status, headers, detail=_error_detail(body))
        raise ConfigError(self._status_message(failure))

    async def _get(self, params: Mapping[str, str]) -> tuple[int, Mapping[str, str], bytes]:
        async with self.session.get(self._search_url, params=params, headers=REQUEST_HEADERS) as r:
            if r.content_length is not None and r.content_length > MAX_RESPONSE_BYTES:
                raise self._too_large()
            body = bytearray()
            async for chunk in r.content.iter_chunked(READ_CHUNK_BYTES):
                body += chunk
                if len(body) > MAX_RESPONSE_BYTES:
                    raise self._too_large()
            return r.status, r.headers, bytes(body)

    def _decode(self, body: bytes) -> Any:
        payload = _json_or_none(body)
        if not isinstance(payload, dict) or not isinstance(payload.get("results"), list):
            raise SearchError(
                f"{self.endpoint} answered, but not with SearXNG's JSON results; set "
                "SEARXNG_URL to the SearXNG instance itself",
                provider=self.name,
            )
        return payload

    def _hits(self, payload: dict[str, Any], *, query: str, limit: int) -> list[SearchHit]:
        """SearXNG's results as hits: best score first, one per canonical URL, at most `limit`.

        Only the results needed are turned into hits, and at most MAX_CANDIDATES_PER_HIT
        per hit wanted are looked at: a reply of many thousands (distinct or all one page)
        costs a sort of their scores, not a parse of every URL on the event loop.
        """
        # Only the first MAX_RESULTS_READ, in SearXNG's order: a reply of millions (within the
        # size cap) would otherwise be sorted whole on the event loop, for seconds.
        results: list[Any] = payload["results"][:MAX_RESULTS_READ]
        # Stable: SearXNG's order breaks ties.
        order = sorted(range(len(results)), key=lambda i: -_score(_get(results[i], "score")))
        hits: list[SearchHit] = []
        seen: set[str] = set()
        for index in order[: limit * MAX_CANDIDATES_PER_HIT]:
            found = _hit(results[index])
            if found is None:
                continue
            hit, key = found
            if key not in seen:
                seen.add(key)
                hits.append(hit)
                if len(hits) >= limit:
                    break
        silent = _unresponsive(payload.get("unresponsive_engines"))
        if not hits and silent:
            raise SearchError(
                f"no SearXNG engine answered the search for {query!r} ({silent}); check the "
                f"instance's engines or choose others with {env_name('searxng_engines')}",
                provider=self.name,
                retryable=True,
            )
        if silent:
            log.info("SearXNG engines that did not answer %r: %s", query, silent)
        return hits

    def _error(self, exc: BaseException, *, attempts: int) -> SearchError:
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        if isinstance(exc, HTTPStatusFailure):
            transient = exc.status == 429 or exc.status >= 500
            return SearchError(
                self._status_message(exc, tries=tries),
                provider=self.name,
                retryable=transient,
                retry_after=exc.retry_after,
            )
        if isinstance(exc, TimeoutError):
            message = (
                f"SearXNG at {self.base_url} did not answer in time{tries}; check that it is "
                f"healthy, or raise {env_name('search_timeout_s')}"
            )
        elif isinstance(exc, aiohttp.ClientConnectorError):
            message = f"cannot reach SearXNG at {self.base_url} ({describe(exc)}){tries}; "
            message += SET_URL
        else:
            message = f"SearXNG at {self.base_url} failed ({describe(exc)}){tries}; see its log"
        return SearchError(message, provider=self.name, retryable=True)

    def _status_message(self, exc: HTTPStatusFailure, *, tries: str = "") -> str:
        status, detail = exc.status, f": {exc.detail}" if exc.detail else ""
        if status == 403:
            return JSON_REFUSED
        if status == 429:
            return (
                f"SearXNG at {self.base_url} is rate-limiting this service (HTTP 429){tries}; "
                "for a private instance set server.limiter: false in its settings.yml, "
                "else wait and try again"
            )
        if status >= 500:
            return f"SearXNG at {self.base_url} failed (HTTP {status}{detail}){tries}; see its log"
        if status == 404:
            return (
                f"no SearXNG search API at {self.endpoint} (HTTP 404); set SEARXNG_URL to the "
                "instance's base address"
            )
        if status == 400:
            options = ", ".join(env_name(name) for name in ("searxng_engines", "searxng_language"))
            return f"SearXNG rejected the search (HTTP 400{detail}); check {options}"
        return f"SearXNG at {self.base_url} refused the search (HTTP {status}{detail}); {SET_URL}"

    def _too_large(self) -> SearchError:
        return SearchError(
            f"{self.endpoint} sent more than {MAX_RESPONSE_BYTES} bytes, which is not a page of "
            "SearXNG results; set SEARXNG_URL to the SearXNG instance itself",
            provider=self.name,
        )


def _hit(item: object) -> tuple[SearchHit, str] | None:
    """One SearXNG result as a hit, with its canonical URL; None if it is not a web page."""
    if not isinstance(item, dict):
        return None
    url = item.get("url")
    if not isinstance(url, str):
        return None
    url = url.strip()
    if well_formed(url) != url:
        return None  # a lone surrogate: no page has this address
    try:
        if urlsplit(url).scheme.lower() not in WEB_SCHEMES:
            return None
        key = canonical_url(url)  # what results, and later sources, are told apart by
    except ValueError:  # "http://[::1", a host that fails IDNA's normalization
        return None
    title = shorten(_text(item.get("title")), TITLE_CHARS)
    content = shorten(_text(item.get("content")), SNIPPET_CHARS)
    hit = SearchHit(title=title or url, url=url, snippet=content, score=_score(item.get("score")))
    return hit, key


def _text(value: object) -> str:
    """A result's title or content on one line, valid Unicode; "" if it is not a string."""
    return well_formed(" ".join(value.split())) if isinstance(value, str) else ""


def _get(item: object, key: str) -> object:
    """`item[key]` if `item` is an object, else None."""
    return item.get(key) if isinstance(item, dict) else None


def _score(value: object) -> float:
    """SearXNG's score of a result; 0 when it is missing or not a finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value) if math.isfinite(value) else 0.0


def _unresponsive(engines: object) -> str:
    """SearXNG's `unresponsive_engines` ([name, reason] pairs) as `name (reason), …`."""
    if not isinstance(engines, list):
        return ""
    named = []
    for entry in engines:
        if isinstance(entry, list | tuple) and entry:
            reason = f" ({entry[1]})" if len(entry) > 1 and entry[1] else ""
            named.append(f"{entry[0]}{reason}")
    return well_formed(", ".join(named))


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError; JSON nested deeper than decodable
        return None


def _error_detail(body: bytes) -> str:
    """The `error` SearXNG puts in a JSON error body (e.g. "No query"), if there is one."""
    payload = _json_or_none(body)
    if isinstance(payload, dict) and isinstance(payload.get("error"), str):
        return well_formed(str(payload["error"]))
    return ""
