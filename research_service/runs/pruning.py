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

from dataclasses import dataclass
from typing import Final

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
