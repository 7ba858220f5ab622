"""Turn untrusted request input into validated values, or a RequestError naming the field."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import re
from collections.abc import Mapping
from typing import Any, Final

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from research_service.errors import (
    BodyTimeout,
    BodyTooLarge,
    InvalidInput,
    MalformedBody,
    MalformedJSON,
    UnsupportedMediaType,
)
from research_service.events import is_run_id
from research_service.pipeline.review import AWAITING_PLAN_REVIEW, MAX_REVIEW_ROUNDS, Decision
from research_service.runs.models import (
    BREADTH_RANGE,
    DEPTH_RANGE,
    MAX_SOURCES_RANGE,
    MAX_TOKENS_RANGE,
    RunOptions,
)
from research_service.text import encodable
from research_service.web.body_encoding import UndecodableBody, coding_of, decoded
from research_service.web.keys import SETTINGS
from research_service.webhooks.target import webhook_url

log = logging.getLogger(__name__)

MAX_BODY_BYTES: Final = 64 * 1024
#: Set by the expect handler (web/expect.py): the client holds its body back for `100 Continue`.
CONTINUE_OWED: Final = web.RequestKey("continue_owed", bool)
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
MAX_QUESTION_CHARS: Final = 2000
LIST_LIMIT_RANGE: Final = (1, 100)
DEFAULT_LIST_LIMIT: Final = 20
_OPTION_RANGES: Final = {
    "breadth": BREADTH_RANGE,
    "max_sources": MAX_SOURCES_RANGE,
    "max_tokens": MAX_TOKENS_RANGE,
    "depth": DEPTH_RANGE,
}
#: Boolean options: JSON true/false in a body, true/false (or 1/0) in a query string.
_OPTION_FLAGS: Final = ("review_plan",)
_FLAG_WORDS: Final = {"true": True, "1": True, "false": False, "0": False}
#: A reviewed plan's queries: how many, and how long each may be.
PLAN_QUERIES_RANGE: Final = (1, 8)
MAX_PLAN_QUERY_CHARS: Final = 200
MAX_FEEDBACK_CHARS: Final = 2000
# A query-string integer as people write it: ASCII digits, perhaps a minus. int() would also
# take "5_0", " 5", "+5" and other scripts' digits, which no client means to send.
_INT_PARAM: Final = re.compile(r"-?[0-9]+")
_NOT_A_CURSOR: Final = (
    "before is not a cursor this service issued; use the `next` value of a listing"
)


def question(value: Any, *, field: str = "question") -> str:
    """A question: a string of 1-2000 characters that is not blank."""
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be a string", field=field)
    if not value.strip():
        raise InvalidInput(f"{field} must not be blank", field=field)
    unicode_text(value, field=field)
    if len(value) > MAX_QUESTION_CHARS:
        raise InvalidInput(
            f"{field} is {len(value)} characters; the limit is {MAX_QUESTION_CHARS}", field=field
        )
    return value.strip()


def unicode_text(value: str, *, field: str) -> str:
    """`value`, refused when it cannot be written out as UTF-8 (`text.encodable`)."""
    if not encodable(value):
        raise InvalidInput(f"{field} is not valid Unicode text", field=field)
    return value


def _bounded_int(value: Any, *, field: str, bounds: tuple[int, int]) -> int:
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{field} must be an integer from {low} to {high}", field=field)
    if not low <= value <= high:
        raise InvalidInput(f"{field} must be from {low} to {high}, got {value}", field=field)
    return value


def _int_param(raw: str, *, field: str, bounds: tuple[int, int]) -> int:
    if not _INT_PARAM.fullmatch(raw):
        low, high = bounds
        raise InvalidInput(
            f"{field} must be an integer from {low} to {high}, got {raw!r}", field=field
        )
    return _bounded_int(int(raw), field=field, bounds=bounds)


def options(value: Any, *, beside: tuple[str, ...] = ()) -> RunOptions:
    """Validated run options; unknown keys are rejected (those `beside` are read elsewhere)."""
    if value is None:
        return RunOptions()
    if not isinstance(value, dict):
        raise InvalidInput("options must be a JSON object", field="options")
    unknown = sorted(set(value) - set(_OPTION_RANGES) - set(_OPTION_FLAGS) - set(beside))
    if unknown:
        allowed = ", ".join((*_OPTION_RANGES, *_OPTION_FLAGS, *beside))
        raise InvalidInput(
            f"unknown option(s) {', '.join(unknown)}; allowed: {allowed}",
            field=f"options.{unknown[0]}",
        )
    checked: dict[str, Any] = {
        key: _bounded_int(value[key], field=f"options.{key}", bounds=bounds)
        for key, bounds in _OPTION_RANGES.items()
        if key in value
    }
    for flag in _OPTION_FLAGS:
        if flag in value:
            if not isinstance(value[flag], bool):
                raise InvalidInput(f"options.{flag} must be true or false", field=f"options.{flag}")
            checked[flag] = value[flag]
    return RunOptions(**checked)


#: What an HTML form (or a "simple" cross-site fetch) can send: never taken, even empty.
FORM_TYPES: Final = frozenset(
    {"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"}
)


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or content_type.endswith("+json")


async def json_object(
    request: web.Request, *, required: bool = True, shape: str = "a JSON object"
) -> dict[str, Any] | None:
    """The request's body as a JSON object; None when it is optional and none was sent.

    A body must come as application/json, and a form's content type is refused even with
    no body: what a cross-site HTML form sends never passes. It must arrive within
    --body-timeout-s of the headers (408): a connection that trickles it, or never sends
    it, holds no connection slot for longer.
    """
    content_type = request.content_type
    if (required or content_type in FORM_TYPES) and not _is_json(content_type):
        raise UnsupportedMediaType(f"send the body as application/json, not {content_type}")
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise BodyTooLarge(
            f"the body is {request.content_length} bytes; the limit is {MAX_BODY_BYTES}"
        )
    await send_continue(request)
    limit = request.app[SETTINGS].body_timeout_s
    try:
        async with asyncio.timeout(limit):
            raw = await request.read()
    except TimeoutError:
        raise BodyTimeout(
            f"the request body did not arrive within {limit:g} s; send the whole body at once"
        ) from None
    except RequestPayloadError as exc:
        # aiohttp's message: what could not be read (never the body's bytes).
        raise MalformedBody(f"the request body cannot be read: {unreadable_body(exc)}") from None
    raw = _decoded_body(raw, request.headers.get(hdrs.CONTENT_ENCODING, ""))
    if not raw and not required:
        return None
    if not _is_json(content_type):
        raise UnsupportedMediaType(f"send the body as application/json, not {content_type}")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        # ValueError covers syntax errors, bad UTF-8 and integers over Python's digit limit.
        raise MalformedJSON(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidInput(f"the body must be {shape}")
    return body


def _decoded_body(raw: bytes, content_encoding: str) -> bytes:
    """The body decoded from its Content-Encoding (`web.body_encoding`), within the limit."""
    coding = coding_of(content_encoding)
    if coding is None:
        return raw
    try:
        body = decoded(raw, coding, limit=MAX_BODY_BYTES)
    except UndecodableBody as exc:
        # The connection is closed after the answer (MalformedBody), said as aiohttp's are.
        log.info("closed a connection whose request body cannot be read: %s", exc)
        raise MalformedBody(f"the request body cannot be read: {exc}") from None
    if len(body) > MAX_BODY_BYTES:
        raise BodyTooLarge(
            f"the body decodes ({coding}) to more than {MAX_BODY_BYTES} bytes, the limit"
        )
    return body


async def send_continue(request: web.Request) -> None:
    """Ask for the body a client holds back (`Expect: 100-continue`), once, as it is read.

    Only here: every check of the request's headers has passed, so the body will be read.
    """
    if request.pop(CONTINUE_OWED, False) and request.can_read_body:
        await request.writer.write(_CONTINUE)
        # An interim answer: the response proper has not started (as aiohttp's own does).
        request.writer.output_size = 0
        await request.writer.drain()


def unreadable_body(exc: RequestPayloadError) -> str:
    """What aiohttp says of a body it could not read, on one line."""
    cause = exc.__cause__
    message = cause.message if isinstance(cause, HttpProcessingError) else str(exc)
    return " ".join(message.split()) or "its framing is broken"


def not_modified(request: web.Request, etag: str) -> bool:
    """Whether `If-None-Match` names `etag` (its value, unquoted) or is `*` (RFC 9110 13.1.2).

    A weak tag matches too, as the weak comparison a GET takes.
    """
    return any(tag.value in (etag, "*") for tag in request.if_none_match or ())


def no_fields(body: Mapping[str, Any] | None, *, what: str) -> None:
    """Refuse any field in a body that takes none (`{}` or no body at all)."""
    if body:
        raise InvalidInput(f"{what} takes no fields; send no body or {{}}", field=sorted(body)[0])


async def create_body(request: web.Request) -> tuple[str, RunOptions, str | None]:
    """The question, options and webhook URL (`options.webhook`) of a `POST /v1/runs` body."""
    body = await json_object(request, shape="a JSON object with a question field")
    assert body is not None
    unknown = sorted(set(body) - {"question", "options"})
    if unknown:
        raise InvalidInput(
            f"unknown field(s) {', '.join(unknown)}; allowed: question, options",
            field=unknown[0],
        )
    if "question" not in body:
        raise InvalidInput("question is required", field="question")
    given = body.get("options")
    if given is None and "options" in body:  # null is not an object: no options is none sent
        raise InvalidInput("options must be a JSON object", field="options")
    hook = webhook_url(given["webhook"]) if isinstance(given, dict) and "webhook" in given else None
    return question(body["question"]), options(given, beside=("webhook",)), hook


def known_params(query: Mapping[str, str], *allowed: str) -> None:
    """Reject query parameters the endpoint does not take (a typo must not pass silently)."""
    unknown = sorted(set(query) - set(allowed))
    if unknown:
        shown = ", ".join(sorted(allowed)) or "none"
        raise InvalidInput(
            f"unknown parameter(s) {', '.join(unknown)}; allowed: {shown}", field=unknown[0]
        )


def research_query(query: Mapping[str, str]) -> tuple[str, RunOptions]:
    """The question and options of a `GET /v1/research` query string."""
    known_params(query, "q", "last_event_id", *_OPTION_RANGES, *_OPTION_FLAGS)
    if "q" not in query:
        raise InvalidInput("q (the question) is required", field="q")
    checked: dict[str, Any] = {
        key: _int_param(query[key], field=key, bounds=bounds)
        for key, bounds in _OPTION_RANGES.items()
        if key in query
    }
    for flag in _OPTION_FLAGS:
        if flag in query:
            if query[flag] not in _FLAG_WORDS:
                raise InvalidInput(f"{flag} must be true or false, got {query[flag]!r}", field=flag)
            checked[flag] = _FLAG_WORDS[query[flag]]
    return question(query["q"], field="q"), RunOptions(**checked)


def plan_decision(body: Mapping[str, Any] | None) -> tuple[Decision, int | None]:
    """A `POST /v1/runs/{id}/plan` body's decision, and the round it is meant for.

    The decision: approve, edit (queries) or feedback; the round None: whichever is open.
    """
    body = body or {}
    unknown = sorted(set(body) - {"queries", "feedback", "round"})
    if unknown:
        raise InvalidInput(
            f"unknown field(s) {', '.join(unknown)}; allowed: queries, feedback, round",
            field=unknown[0],
        )
    return _decision(body), _round(body.get("round"))


def _round(value: Any) -> int | None:
    if value is None:
        return None
    if type(value) is not int or not 1 <= value <= MAX_REVIEW_ROUNDS:
        raise InvalidInput(
            f"round must be an integer from 1 to {MAX_REVIEW_ROUNDS}: the round of the plan "
            "you decide on (the review event's round)",
            field="round",
        )
    return value


def _decision(body: Mapping[str, Any]) -> Decision:
    queries = body.get("queries")
    if "queries" in body and "feedback" in body:  # null included
        raise InvalidInput(
            "send queries (run these) or feedback (plan again), not both", field="feedback"
        )
    if "feedback" in body:  # null included: only `queries` may be null, to approve
        return Decision(feedback=_feedback(body["feedback"]))
    if queries is not None:
        return Decision(queries=_plan_queries(queries))
    return Decision()


def _plan_queries(value: Any) -> tuple[str, ...]:
    low, high = PLAN_QUERIES_RANGE
    if not isinstance(value, list) or not low <= len(value) <= high:
        raise InvalidInput(
            f"queries must be a list of {low} to {high} search queries", field="queries"
        )
    kept: dict[str, str] = {}
    for index, query in enumerate(value):
        field = f"queries[{index}]"
        if not isinstance(query, str):
            raise InvalidInput(f"{field} must be a string", field=field)
        text = " ".join(unicode_text(query, field=field).split())
        if not text:
            raise InvalidInput(f"{field} is blank", field=field)
        if len(text) > MAX_PLAN_QUERY_CHARS:
            raise InvalidInput(
                f"{field} is {len(text)} characters; the limit is {MAX_PLAN_QUERY_CHARS}",
                field=field,
            )
        kept.setdefault(text.casefold(), text)  # duplicates (in any case) once
    return tuple(kept.values())


def _feedback(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput("feedback must be a non-blank string", field="feedback")
    text = unicode_text(value.strip(), field="feedback")
    if len(text) > MAX_FEEDBACK_CHARS:
        raise InvalidInput(
            f"feedback is {len(text)} characters; the limit is {MAX_FEEDBACK_CHARS}",
            field="feedback",
        )
    return text


def list_params(query: Mapping[str, str]) -> tuple[int, tuple[float, str] | None, str | None]:
    """`limit`, the decoded `before` cursor and the `awaiting` filter of `GET /v1/runs`."""
    known_params(query, "limit", "before", "awaiting")
    limit = DEFAULT_LIST_LIMIT
    if "limit" in query:
        limit = _int_param(query["limit"], field="limit", bounds=LIST_LIMIT_RANGE)
    before = decode_cursor(query["before"]) if "before" in query else None
    awaiting = query.get("awaiting")
    if awaiting is not None and awaiting != AWAITING_PLAN_REVIEW:
        raise InvalidInput(
            f"awaiting must be {AWAITING_PLAN_REVIEW} (runs waiting for their plan's review), "
            f"got {awaiting!r}",
            field="awaiting",
        )
    return limit, before, awaiting


def encode_cursor(key: tuple[float, str]) -> str:
    """An opaque cursor for the listing position after `key`."""
    return base64.urlsafe_b64encode(f"{key[0]!r}|{key[1]}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """The sort key inside a cursor made by `encode_cursor`; any other text is refused."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, run_id = base64.urlsafe_b64decode(padded).decode().split("|", 1)
        key = (float(created), run_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput(_NOT_A_CURSOR, field="before") from None
    # Only what encode_cursor writes: a finite time and a run id, spelled the way it spells
    # them (so "inf", "nan", "1e3" or a padded copy of a real cursor are not cursors).
    if not (math.isfinite(key[0]) and is_run_id(run_id)) or encode_cursor(key) != cursor:
        raise InvalidInput(_NOT_A_CURSOR, field="before")
    return key
