"""A cluster node's side of the run manager: admit, queue, cancel and count across nodes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Final, Literal

import redis.asyncio as aioredis

from research_service.cluster.cluster_log import ClusterLog
from research_service.cluster.executions import Executions
from research_service.cluster.presence import Presence
from research_service.cluster.redis_link import ERRORS, Keys, unavailable
from research_service.cluster.slots import (
    ADMIT,
    CLUSTER_FULL,
    OWNER_FULL,
    QUEUE,
    QUEUED_SLOT_S,
    REFRESH,
    SLOT_LEASES,
)
from research_service.cluster.tasks import stop
from research_service.errors import StoreUnavailable, TooManyRuns
from research_service.outage import Outage
from research_service.pipeline.review import (
    NO_MORE_REPLANS,
    NOT_WAITING,
    Decision,
    ReviewRefused,
    decision_from_json,
    decision_json,
    wrong_round,
)
from research_service.runs.coordinator import Followers
from research_service.runs.hub import Hub
from research_service.runs.limits import are_active, owner_full
from research_service.runs.models import RunRecord
from research_service.runs.state import RunState

log = logging.getLogger(__name__)

RETRY_AFTER_S: Final = 5
#: How long a cancel request waits in Redis for the run's executor to see it.
CANCEL_KEPT_S: Final = 3600
#: Why a run whose creation was answered 503 is ended if it was stored after all.
NOT_MADE: Final = (
    "its creation was answered 503 (the database did not confirm it), so it was never run; "
    "its client may have asked again"
)


class ClusterCoordinator:
    """What one node does for the runs of the whole cluster (the manager's Coordinator).

    Every node keeps a heartbeat in Redis while it lives; a node that executes runs keeps
    their slots in the cluster's active set fresh and records their end in PostgreSQL.
    """

    def __init__(
        self,
        *,
        redis: aioredis.Redis,
        keys: Keys,
        log: ClusterLog,
        node_id: str,
        lease_s: float,
        counts_owners: bool = False,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.log = log
        self.node_id = node_id
        self.lease_s = lease_s
        #: --max-active-runs-per-owner is set: the runs executed here keep their owners' slots.
        self.counts_owners = counts_owners
        self.executions = Executions(log.store.pool)
        self.presence = Presence(redis, keys, node_id)
        #: Runs executing in this process.
        self.local: set[str] = set()
        #: Runs this process's executor is claiming (the database's answer not yet in).
        self.claiming: set[str] = set()
        #: Runs this process has taken a slot for and is storing (not yet queued).
        self.admitting: set[str] = set()
        #: The owner of each run here whose slot its owner's set holds (or may hold).
        self._owners: dict[str, str] = {}
        #: Runs that ended here whose end is not yet recorded (the database was down).
        self._unrecorded: set[str] = set()
        #: Runs that ended here whose end is being recorded now.
        self._recording: set[str] = set()
        #: Called when a run executing here ends (an executor takes another).
        self.on_run_ended: Callable[[], None] | None = None
        self._admit = redis.register_script(ADMIT)
        self._refresh = redis.register_script(REFRESH)
        self._queue = redis.register_script(QUEUE)
        self._tasks: list[asyncio.Task[None]] = []
        log.ending = self.ending

    @property
    def beat_s(self) -> float:
        """How often the heartbeat is written: three times per lease."""
        return self.lease_s / 3

    @property
    def held_slot_ms(self) -> int:
        """How long a slot held by a node lasts after its last heartbeat, in ms."""
        return int(self.lease_s * SLOT_LEASES * 1000)

    def start(self) -> None:
        """Start the heartbeat and the listener counts."""
        self.log.start()
        self.presence.start()
        self._tasks.append(asyncio.create_task(self._beat_forever(), name="heartbeat"))

    async def close(self) -> None:
        """Stop the background work; the heartbeat goes, so others see this node gone."""
        await stop(*self._tasks)
        await self.presence.close()
        await self._record_ends()
        with contextlib.suppress(*ERRORS):
            await self.redis.delete(self.keys.node(self.node_id))

    # --- Coordinator ------------------------------------------------------------------------

    async def submit(self, record: RunRecord, *, limit: int, owner_limit: int | None) -> None:
        """Take a slot, store the run, queue it; TooManyRuns when the cluster is full.

        With `owner_limit`, the run's owner (its API key's name) also takes one of its own
        slots, in the same script: TooManyRuns when it has `owner_limit` active already.
        """
        owner = record.owner if owner_limit is not None else None
        keys = [self.keys.active]
        if owner is not None:
            keys.append(self.keys.owner_active(owner))
        # Held by this node's heartbeat while it stores the run: if it dies meanwhile, the
        # slot lapses SLOT_LEASES leases later (cluster/slots.py).
        args: list[str | int] = [limit, self.held_slot_ms, record.id, owner_limit or 0]
        try:
            taken, count = await self._admit(keys=keys, args=args)
        except ERRORS as exc:
            raise unavailable(exc) from None
        if owner is not None and taken == OWNER_FULL:
            raise owner_full(owner, int(count), where=" in the cluster")
        if taken == CLUSTER_FULL:
            raise TooManyRuns(
                f"{are_active(count)} in the cluster, the limit is {limit}; "
                f"retry in {RETRY_AFTER_S} s",
                retry_after=RETRY_AFTER_S,
            )
        if owner is not None:
            self._owners[record.id] = owner
        self.admitting.add(record.id)
        try:
            await self.log.create_run(record)
            await self.queue(record.id, owner)
        except ERRORS as exc:
            # Stored but not queued: the executors' sweep queues it again (see Executor).
            log.warning("run %s is stored but could not be queued (%s)", record.id, exc)
        except StoreUnavailable:
            # The run may be stored all the same, only the database's answer lost: then the
            # sweep would queue it and it would run, although its client was told `503` and
            # may ask again. A run its client was told was not made must never run: if it is
            # ever claimed, this request ends it at once (Executor._take).
            with contextlib.suppress(*ERRORS):
                await self.redis.set(
                    self.keys.cancel(record.id), f"abandoned\0{NOT_MADE}", ex=CANCEL_KEPT_S
                )
            await self._release(record.id)
            raise
        finally:
            self.admitting.discard(record.id)
            if record.id not in self.local:  # its executor, here or elsewhere, refreshes it
                self._owners.pop(record.id, None)

    async def queue(self, run_id: str, owner: str | None) -> None:
        """Add the run to the queue, its slot (and `owner`'s) held QUEUED_SLOT_S from now.

        Raises Redis's errors.
        """
        keys = [self.keys.active, self.keys.queue]
        if owner is not None:
            keys.append(self.keys.owner_active(owner))
        await self._queue(keys=keys, args=[run_id, int(QUEUED_SLOT_S * 1000)])

    async def cancel(self, run_id: str, *, code: str, message: str) -> bool:
        """Ask the run's executor, wherever it is, to stop it; False if it had finished."""
        tails = await self.log.tails([run_id])
        tail = tails.get(run_id)
        if tail is not None and tail.end is not None:
            return False
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.set(self.keys.cancel(run_id), f"{code}\0{message}", ex=CANCEL_KEPT_S)
            pipe.publish(self.keys.cancels, run_id)
            await pipe.execute()
        except ERRORS as exc:
            raise unavailable(exc) from None
        return True

    async def decide_plan(
        self, run_id: str, decision: Decision, *, round_number: int | None = None
    ) -> int:
        """Take the decision for the run's current review round if it is the first one.

        The first to set the round's key wins, on whichever node; the executor reads the key
        when it hears the run's id on the reviews channel. With `round_number`, only if that
        round is the one open.
        """
        state = RunState.fold(await self.log.read(run_id, after=0))
        review = state.review
        if state.awaiting is None or review is None:
            raise ReviewRefused(NOT_WAITING)
        open_round = int(review["round"])
        if round_number is not None and round_number != open_round:
            raise ReviewRefused(wrong_round(round_number, open_round))
        if decision.feedback is not None and not review.get("feedback_allowed", True):
            raise ReviewRefused(NO_MORE_REPLANS)
        try:
            taken = await self.redis.set(
                self.keys.review(run_id, open_round), decision_json(decision), nx=True, ex=3600
            )
            if not taken:
                raise ReviewRefused(NOT_WAITING)
            await self.redis.publish(self.keys.reviews, run_id)
        except ERRORS as exc:
            raise unavailable(exc) from None
        return open_round

    async def review_decision(self, run_id: str, round_number: int) -> Decision | None:
        """The decision taken on a run's plan in a round, if any."""
        raw = await self.redis.get(self.keys.review(run_id, round_number))
        return None if raw is None else decision_from_json(raw)

    def hub(self, run_id: str) -> Hub | None:
        """The run's hub in this process, while a follower keeps it up to date."""
        follower = self.log.followers.get(run_id)
        return None if follower is None or follower.finished else follower.hub

    def listener_joined(self, run_id: str) -> None:
        """Count a listener of a run executing elsewhere."""
        self.presence.joined(run_id)

    def listener_left(self, run_id: str) -> None:
        """Uncount a listener of a run executing elsewhere."""
        self.presence.left(run_id)

    async def listeners_elsewhere(self, run_id: str) -> Followers:
        """Listeners of the run on the other nodes, and when the last of them left."""
        return await self.presence.elsewhere(run_id)

    def run_started(self, record: RunRecord) -> None:
        """A run began executing here."""
        self.local.add(record.id)
        if self.counts_owners and record.owner is not None:
            self._owners[record.id] = record.owner

    def run_ended(self, run_id: str) -> None:
        """A run executing here ended (its end is recorded with its done, or by a sweep)."""
        self.local.discard(run_id)
        self._owners.pop(run_id, None)  # its done unstored: its slots lapse
        if self.on_run_ended is not None:
            self.on_run_ended()

    def executes(self, run_id: str) -> bool:
        """Whether the run is this process's: executing, being claimed, or ending here."""
        return (
            run_id in self.local
            or run_id in self.claiming
            or run_id in self._recording
            or run_id in self._unrecorded
        )

    def adopt(self, record: RunRecord) -> None:
        """A lost executor's run, ended here: its owner's slot is given back with it."""
        if self.counts_owners and record.owner is not None:
            self._owners[record.id] = record.owner

    @contextlib.asynccontextmanager
    async def ending(self, run_id: str) -> AsyncIterator[None]:
        """While a run's done is being stored: its slots are given back first.

        Whoever reads the done then finds them free; the store commits the done with the
        execution's end (`executions.ended_at`), in one transaction.
        """
        with self._recording_end(run_id):
            await self._release(run_id)
            yield

    async def record_end(self, run_id: str) -> None:
        """A run's done is stored (a sweep ended it): record its end, free its slots.

        Retried at the next heartbeats if the store fails.
        """
        with self._recording_end(run_id):
            try:
                await self.executions.end(run_id)
            except StoreUnavailable:
                self._unrecorded.add(run_id)  # the next heartbeat tries again
        await self._release(run_id)

    @contextlib.contextmanager
    def _recording_end(self, run_id: str) -> Iterator[None]:
        """The run has ended here: no heartbeat refreshes its slots from now on.

        It stays this process's (`_recording`) until its end is recorded.
        """
        self.local.discard(run_id)
        self._recording.add(run_id)
        try:
            yield
        finally:
            self._recording.discard(run_id)

    # --- helpers ----------------------------------------------------------------------------

    async def cancel_request(self, run_id: str) -> tuple[str, str] | None:
        """The run's pending cancel request (code, message), if there is one."""
        raw = await self.redis.get(self.keys.cancel(run_id))
        if raw is None:
            return None
        text = raw.decode() if isinstance(raw, bytes) else raw
        code, _, message = text.partition("\0")
        return code, message

    async def _release(self, run_id: str) -> None:
        owner = self._owners.pop(run_id, None)
        with contextlib.suppress(*ERRORS):
            pipe = self.redis.pipeline(transaction=False)
            pipe.zrem(self.keys.active, run_id)
            if owner is not None:
                pipe.zrem(self.keys.owner_active(owner), run_id)
            await pipe.execute()

    async def _record_ends(self) -> None:
        for run_id in list(self._unrecorded):
            try:
                await self.executions.end(run_id)
            except StoreUnavailable:
                continue  # the next heartbeat tries again
            self._unrecorded.discard(run_id)
            await self._release(run_id)

    async def _refresh_slots(self) -> None:
        """Keep the slots of the runs held here, and their owners', from lapsing."""
        if self.local:
            await self._refresh_of(self.local, "executing")
        if self.admitting:
            await self._refresh_of(self.admitting, "held")

    async def _refresh_of(self, runs: set[str], mode: Literal["executing", "held"]) -> None:
        owned = [run_id for run_id in runs if run_id in self._owners]
        ordered = owned + [run_id for run_id in runs if run_id not in self._owners]
        keys = [self.keys.active] + [self.keys.owner_active(self._owners[r]) for r in owned]
        await self._refresh(keys=keys, args=[self.held_slot_ms, mode, *ordered])

    async def _beat_forever(self) -> None:
        life: str | None = None
        outage = Outage("cannot write this node's heartbeat to Redis")
        while True:
            try:
                pipe = self.redis.pipeline(transaction=False)
                pipe.set(self.keys.node(self.node_id), "1", px=int(self.lease_s * 1000))
                pipe.info("server")
                _, info = await pipe.execute()
                await self._refresh_slots()
                if life is not None and info["run_id"] != life:
                    self.presence.rewrite_all()  # Redis restarted: it forgot our counts
                life = info["run_id"]
                outage.ok()
            except ERRORS as exc:
                outage.failed(exc)
            if self._unrecorded:
                await self._record_ends()
            await asyncio.sleep(self.beat_s)
