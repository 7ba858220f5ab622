"""A finished run's recording, from an event log, a run store file or a running service."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import aiohttp

from research_service.errors import ConfigError, RequestError, ResearchError
from research_service.events import Event, is_run_id
from research_service.net import describe
from research_service.problem_json import detail_of
from research_service.recording import RecordingError, dump_recording, parse_recording
from research_service.runs import sqlite_log
from research_service.runs.models import RunRecord

DOWNLOAD_CONNECT_TIMEOUT_S: Final = 10.0
DOWNLOAD_READ_TIMEOUT_S: Final = 60.0
#: The most of a foreign server's answer quoted in a message.
FIRST_LINE_CHARS: Final = 200
CHECK_SERVER: Final = "check --server (the service's base URL, e.g. http://127.0.0.1:8080)"


class RunNotFinished(RequestError):
    """The run has no `done` event yet, so there is no recording of it."""

    status = 409
    slug = "run-not-finished"
    title = "Run not finished"

    @classmethod
    def of(cls, run_id: str) -> RunNotFinished:
        """The error for run `run_id`, saying what to do."""
        return cls(f"run {run_id} has not finished; wait for its done event, then ask again")


class ExportError(ResearchError):
    """`research-service export` cannot get the recording; the message says why."""

    code = "export"
    #: The exit status of `research-service export`: the run or the store cannot give it.
    exit_code = 2


class NotAService(ExportError):
    """The --server cannot be reached, or what answers there is not a research-service."""

    exit_code = 4


def finished_recording(record: RunRecord, events: Sequence[Event]) -> str:
    """The recording of a finished run; RunNotFinished when its last event is not `done`."""
    if not events or not events[-1].is_final:
        raise RunNotFinished.of(record.id)
    return dump_recording(record, events)


async def from_store(path: Path, run_id: str) -> str:
    """The recording of run `run_id` from the SQLite run store file at `path`."""
    try:
        found = await asyncio.to_thread(path.is_file)
    except PermissionError as exc:  # is_file() raises it where the folder cannot be searched
        raise ExportError(
            f"cannot read {path.parent} ({exc.strerror}); run as the user the service runs as"
        ) from None
    if not found:
        raise ExportError(
            f"no run store at {path}; runs are only kept with --store sqlite (pass the "
            "--data-dir the service used, or --server URL to ask the running service)"
        )
    if not is_run_id(run_id):
        raise ExportError(f"{run_id!r} is not a run id; run ids are 16 lowercase hex characters")
    # Looked at read-only first: opening a file that is no run store would make it one.
    problem = await asyncio.to_thread(_not_a_store, path)
    if problem is not None:
        raise ExportError(
            f"cannot read the run store {path} ({problem}); is it a research-service run store?"
        )
    try:
        store = await sqlite_log.open(path)
        try:
            record = await store.get_run(run_id)
            events = [] if record is None else await store.read(run_id, after=0)
        finally:
            await store.close()
    except sqlite3.Error as exc:
        raise ExportError(
            f"cannot read the run store {path} ({exc}); is it a research-service run store?"
        ) from None
    return _finished(record, events, run_id=run_id, where=f"the run store {path}")


def _not_a_store(path: Path) -> str | None:
    """Why the file at `path` is no run store (read-only, so nothing is written), or None."""
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            found = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'runs'").fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        return str(exc)
    return None if found else "it holds no runs table"


async def from_postgres(url: str, run_id: str) -> str:
    """The recording of run `run_id` from the PostgreSQL run store at `url`."""
    # Loaded only here: asyncpg is not needed to export from a SQLite store.
    from research_service.runs import postgres_log  # noqa: PLC0415

    if not is_run_id(run_id):
        raise ExportError(f"{run_id!r} is not a run id; run ids are 16 lowercase hex characters")
    try:
        store = await postgres_log.open(url)
    except ConfigError as exc:
        raise ExportError(str(exc)) from None
    try:
        record = await store.get_run(run_id)
        events = [] if record is None else await store.read(run_id, after=0)
    finally:
        await store.close()
    return _finished(record, events, run_id=run_id, where="the PostgreSQL run store")


def _finished(record: RunRecord | None, events: Sequence[Event], *, run_id: str, where: str) -> str:
    """The recording of a run read from a store, or an ExportError saying why not."""
    if record is None:
        raise ExportError(f"no run {run_id} in {where}; list its runs with GET /v1/runs")
    try:
        return finished_recording(record, events)
    except RunNotFinished as exc:
        raise ExportError(
            f"{exc.detail} (a run left open by a stopped service ends when it starts again)"
        ) from None


async def download(server: str, run_id: str, *, api_key: str | None = None) -> str:
    """The recording of run `run_id` from the service at `server` (its base URL)."""
    headers = {} if api_key is None else {"Authorization": f"Bearer {api_key}"}
    url = f"{server.rstrip('/')}/v1/runs/{run_id}/recording"
    timeout = aiohttp.ClientTimeout(
        sock_connect=DOWNLOAD_CONNECT_TIMEOUT_S, sock_read=DOWNLOAD_READ_TIMEOUT_S
    )
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(url, headers=headers) as response,
        ):
            body = await response.read()
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise NotAService(
            f"cannot download {url} ({describe(exc)}); is `research-service serve` running at "
            f"{server}?"
        ) from None
    if status != 200:
        detail = detail_of(body)
        if detail is None:  # not the service's own problem body: another server answered
            raise NotAService(
                f"{url} answered HTTP {status} {_first_line(body)}, which is not a "
                f"research-service's answer; {CHECK_SERVER}"
            )
        error = NotAService if status >= 500 else ExportError
        raise error(f"{url} answered {status}: {detail}")
    try:
        text = body.decode("utf-8")
        parse_recording(text, source=url)
    except (UnicodeDecodeError, RecordingError) as exc:
        raise NotAService(
            f"{url} did not answer with a recording ({exc}); {CHECK_SERVER}"
        ) from None
    return text


def _first_line(body: bytes) -> str:
    """What a body that is not a problem begins with, on one line (an HTML page's first)."""
    lines = body.decode("utf-8", "replace").strip().splitlines()
    return lines[0].strip()[:FIRST_LINE_CHARS] if lines else "with an empty body"
