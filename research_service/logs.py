"""Log lines on stderr: text, or one JSON object a line naming its request and run."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import sys
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any, Final

from research_service import log_writer
from research_service.addresses import without_userinfo

#: The formats of `--log-format`.
LOG_FORMATS: Final = ("text", "json")
#: The text format: unchanged since the first release (tests and people read it).
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: The logger of the model SDK's HTTP client, which logs each request's URL at INFO.
HTTP_CLIENT_LOGGER: Final = "httpx2"
#: The record attribute an access line carries its fields in (see web/protocol.py).
ACCESS_FIELDS: Final = "access_fields"

#: The id of the HTTP request being handled, if any.
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)
#: The id of the run being executed or addressed, if any.
run_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("run_id", default=None)


def run_context(run_id: str) -> contextvars.Context:
    """A context for a run's task: its lines name the run, not the request that started it."""
    context = contextvars.copy_context()
    context.run(request_id_var.set, None)
    context.run(run_id_var.set, run_id)
    return context


def run_task(coroutine: Coroutine[Any, Any, None], run_id: str) -> asyncio.Task[None]:
    """A run's task, named `run-ID`, whose log lines name its run."""
    return asyncio.create_task(coroutine, name=f"run-{run_id}", context=run_context(run_id))


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and the request and run ids."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id, run_id = request_id_var.get(), run_id_var.get()
        if request_id is not None:
            line["request_id"] = request_id
        if run_id is not None:
            line["run_id"] = run_id
        access = getattr(record, ACCESS_FIELDS, None)
        if isinstance(access, dict):
            line.update(access)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class QueuedHandler(logging.Handler):
    """Hands each record, formatted on the caller's thread, to the log's writer thread.

    It never waits: the writer (`log_writer`) writes the lines in batches, or drops them.
    """

    def __init__(self, writer: log_writer.LineWriter) -> None:
        super().__init__()
        self.writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        """Format `record` (its context's request and run ids with it) and queue the line."""
        try:
            self.writer.put(self.format(record))
        except Exception:  # noqa: BLE001 - as logging's own handlers: report, go on
            self.handleError(record)


def configure_logging(level: str, fmt: str = "text") -> None:
    """Log lines to stderr at `level`, as text or (`fmt="json"`) one JSON object a line.

    A thread of their own writes them, so a stderr that nobody reads never holds up the loop.
    """
    formatter = JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)
    handler = QueuedHandler(log_writer.start(sys.stderr, formatter))
    handler.setFormatter(formatter)
    logging.basicConfig(level=level, handlers=[handler])
    logging.getLogger(HTTP_CLIENT_LOGGER).addFilter(hide_url_passwords)


def hide_url_passwords(record: logging.LogRecord) -> bool:
    """Strip a user and password from the URLs in an HTTP client's record (a model gateway's)."""
    if isinstance(record.args, tuple):
        record.args = tuple(_without_userinfo(arg) for arg in record.args)
    return True


def _without_userinfo(arg: object) -> object:
    """`arg`, as text without a URL's user and password if it has them; else unchanged."""
    if isinstance(arg, int | float):  # a status for %d: left a number
        return arg
    text = str(arg)
    return without_userinfo(text) if "@" in text else arg
