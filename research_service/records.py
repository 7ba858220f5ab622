"""What a run is before any event: its id, question, options and creation time.

Shared by every layer (the pipeline reads a run's options, the recording format writes them),
so it sits in the core beside the events.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Final

DEFAULT_BREADTH: Final = 3
DEFAULT_MAX_SOURCES: Final = 8
BREADTH_RANGE: Final = (1, 8)
MAX_SOURCES_RANGE: Final = (1, 20)
MAX_TOKENS_RANGE: Final = (1, 1_000_000)
DEPTH_RANGE: Final = (1, 3)
DEFAULT_DEPTH: Final = 1


@dataclass(frozen=True, slots=True)
class RunOptions:
    """The validated `options` of a run."""

    breadth: int = DEFAULT_BREADTH
    max_sources: int = DEFAULT_MAX_SOURCES
    # Search rounds: after each, the model plans follow-ups for what is still missing.
    depth: int = DEFAULT_DEPTH
    # Tokens the run's model calls may generate; the server's ceiling applies when unset.
    max_tokens: int | None = None
    # Wait after planning until a person approves, edits or redirects the plan.
    review_plan: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (an unset max_tokens and a false review_plan are left out)."""
        # Not `asdict`, which deep-copies each value: this is on every POST (twice) and every
        # listed run, and the fields are plain values (bench/README.md, "Scale benchmark").
        values = ((name, getattr(self, name)) for name in _OPTION_FIELDS)
        return {k: v for k, v in values if v is not None and v is not False}


#: RunOptions' fields in order, for its `to_dict`.
_OPTION_FIELDS: Final = tuple(f.name for f in fields(RunOptions))


def iso_time(timestamp: float) -> str:
    """A Unix time as RFC 3339 UTC with milliseconds."""
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_run_id() -> str:
    """A fresh run id: 16 lowercase hex characters (never contains ':')."""
    return secrets.token_hex(8)


@dataclass(frozen=True, slots=True)
class RunRecord:
    """The immutable facts of a run; everything else is derived from its events."""

    id: str
    question: str
    options: RunOptions = field(default_factory=RunOptions)
    created_at: float = field(default_factory=time.time)
    #: The name of the API key that created the run (None: created with auth off).
    owner: str | None = None

    @property
    def created_iso(self) -> str:
        """Creation time as RFC 3339 UTC with milliseconds."""
        return iso_time(self.created_at)

    @property
    def sort_key(self) -> tuple[float, str]:
        """Newest-first listing order (compared descending)."""
        return (self.created_at, self.id)
