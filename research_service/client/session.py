"""Start or find a run, follow it to its end on a display, and say how it ended."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs

from research_service.client.api import ServiceClient
from research_service.client.follow import DEFAULT_GIVE_UP_S, Follower
from research_service.client.recorder import Recorder
from research_service.client.review import Reviewer, ReviewInput
from research_service.client.text import Display
from research_service.client.urls import RUN_URL_HINT, check_server, split_url
from research_service.errors import ClientError, UsageError
from research_service.events import is_run_id

#: Exit codes of `ask` and `listen`, by how the run ended (docs in README "Terminal").
EXIT_COMPLETED: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_CANCELLED: Final = 3
EXIT_UNREACHABLE: Final = 4
EXIT_INTERRUPTED: Final = 130
EXIT_BY_STATUS: Final = {
    "completed": EXIT_COMPLETED,
    "failed": EXIT_FAILED,
    "cancelled": EXIT_CANCELLED,
}
#: Time allowed for the cancel request sent on Ctrl-C with --cancel-on-exit.
CANCEL_TIMEOUT_S: Final = 5.0
_RUN_PATH = re.compile(r"^(?P<prefix>.*?)/v1/runs/(?P<id>[0-9a-f]{16})(?:/events|/recording)?/?\Z")


@dataclass
class Output:
    """Where a followed run goes, and what to do when the person stops listening."""

    display: Display
    notify: Callable[[str], None]
    record: Path | None = None
    cancel_on_exit: bool = False
    give_up_after_s: float = DEFAULT_GIVE_UP_S
    in_process: bool = False  # the service lives in this process: its runs end with it
    review: ReviewInput | None = None  # `ask --review`: where decisions on the plan come from


def parse_target(target: str, server: str, *, flag: str = "--server") -> tuple[str, str]:
    """`listen`'s argument as (service base URL, run id): a run id, an API URL or a panel link.

    UsageError when it is neither, or when the URL (or `server`, for a run id) is not one.
    """
    if is_run_id(target):
        return check_server(server, flag=flag), target
    if target.lower().startswith(("http://", "https://")):
        parts = split_url(target, what=repr(target), hint=RUN_URL_HINT)
        origin = f"{parts.scheme}://{parts.netloc}"
        shared = parse_qs(parts.query).get("run", [])
        if shared and is_run_id(shared[0]):
            return origin + parts.path.rsplit("/", 1)[0], shared[0]  # the panel's /?run=ID link
        match = _RUN_PATH.match(parts.path)
        if match:
            return origin + match["prefix"], match["id"]
    raise UsageError(
        f"{target!r} is neither a run id (16 hex characters) nor a run's URL, such as "
        "http://127.0.0.1:8080/v1/runs/ID/events or a panel link http://127.0.0.1:8080/?run=ID"
    )


async def ask(api: ServiceClient, question: str, options: dict[str, Any], out: Output) -> int:
    """Start a run of `question` and follow it; the exit code says how it ended."""
    recorder = Recorder(out.record) if out.record is not None else None
    try:
        run = await api.create(question, options)
    except BaseException:
        if recorder is not None:
            recorder.discard()
        raise
    return await follow(api, run, out, recorder=recorder)


async def listen(api: ServiceClient, run_id: str, out: Output) -> int:
    """Follow an existing run from its first event; the exit code says how it ended."""
    recorder = Recorder(out.record) if out.record is not None else None
    try:
        run = await api.snapshot(run_id)
    except BaseException:
        if recorder is not None:
            recorder.discard()
        raise
    return await follow(api, run, out, recorder=recorder)


async def follow(
    api: ServiceClient, run: dict[str, Any], out: Output, *, recorder: Recorder | None = None
) -> int:
    """Show every event of `run` once, record it if asked, and handle Ctrl-C (cancellation)."""
    if recorder is not None:
        recorder.start(run)
    follower = Follower(
        api.session,
        api.url(run["events_url"]),
        notify=out.notify,
        api_key=api.api_key,
        give_up_after_s=out.give_up_after_s,
    )
    status: str | None = None
    reviewer = (
        Reviewer(
            api=api, run_id=run["id"], review=out.review, display=out.display, notify=out.notify
        )
        if out.review is not None
        else None
    )
    out.display.start(run_id=run["id"], question=run["question"])
    try:
        async with contextlib.aclosing(follower.events()) as events:
            async for event in events:
                if recorder is not None:
                    recorder.event(event)
                out.display.event(event)
                if reviewer is not None:
                    reviewer.event(event)
                if event.is_final:
                    status = str(event.data.get("status"))
    except asyncio.CancelledError:
        if reviewer is not None:
            await reviewer.close()
        await _stop_listening(api, run["id"], out)
        raise
    finally:
        if reviewer is not None:
            await reviewer.close()
        out.display.finish()
        if recorder is not None:
            recorder.close()
            if not recorder.complete:
                out.notify(f"the recording {recorder.path} is incomplete (the run had not ended)")
    if status is None:
        # The stream ended (204) without a `done` shown: the last event we knew of was the
        # `done`, or had its seq (the run's end was stored after a crash lost later events).
        snapshot = await api.snapshot(run["id"])
        status = str(snapshot.get("status"))
        if status != "completed":
            out.notify(ended_unseen(snapshot))
    return EXIT_BY_STATUS.get(status, EXIT_FAILED)


def ended_unseen(snapshot: dict[str, Any]) -> str:
    """How a run whose `done` was not received ended, as its snapshot says."""
    said = f"run {snapshot.get('id')} ended {snapshot.get('status')} (said by its snapshot)"
    error = snapshot.get("error")
    if isinstance(error, dict):
        said += f": {error.get('code')}: {error.get('message')}"
    return said


async def _stop_listening(api: ServiceClient, run_id: str, out: Output) -> None:
    """Ctrl-C: cancel the run with --cancel-on-exit, else detach and say how to come back."""
    if out.cancel_on_exit:
        try:
            async with asyncio.timeout(CANCEL_TIMEOUT_S):
                await api.cancel(run_id)
        except (ClientError, TimeoutError) as exc:
            out.notify(f"interrupted; could not cancel run {run_id}: {exc}")
        else:
            out.notify(f"interrupted; run {run_id} is cancelled")
    elif out.in_process:
        out.notify(
            f"interrupted; run {run_id} ends with the in-process service (start runs on a "
            "`research-service serve` with --server to leave them running)"
        )
    else:
        out.notify(
            f"detached; run {run_id} goes on. Follow it again with: research-service listen "
            f"{run_id} --server {api.shown_url}"
        )
