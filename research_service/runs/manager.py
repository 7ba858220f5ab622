"""Run lifecycle: create runs, execute their pipelines as tasks, cancel, list and snapshot."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Final, Literal, TypeAlias

from research_service import loop_turns
from research_service.defaults import DEFAULT_REVIEW_TIMEOUT_S, START_AFTER_CREATIONS_S
from research_service.errors import PipelineError, ProviderError, StoreUnavailable, unknown_run
from research_service.events import FinalStatus, done_payload
from research_service.logs import run_task
from research_service.pipeline.context import RunContext
from research_service.pipeline.orchestrator import Pipeline
from research_service.pipeline.review import NOT_WAITING, Decision, ReviewGate, ReviewRefused
from research_service.runs.coordinator import Coordinator
from research_service.runs.creations import AfterCreate, Creations
from research_service.runs.hub import Hub
from research_service.runs.limits import OwnerSlots, check_room, run_within_deadline, token_budget
from research_service.runs.listening import Listening
from research_service.runs.live_run import LiveRun, uncancelled
from research_service.runs.log import EventLog
from research_service.runs.models import RunOptions, RunRecord, RunTail, new_run_id
from research_service.runs.state import RunState
from research_service.runs.summary import summary, tail_of_state
from research_service.stats import Stats

log = logging.getLogger(__name__)

STATE_CACHE_SIZE: Final = 512
#: How a run ends (in the log only) when the store could not record its end.
UNRECORDED: Final = "unrecorded"
#: How a run of this process ends: a final status, or unrecorded.
Ending: TypeAlias = FinalStatus | Literal["unrecorded"]


class RunManager:
    """Owns the runs of this process; a run's events go to the event log, nothing else."""

    def __init__(
        self,
        *,
        log: EventLog,
        pipeline: Pipeline,
        max_active_runs: int,
        abandon_after_s: float,
        max_active_runs_per_owner: int | None = None,
        max_tokens_per_run: int | None = None,
        run_deadline_s: float | None = None,
        coordinator: Coordinator | None = None,
        review_timeout_s: float = DEFAULT_REVIEW_TIMEOUT_S,
        stats: Stats | None = None,
    ) -> None:
        self.log = log
        #: The cluster this process is part of; None: every run lives in this process.
        self.coordinator = coordinator
        self.pipeline = pipeline
        self.max_active_runs = max_active_runs
        self.owner_slots = OwnerSlots(max_active_runs_per_owner)
        self.max_tokens_per_run = max_tokens_per_run
        self.run_deadline_s = run_deadline_s
        self.review_timeout_s = review_timeout_s
        self.stats = Stats() if stats is None else stats  # what GET /metrics reports
        self._live: dict[str, LiveRun] = {}
        #: Each live run's listeners; a run nobody follows for abandon_after_s is abandoned.
        self.listening = Listening(
            self._live, abandon_after_s=abandon_after_s, coordinator=coordinator
        )
        # Runs being stored, counted against the limit before the first await (a burst).
        self._starting = 0
        self._creations = Creations()
        self._finished_states: OrderedDict[str, RunState] = OrderedDict()
        #: Runs not finished and not live here (playing on a replay server, executing on
        #: another node): the state so far, brought up to date by their later events only.
        self._partial_states: OrderedDict[str, RunState] = OrderedDict()
        #: Set when this process stops serving streams (clients resume on another node).
        self.streams_closed = False

    @property
    def active_runs(self) -> int:
        """How many runs are executing now, or being created."""
        return len(self._live) + self._starting

    async def create(
        self,
        question: str,
        options: RunOptions,
        *,
        owner: str | None = None,
        then: AfterCreate | None = None,
    ) -> RunRecord:
        """Store a new run of `owner` and start its pipeline in the background.

        In a cluster it is stored and queued for an executor. Once begun, this goes on if the
        caller is cancelled: a stored run starts, and `then(record)` (its webhooks) is done.
        """
        record = RunRecord(new_run_id(), question, options, owner=owner)
        if self.coordinator is None:
            # Checked and taken with no await in between; _store gives them back.
            check_room(self.active_runs, self.max_active_runs)
            self.owner_slots.take(record)
            self._starting += 1
        return await self._creations.finish(self._store(record, then))

    async def _store(self, record: RunRecord, then: AfterCreate | None) -> RunRecord:
        """Store the run and start it here, or submit it to the cluster (the slot is taken)."""
        if self.coordinator is not None:
            await self.coordinator.submit(
                record, limit=self.max_active_runs, owner_limit=self.owner_slots.limit
            )
        else:
            try:
                await self.log.create_run(record)
                self.start(record)
            finally:
                self._starting -= 1
                if record.id not in self._live:  # not stored: its owner's slot is free again
                    self.owner_slots.release(record)
        self.stats.runs_created += 1
        if then is not None:
            await then(record)
        return record

    def start(self, record: RunRecord) -> None:
        """Execute a stored run (its log empty) in this process, in the background."""
        run = LiveRun(record)
        self._live[record.id] = run
        run.task = run_task(self._execute(run), record.id)
        self.listening.arm(run)
        if self.coordinator is not None:
            self.coordinator.run_started(record)

    async def get(self, run_id: str) -> RunRecord:
        """The run's record; NotFound when there is none."""
        record = await self.log.get_run(run_id)
        if record is None:
            raise unknown_run(run_id)
        return record

    async def state(self, run_id: str) -> RunState:
        """The run's current state (live, cached, or folded from its log)."""
        live = self._live.get(run_id)
        if live is not None:
            return live.state
        cached = self._finished_states.get(run_id)
        if cached is not None:
            self._finished_states.move_to_end(run_id)
            return cached
        # Taken out while it is brought up to date: a caller at the same time folds its own.
        state = self._partial_states.pop(run_id, None)
        if state is None:
            state = RunState.fold(await self.log.read(run_id, after=0))
        else:
            for event in await self.log.read(run_id, after=state.event_count):
                state.apply(event)
        if state.finished:
            self._remember(run_id, state)
        else:
            # A snapshot of a long run asked again and again once folded all of it each time
            # (300,000 events: 1.2 s of the loop a snapshot).
            self._partial_states[run_id] = state
            while len(self._partial_states) > STATE_CACHE_SIZE:
                self._partial_states.popitem(last=False)
        return state

    async def snapshot(self, record: RunRecord) -> dict[str, Any]:
        """The JSON snapshot of a run."""
        live = self._live.get(record.id)
        state = await self.state(record.id)
        if live is None or live.context is None:
            return state.snapshot(record)
        snapshot = state.snapshot(record, now_ms=live.context.elapsed_ms())
        # Progress events carry no snippets; the live run's sources do, as a finished run's.
        snapshot["sources"] = [source.full() for source in live.context.sources]
        snapshot["usage"] = live.context.tokens.summary()
        snapshot["truncated"] = live.context.truncated
        return snapshot

    async def summaries(self, records: Sequence[RunRecord]) -> list[dict[str, Any]]:
        """The listing entries of `records`: from live state where there is one, else the log."""
        known: dict[str, RunState] = {}
        for record in records:
            live = self._live.get(record.id)
            state = live.state if live is not None else self._finished_states.get(record.id)
            if state is not None:
                known[record.id] = state
        tails = await self.log.tails([r.id for r in records if r.id not in known])
        entries = []
        for record in records:
            state = known.get(record.id)
            if state is not None:
                entry = summary(record, tail_of_state(state), sources_so_far=len(state.sources))
            else:
                entry = summary(record, tails.get(record.id, RunTail(0)))
            entries.append(entry)
        return entries

    async def cancel(self, run_id: str, *, code: str = "cancelled", message: str = "") -> bool:
        """Stop a run promptly; False when it had already finished."""
        await self.get(run_id)
        run = self._live.get(run_id)
        if run is not None:
            return run.cancel(code=code, message=message)
        if self.coordinator is None:
            return False
        message = message or "the run was cancelled on request"
        return await self.coordinator.cancel(run_id, code=code, message=message)

    async def decide_plan(
        self, run_id: str, decision: Decision, *, round_number: int | None = None
    ) -> int:
        """Hand a plan review's decision to the run, wherever it executes; the round decided.

        ReviewRefused when the run waits for no such decision (the first decision wins), or
        when `round_number` is given and is not the round open.
        """
        if self.coordinator is not None:  # the cluster decides who was first
            return await self.coordinator.decide_plan(run_id, decision, round_number=round_number)
        gate = self.review_gate(run_id)
        if gate is None:
            raise ReviewRefused(NOT_WAITING)
        return gate.decide(decision, round_number=round_number)

    def review_gate(self, run_id: str) -> ReviewGate | None:
        """Where the decision on the plan of a run executing here is handed over."""
        run = self._live.get(run_id)
        return None if run is None or run.context is None else run.context.review

    def executes_elsewhere(self, run_id: str) -> bool:
        """Whether the run, if it is going on, executes in another process (a cluster's)."""
        return self.coordinator is not None and run_id not in self._live

    def hub(self, run_id: str) -> Hub | None:
        """The live fan-out of a run executing in this process (or followed here), or None."""
        run = self._live.get(run_id)
        if run is not None:
            return run.hub
        return None if self.coordinator is None else self.coordinator.hub(run_id)

    def close_streams(self) -> None:
        """End every stream this process serves (their clients resume on another node)."""
        self.streams_closed = True
        for run in self._live.values():
            run.hub.close()

    async def drain(self, timeout: float) -> None:
        """Let the live runs finish for up to `timeout` s; then cancel the rest (`shutdown`)."""
        tasks = [run.task for run in self._live.values() if run.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        await self.shutdown()

    async def shutdown(self) -> None:
        """Cancel every live run (one being stored, once it starts); wait for each `done`."""
        creating = True
        while creating:
            creating = bool(self._creations.pending)
            tasks = [run.task for run in self._live.values() if run.task is not None]
            for run in list(self._live.values()):
                run.cancel(code="shutdown", message="the service shut down during the run")
            await asyncio.gather(*tasks, *self._creations.pending, return_exceptions=True)

    def _remember(self, run_id: str, state: RunState) -> None:
        self._finished_states[run_id] = state
        while len(self._finished_states) > STATE_CACHE_SIZE:
            self._finished_states.popitem(last=False)

    async def _execute(self, run: LiveRun) -> None:
        record = run.record

        async def emit(name: str, data: dict[str, Any]) -> None:
            event, data = run.next_event(name, data, t_ms=ctx.elapsed_ms())
            if name == "done":
                # Durable once stored: only then is the run over for snapshots and listeners.
                await self.log.append(event)
                run.state.apply(event, data)
            else:
                # State first: a snapshot taken right after append must include the event.
                run.state.apply(event, data)
                await self.log.append(event)
                if name == "phase" and data["status"] == "completed":
                    started = run.state.started_ms.get(data["phase"], event.t_ms)
                    self.stats.phase_done(data["phase"], (event.t_ms - started) / 1000)
            self.stats.events_appended += 1
            run.hub.publish(event)

        ctx = RunContext(
            question=record.question,
            options=record.options,
            emit=emit,
            budget=token_budget(record.options.max_tokens, self.max_tokens_per_run),
            review_timeout_s=self.review_timeout_s,
            review_url=f"/v1/runs/{record.id}/plan",
        )
        run.context = ctx
        status: Ending = "completed"
        error: dict[str, Any] | None = None
        answer: str | None = None
        try:
            # Runs start once the runs being created with them are stored (their POSTs are
            # answered first), then a few per loop turn: the creations' end wakes them all at
            # once. One cancelled meanwhile ends as any cancelled run does.
            await self._creations.settled(START_AFTER_CREATIONS_S)
            await loop_turns.SHARED.turn()
            answer = await run_within_deadline(self.pipeline, ctx, self.run_deadline_s)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            code, message = run.cancel_reason or ("cancelled", "the run was cancelled")
            status, error = "cancelled", {"code": code, "message": message}
        except StoreUnavailable as exc:
            # The store takes no more events (it closed): nothing more of the run is recorded,
            # and the next start ends it as interrupted.
            log.warning("run %s: its events could not be stored: %s", record.id, exc)
            status = UNRECORDED
        except (PipelineError, ProviderError) as exc:
            phase = exc.phase if isinstance(exc, PipelineError) else ctx.phase
            status, error = "failed", {"code": exc.code, "message": str(exc)}
            await emit("error", {**error, "phase": phase})
        except Exception as exc:
            log.exception("run %s failed unexpectedly", record.id)
            status = "failed"
            error = {"code": "internal", "message": f"unexpected error: {exc!r}"}
            await emit("error", {**error, "phase": ctx.phase})
        finally:
            await self._finish(run, ctx, status=status, error=error, answer=answer)

    async def _finish(
        self,
        run: LiveRun,
        ctx: RunContext,
        *,
        status: Ending,
        error: dict[str, Any] | None,
        answer: str | None,
    ) -> None:
        run.ending = True
        self.listening.disarm(run)
        streamed = run.state.answer
        if answer is not None and answer != streamed:
            log.error("run %s: answer differs from its tokens; sending the tokens", run.record.id)
        now = ctx.elapsed_ms()
        timings = run.state.timings(now_ms=now)
        try:
            if status == UNRECORDED:
                return
            # With a durable store this returns once the done is on disk (listeners get it then).
            done = done_payload(
                status=status,
                answer=streamed,
                sources=[source.full() for source in ctx.sources],
                timings_ms=timings,
                error=error,
                usage=ctx.tokens.summary(),
                truncated=ctx.truncated,
            )
            await uncancelled(ctx.emit("done", done), unless=lambda: run.stopping)
        except StoreUnavailable as exc:
            # Listeners never see this done, and a restart ends the run as interrupted.
            log.warning("run %s: its done could not be stored: %s", run.record.id, exc)
            status = UNRECORDED
        finally:
            self._live.pop(run.record.id, None)
            self.owner_slots.release(run.record)
            self._remember(run.record.id, run.state)
            self.stats.runs_finished[(status, (error or {}).get("code") or "")] += 1
            if self.coordinator is not None:
                self.coordinator.run_ended(run.record.id)
            log.info("run %s %s in %d ms", run.record.id, status, now)
