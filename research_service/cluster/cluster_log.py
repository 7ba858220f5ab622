"""The event log of a cluster node: PostgreSQL for the record, Redis for the live tail."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import redis.asyncio as aioredis

from research_service.cluster.follower import Followers
from research_service.cluster.publisher import LivePublisher
from research_service.cluster.redis_link import Keys
from research_service.errors import StoreUnavailable
from research_service.events import Event
from research_service.runs.models import RunRecord, RunTail, tail_of
from research_service.runs.postgres_db import ERRORS
from research_service.runs.postgres_log import RUN_COLUMNS, PostgresEventLog
from research_service.runs.run_memory import Row

__all__ = ["ClusterLog"]


class ClusterLog:
    """An EventLog over a shared PostgreSQL store, with every append published to Redis.

    The runs this process executes are read from memory, as with a single process; any
    other run is read back from PostgreSQL when it has finished, and followed (from
    PostgreSQL, then from its live window in Redis) while it runs.
    """

    def __init__(self, store: PostgresEventLog, redis: aioredis.Redis, keys: Keys) -> None:
        self.store = store
        #: Entered before a run's done is stored, left once it is (before it is published).
        self.ending: Callable[[str], AbstractAsyncContextManager[None]] | None = None
        self.publisher = LivePublisher(redis, keys)
        self.followers = Followers(redis, keys, self._stored, self._stored_tail)

    def start(self) -> None:
        """Start publishing."""
        self.publisher.start()

    # --- StoreMaintenance, from the store --------------------------------------------------

    @property
    def write_failure(self) -> StoreUnavailable | None:
        """Why the database takes no writes now, or None while it does."""
        return self.store.write_failure

    @property
    def keys_path(self) -> Path | None:
        """None: with --store postgres, API keys come from --api-keys-file only."""
        return None

    async def interrupted_runs(self) -> list[RunRecord]:
        """None: in a cluster, the executors' heartbeats tell which runs were lost."""
        return []

    async def prune(self, *, max_age_s: float | None, max_runs: int | None) -> int:
        """Delete finished runs past the retention limits (never a run still going)."""
        return await self.store.prune(max_age_s=max_age_s, max_runs=max_runs)

    async def check(self) -> None:
        """Raise StoreUnavailable unless the database answers and takes writes."""
        await self.store.check()

    # --- EventLog ---------------------------------------------------------------------------

    async def create_run(self, record: RunRecord) -> None:
        """Store a new run and its place in the queue, in one transaction."""
        options = record.options.to_dict()
        # One statement (atomic, one round trip): the run, then its queue entry.
        sql = (
            f"WITH run AS (INSERT INTO runs ({RUN_COLUMNS}) VALUES ($1, $2, $3, $4, $5) "
            "RETURNING id) INSERT INTO executions (run_id, queued_at) SELECT id, $6 FROM run"
        )
        try:
            await self.store.pool.execute(
                sql,
                record.id,
                record.question,
                json.dumps(options),
                record.created_at,
                record.owner,
                time.time(),
            )
        except ERRORS as exc:
            raise self.store.writer.failed(exc) from None

    async def get_run(self, run_id: str) -> RunRecord | None:
        """The run's record, or None when there is no such run.

        A run this process follows keeps its record: each listener that attaches asks for
        it, and one query per run is enough.
        """
        follower = self.followers.get(run_id)
        if follower is not None and follower.record is not None:
            return follower.record
        record = await self.store.get_run(run_id)
        if record is not None and (follower := self.followers.get(run_id)) is not None:
            follower.record = record
        return record

    async def list_runs(
        self,
        *,
        limit: int,
        before: tuple[float, str] | None = None,
        owner: str | None = None,
        unfinished: bool = False,
    ) -> list[RunRecord]:
        """Up to `limit` records, newest first, strictly older than `before`, of `owner`."""
        return await self.store.list_runs(
            limit=limit, before=before, owner=owner, unfinished=unfinished
        )

    async def tails(self, run_ids: Sequence[str]) -> dict[str, RunTail]:
        """Each known run's event count and ending (a followed run's as this node has it)."""
        followed = {run_id: self.followers.get(run_id) for run_id in run_ids}
        found = {
            run_id: tail_of(follower.events)
            for run_id, follower in followed.items()
            if follower is not None
        }
        rest = [run_id for run_id in run_ids if run_id not in found]
        return found | await self.store.tails(rest) if rest else found

    async def append(self, event: Event) -> None:
        """Append `event` to the store, then publish it to the run's live window."""
        if event.is_final and self.ending is not None:
            # The run's slots are given back before its done can be read, here, from Redis or
            # from PostgreSQL (the done is committed with its execution's end): a client that
            # got it may start another run at once, in the slot this one held.
            async with self.ending(event.run_id):
                await self.store.append(event)
        else:
            await self.store.append(event)
        self.publisher.publish(tuple.__new__(tuple, event))

    async def read(self, run_id: str, *, after: int, limit: int | None = None) -> list[Event]:
        """The run's events with seq > `after`, in order, at most `limit` of them."""
        if self.store.writing(run_id):
            return await self.store.read(run_id, after=after, limit=limit)
        follower = self.followers.get(run_id)
        if follower is None:
            found = await self.store.find(run_id)
            if found is None:
                raise KeyError(run_id)
            events, finished = found
            if finished or self.store.writing(run_id):
                return await self.store.read(run_id, after=after, limit=limit)
            follower = await self.followers.follow(run_id, events)
        return follower.read(after=after, limit=limit)

    async def wait(self, run_id: str, *, after: int, timeout: float) -> bool:
        """Wait until the run has an event with seq > `after`; False on timeout."""
        if self.store.writing(run_id):
            return await self.store.wait(run_id, after=after, timeout=timeout)
        follower = self.followers.get(run_id)
        if follower is None:
            if await self.read(run_id, after=after, limit=1):
                return True
            follower = self.followers.get(run_id)
            if follower is None:  # finished, with nothing after `after`
                return False
        return await self.followers.wait(follower, after=after, timeout=timeout)

    async def close(self) -> None:
        """Stop following, send what is unpublished, close the store."""
        await self.followers.close()
        with contextlib.suppress(StoreUnavailable):
            await self.store.flush()
        await self.publisher.close()
        await self.store.close()

    async def _stored(self, run_id: str, after: int) -> list[Row] | None:
        return await self.store.stored_events(run_id, after=after)

    async def _stored_tail(self, run_id: str) -> RunTail | None:
        return (await self.store.tails([run_id])).get(run_id)
