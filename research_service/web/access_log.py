"""The access log: one line per request, in aiohttp's default format, made in one step.

aiohttp's own `AccessLogger` builds a line from its general format, one method per field,
and logs it with `Logger.info`, which looks up its caller's frame: 17-18 µs a text line, where
this takes 10 (bench/README.md, "The access line, made in one step"). aiohttp makes an access
logger per connection; its own keeps an instance dict, this one none.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Final
from urllib.parse import unquote_plus

from aiohttp import hdrs, web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_log import AccessLogger
from aiohttp.web_request import BaseRequest

from research_service.logs import ACCESS_FIELDS
from research_service.web.request_id import request_id_of

#: Query parameters whose values never reach the log, in any case: a run's stream token, and
#: the names a client may mistakenly send a key under (a key is a header's, never the URL's).
SECRET_PARAMS: Final = frozenset(
    {"token", "api_key", "apikey", "key", "access_token", "password", "secret", "authorization"}
)
REDACTED: Final = "REDACTED"
_NAME_LETTERS: Final = re.compile(r"[^a-z]")
_SECRET_NAMES: Final = frozenset(_NAME_LETTERS.sub("", name) for name in SECRET_PARAMS)
#: A key this service made, wherever it shows (`keys.new_key`'s shape).
_SERVICE_KEY: Final = re.compile(r"rsk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")
#: One `name=value` of a query, `&` or `;` apart (a value runs to the next of either).
_PAIR: Final = re.compile(r"([^&;=]*)(=?)([^&;]*)")
#: Marks a request that gets no access line: `handle_error` logged it already, with the reason.
LOGGED_ALREADY: Final = web.RequestKey("protocol_error", bool)

# (second, its text): the last start time formatted, kept as one pair so that a thread
# reading it never sees one second's text with another's number.
_stamp: tuple[int, str] = (-1, "")


def _started(at: float) -> str:
    """`at` in local time, as aiohttp's `%t` writes it; formatted once per second."""
    global _stamp  # noqa: PLW0603 - a cache of one entry
    second = int(at)
    stamp = _stamp
    if stamp[0] != second:
        stamp = _stamp = (second, time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(at)))
    return stamp[1]


def _secret(name: str, value: str) -> bool:
    # `token[]`, `token%00`, ` Token`: refused as unknown, and logged; still its secret.
    return _NAME_LETTERS.sub("", name.casefold()) in _SECRET_NAMES or "rsk_" in value


def logged_path(request: BaseRequest) -> str:
    """The request's path and query, the values of secrets (tokens, keys) replaced."""
    return logged_url(request.path_qs)


def logged_url(url: str) -> str:
    """`url` with the values of the secrets in its query, and any key this service made, replaced.

    A name is read as a server would read it: percent-decoded, pairs `&` or `;` apart.
    """
    head, mark, query = url.partition("?")
    if mark and "=" in query:
        query, hash_mark, fragment = query.partition("#")
        query = _PAIR.sub(_redacted_pair, query)
        url = f"{head}?{query}{hash_mark}{fragment}"
    return _SERVICE_KEY.sub("rsk_" + REDACTED, url) if "rsk_" in url else url


def _redacted_pair(pair: re.Match[str]) -> str:
    name, equals, value = pair[1], pair[2], pair[3]
    if equals and _secret(unquote_plus(name), unquote_plus(value)):
        return f"{name}={REDACTED}"
    return pair[0]


def access_line(
    request: BaseRequest, response: web.StreamResponse, duration: float, path: str
) -> str:
    """The line aiohttp's default format (`AccessLogger.LOG_FORMAT`) writes for the request."""
    headers, version = request.headers, request.version
    return (
        f"{request.remote or '-'} {_started(time.time() - duration)} "
        f'"{request.method} {path} HTTP/{version.major}.{version.minor}" '
        f"{response.status} {response.body_length} "
        # A Referer is a page's address, which may carry its stream token too.
        f'"{_quoted(logged_url(headers.get(hdrs.REFERER, "-")))}" '
        f'"{_quoted(headers.get(hdrs.USER_AGENT, "-"))}"'
    )


def _quoted(value: str) -> str:
    r"""A header's value as the line quotes it: `"` and `\` escaped (as nginx does).

    A `"` would end the field early, and let a client write fields of its own.
    """
    if '"' not in value and "\\" not in value:
        return value
    return value.replace("\\", "\\x5C").replace('"', "\\x22")


def access_fields(
    request: BaseRequest, response: web.StreamResponse, duration: float, path: str
) -> dict[str, object]:
    """The line's fields, which the JSON log format writes as its own."""
    fields: dict[str, object] = {
        "request_id": request_id_of(request),
        "method": request.method,
        "path": path,
        "status": response.status,
        "duration_ms": round(duration * 1000, 3),
        "remote": request.remote,
    }
    run_id = request.match_info.get("run_id") if isinstance(request, web.Request) else None
    if run_id is not None:
        fields["run_id"] = run_id
    return fields


class QuietAccessLogger(AbstractAccessLogger):
    """The access log: aiohttp's default format, without protocol errors or stream tokens.

    A protocol error was logged already, with its reason; a token in a log would be a key to
    its run, so its value is replaced. Each line also carries its fields (request id, method,
    path, status, duration, remote, and the run a `/v1/runs/{id}/…` path names) for the JSON
    log format.
    """

    __slots__ = ()

    def __init__(self, logger: logging.Logger, log_format: str = AccessLogger.LOG_FORMAT) -> None:
        if log_format != AccessLogger.LOG_FORMAT:
            raise ValueError(
                "the access log writes aiohttp's default format only; leave access_log_format unset"
            )
        super().__init__(logger, log_format)

    @property
    def enabled(self) -> bool:
        """Whether the access log's level lets its lines through."""
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: BaseRequest, response: web.StreamResponse, time: float) -> None:
        """Log one request, unless it was a protocol error."""
        if request.get(LOGGED_ALREADY):
            return
        logger = self.logger
        try:
            path = logged_path(request)
            # Made directly, not by `Logger.info`: no lookup of the caller's frame.
            record = logger.makeRecord(
                logger.name, logging.INFO, __file__, 0,
                access_line(request, response, time, path), (), None,
                extra={ACCESS_FIELDS: access_fields(request, response, time, path)},
            )  # fmt: skip
            logger.handle(record)
        except Exception:
            logger.exception("Error in logging")
