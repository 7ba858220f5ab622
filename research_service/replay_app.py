"""Serve recorded runs through the usual API: each recording's events appended on its own clock."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler

from research_service.errors import ConfigError, RequestError
from research_service.events import Event
from research_service.recording import Recording, load_recording
from research_service.recordings.stand_ins import NoModel, NoSearch
from research_service.runs.log import EventLog
from research_service.runs.memory_log import MemoryEventLog
from research_service.settings import Settings
from research_service.web import handlers
from research_service.web.keys import EVENT_LOG
from research_service.web.stream import requested_position

log = logging.getLogger(__name__)

#: The recorded pace.
DEFAULT_SPEED: Final = 1.0
#: A speed at which every event is in the log before the server takes its first request.
INSTANT: Final = math.inf


class RecordingsLog(MemoryEventLog):
    """The replay server's runs: its recordings, served for as long as it runs.

    Retention deletes none of them, however old the recordings or many the files.
    """

    async def prune(self, *, max_age_s: float | None, max_runs: int | None) -> int:
        """Delete nothing: every recording handed to the server stays served."""
        return 0


class ReplayOnly(RequestError):
    """A request that would start or stop a run, sent to a server that only replays."""

    status = 409
    slug = "replay-only"
    title = "Replay server"


def load_recordings(paths: Sequence[Path]) -> list[Recording]:
    """Read every recording; RecordingError names the bad file and line, ConfigError a clash."""
    recordings: list[Recording] = []
    seen: dict[str, Path] = {}
    for path in paths:
        recording = load_recording(path)
        first = seen.setdefault(recording.run_id, path)
        if first is not path:
            raise ConfigError(
                f"run {recording.run_id} is recorded in both {first} and {path}; "
                "replay each run once"
            )
        recordings.append(recording)
    return recordings


class ReplayPlayer:
    """Appends recordings to an event log at their recorded pace times `speed`.

    Listeners need nothing special: the stream handler follows a run that is not executing
    here by waiting on the log, so a replayed event reaches them the moment it is appended.
    """

    def __init__(self, recordings: Sequence[Recording], *, speed: float = DEFAULT_SPEED) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.recordings = list(recordings)
        self.speed = speed
        self._played: dict[str, int] = {}  # events appended so far, per run
        self._hurry = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, store: EventLog) -> None:
        """Create every recorded run, then play them: at once if instant, else in the background."""
        for recording in self.recordings:
            await store.create_run(recording.record())
            self._played[recording.run_id] = 0
        if math.isinf(self.speed):
            for recording in self.recordings:
                await self._append_until(store, recording, len(recording.events))
            return
        start = asyncio.get_running_loop().time()
        self._tasks = [
            asyncio.create_task(
                self._play(store, recording, start=start), name=f"replay-{recording.run_id}"
            )
            for recording in self.recordings
        ]

    async def finish(self) -> None:
        """Append what is left of every recording now, so each stream ends with its `done`."""
        self._hurry.set()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def stop(self) -> None:
        """Cancel playing (after `finish`, nothing is left to cancel)."""
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _play(self, store: EventLog, recording: Recording, *, start: float) -> None:
        loop = asyncio.get_running_loop()
        events = recording.events
        # Each event is due at the run's start plus its scaled t_ms, so delays never add up.
        due = [start + event.t_ms / 1000 / self.speed for event in events]
        played = 0
        while played < len(events):
            delay = due[played] - loop.time()
            if delay > 0 and not self._hurry.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._hurry.wait()
            if self._hurry.is_set():
                played = len(events)
            else:
                # Everything due by now goes in one wake-up: a burst of tokens costs one sleep.
                now = loop.time()
                while played < len(events) and due[played] <= now:
                    played += 1
            await self._append_until(store, recording, played)
        log.debug("replayed run %s to its done", recording.run_id)

    async def _append_until(self, store: EventLog, recording: Recording, end: int) -> None:
        run_id = recording.run_id
        for recorded in recording.events[self._played[run_id] : end]:
            event = Event.create(
                run_id, recorded.seq, recorded.event, recorded.data, t_ms=recorded.t_ms
            )
            await store.append(event)
            self._played[run_id] = recorded.seq


@web.middleware
async def refuse_new_runs(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer 409 to whatever would start or cancel a run: the recordings are all there is."""
    route = request.match_info.handler
    creates = route is handlers.create_run or (
        route is handlers.research and requested_position(request) is None
    )
    if creates or route in (handlers.cancel_run, handlers.decide_plan):
        verb = "start" if creates else "cancel" if route is handlers.cancel_run else "steer"
        raise ReplayOnly(
            f"this is a replay server: it only serves the recordings it was started with and "
            f"cannot {verb} runs; list them with GET /v1/runs, or use `research-service serve` "
            "to research new questions"
        )
    return await handler(request)


def replay_app(
    settings: Settings, recordings: Sequence[Recording], *, speed: float = DEFAULT_SPEED
) -> web.Application:
    """The service's app, serving `recordings` under their own run ids and nothing else.

    The recordings start playing when the app starts; `speed` scales their recorded pace
    (INSTANT: every event is there from the first request). Stopping the app plays what is
    left at once, so listeners still get each run's `done`.
    """
    from research_service.app import create_app  # noqa: PLC0415 - `listen` need not load it

    player = ReplayPlayer(recordings, speed=speed)
    # No provider is opened: no model, no search engine, no page reader (search "local").
    # No keys either: recordings are files handed out already; Host and origin checks stay.
    app = create_app(
        settings.with_changes(store="memory", search="local", auth="off"),
        llm=NoModel(),
        search=NoSearch(),
        event_log=RecordingsLog(),
    )
    app.middlewares.append(refuse_new_runs)

    async def play(app: web.Application) -> AsyncIterator[None]:
        store = app[EVENT_LOG]
        await player.start(store)
        log.info("replaying %d recording(s) at speed %g", len(player.recordings), speed)
        yield
        await player.stop()
        await store.close()

    async def finish(app: web.Application) -> None:
        await player.finish()

    app.cleanup_ctx.append(play)
    app.on_shutdown.append(finish)
    return app
