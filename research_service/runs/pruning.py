"""Retention in the durable stores: which runs go, found through the creation-order index.

The runs past the retention limits are an oldest prefix of the runs in (created_at, id) order:
those created before the cutoff, and those past the newest `max_runs`. So a prune reads that
prefix a batch at a time along the `runs_by_created` index, keeps the runs that have not
ended, and deletes the rest batch by batch: no statement looks at every run, and no statement
holds the store for long, whatever the store's size (a store of 200,000 runs deleted 150,000
in one statement that held SQLite's one connection for two minutes, and PostgreSQL's filter
`id NOT IN (the newest max_runs)` went past its command timeout, so it never pruned again).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from research_service.runs.run_memory import RunMemory

#: Runs looked at, and at most deleted, per statement.
PRUNE_BATCH: Final = 200
#: Before any run: where a prune's first batch starts.
START: Final = (float("-inf"), "")


@dataclass(frozen=True, slots=True)
class Prefix:
    """The oldest runs up to `bound` in (created_at, id) order, `bound` itself if inclusive."""

    bound: tuple[float, str]
    inclusive: bool

    @property
    def operator(self) -> str:
        """The SQL comparison of a run's (created_at, id) with `bound`."""
        return "<=" if self.inclusive else "<"


def past_limits(cutoff: float | None, newest_surplus: tuple[float, str] | None) -> Prefix | None:
    """The runs past either limit; None when no run is past either.

    Past the age limit: created before `cutoff`. Past the count limit: not newer than
    `newest_surplus`, the newest run beyond the newest `max_runs`.
    """
    found = []
    if cutoff is not None:
        found.append(Prefix((cutoff, ""), inclusive=False))
    if newest_surplus is not None:
        found.append(Prefix(newest_surplus, inclusive=True))
    return max(found, key=lambda prefix: (prefix.bound, prefix.inclusive), default=None)


#: A store's statements: the newest run past the newest `n` (None: `n` or fewer runs); the
#: next batch of the prefix after a run, rows of (id, created_at, whether it has ended);
#: deleting runs (and their events).
NewestPast = Callable[[int], Awaitable[tuple[float, str] | None]]
ReadBatch = Callable[[Prefix, tuple[float, str]], Awaitable[Sequence[Any]]]
DeleteRuns = Callable[[list[str]], Awaitable[None]]


async def prune_past_limits(
    *,
    max_age_s: float | None,
    max_runs: int | None,
    now: float,
    newest_past: NewestPast,
    read_batch: ReadBatch,
    delete: DeleteRuns,
    memory: RunMemory,
) -> int:
    """Delete the finished runs past the limits, PRUNE_BATCH at a time; how many went.

    Runs not ended (live in `memory`, or left open by a stopped process) are kept; the
    cursor moves past them, so none is read twice. Each deleted run is forgotten by `memory`.
    """
    cutoff = now - max_age_s if max_age_s is not None else None
    surplus = await newest_past(max_runs) if max_runs is not None else None
    prefix = past_limits(cutoff, surplus)
    if prefix is None:
        return 0
    removed, after = 0, START
    while rows := await read_batch(prefix, after):
        after = (float(rows[-1][1]), str(rows[-1][0]))
        doomed = [str(r[0]) for r in rows if r[2] and r[0] not in memory.live]
        if doomed:
            await delete(doomed)
            for run_id in doomed:
                memory.forget(run_id)
            removed += len(doomed)
    return removed
