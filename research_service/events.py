"""The wire contract in code: event names, payload shapes and their SSE encoding."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, Final, Literal, NamedTuple, TypeAlias, get_args

from research_service.text import well_formed

EventName: TypeAlias = Literal["phase", "token", "done", "error"]
Phase: TypeAlias = Literal["planning", "searching", "synthesizing"]
PhaseStatus: TypeAlias = Literal["started", "progress", "completed"]
RunStatus: TypeAlias = Literal["queued", "running", "completed", "failed", "cancelled"]
FinalStatus: TypeAlias = Literal["completed", "failed", "cancelled"]

EVENT_NAMES: Final[frozenset[str]] = frozenset(get_args(EventName))
PHASES: Final[tuple[Phase, ...]] = ("planning", "searching", "synthesizing")
FINAL_STATUSES: Final[frozenset[str]] = frozenset({"completed", "failed", "cancelled"})

#: The comment line written when a stream has been quiet for the heartbeat interval.
PING: Final = b": ping\n\n"
#: The error codes of a run's ending written by another process after the one running it
#: stopped: its listeners may have seen events the crash lost, whose seqs the ending took.
CRASH_ENDINGS: Final = frozenset({"interrupted", "worker_lost"})

_RUN_ID_RE: Final = re.compile(r"^[0-9a-f]{16}\Z")
_EVENT_ID_RE: Final = re.compile(r"^(?P<run>[0-9a-f]{16}):(?P<seq>0|[1-9][0-9]{0,17})\Z")


def done_payload(
    *,
    status: FinalStatus,
    answer: str,
    sources: list[dict[str, Any]],
    timings_ms: dict[str, int],
    error: dict[str, Any] | None,
    usage: dict[str, Any] | None,
    truncated: bool,
) -> dict[str, Any]:
    """The payload of a run's `done`: how it ended, its whole answer and sources, its cost."""
    # The order of the keys is the order on the wire.
    return {
        "status": status,
        "answer": answer,
        "sources": sources,
        "timings_ms": timings_ms,
        "error": error,
        "usage": usage,
        "truncated": truncated,
    }


# Built once: json.dumps() with options builds a new encoder on every call.
_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
# The string encoder behind _ENCODER (the C one where available), for the token fast path.
_encode_string: Final[Callable[[str], str]] = json.encoder.encode_basestring


def dumps(data: Any) -> str:
    """Compact JSON, the one serialisation used on the wire."""
    return _ENCODER.encode(data)


def writable(data: dict[str, Any]) -> dict[str, Any]:
    """`data` with every lone surrogate made U+FFFD: what an event can carry (see `encode`)."""
    cleaned: dict[str, Any] = json.loads(well_formed(dumps(data)))
    return cleaned


def encode(run_id: str, seq: int, name: str, data: Any) -> bytes:
    """Encode one event as SSE bytes: id, event, exactly one data line, blank line."""
    if name == "token" and len(data) == 1 and type(data.get("text")) is str:
        # The hot path, byte for byte what dumps() writes for {"text": str}.
        payload = '{"text":' + _encode_string(data["text"]) + "}"
    else:
        payload = dumps(data)
    # JSON escapes CR and LF inside strings, so the data is always one line.
    return f"id: {run_id}:{seq}\nevent: {name}\ndata: {payload}\n\n".encode()


def retry_field(retry_ms: int) -> bytes:
    """The `retry:` field that opens every stream."""
    return f"retry: {retry_ms}\n\n".encode()


class Event(NamedTuple):
    """One event of a run: its position, name and SSE encoding, computed once.

    Only atomic fields, so CPython stops tracking a stored event in its cyclic garbage
    collector: a long-lived process holding many runs' events pays nothing for them at each
    collection. The payload is in `wire`; `data` decodes it again when needed.
    """

    run_id: str
    seq: int
    name: str
    t_ms: int
    wire: bytes

    @classmethod
    def create(cls, run_id: str, seq: int, name: str, data: dict[str, Any], *, t_ms: int) -> Event:
        """Build an event and encode it for the wire."""
        return cls(run_id, seq, name, t_ms, encode(run_id, seq, name, data))

    @property
    def id(self) -> str:
        """The SSE id: `<run_id>:<seq>`."""
        return f"{self.run_id}:{self.seq}"

    @property
    def is_final(self) -> bool:
        """True for the `done` event, always the run's last."""
        return self.name == "done"

    @property
    def data(self) -> dict[str, Any]:
        """The event's payload, decoded from its `data:` line."""
        start = self.wire.index(b"\ndata: ") + len(b"\ndata: ")
        payload: dict[str, Any] = json.loads(self.wire[start:-2])
        return payload


def is_run_id(value: str) -> bool:
    """True if `value` has the shape of a run id."""
    return bool(_RUN_ID_RE.match(value))


def parse_event_id(value: str) -> tuple[str, int] | None:
    """Split `<run_id>:<seq>` into its parts, or None when it is malformed."""
    match = _EVENT_ID_RE.match(value.strip())
    if match is None:
        return None
    return match["run"], int(match["seq"])
