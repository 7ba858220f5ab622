"""A run's token events stored several to a row in the SQLite store (schema 4).

Most of what a run appends is `token` events, and SQLite's cost is per row: one row per event
cost about 1.5 µs of the writer's CPU each. So the writer stores a run's consecutive token
events of one batch as one `events` row, a *segment*:

- `seq` and `t_ms` are the last event's (so "the run's last event" queries are unchanged),
  and `name` is `tokens`;
- `wire` is a header, then the events' wires one after the other. The header is the number
  of events, then each event's `t_ms`, all little-endian unsigned 32-bit integers.

Every event's wire ends with its one blank line and holds no other (`events.encode`: one data
line, JSON escapes newlines), so the wires split apart on it. Reading a run back expands its
segments into the events they hold, so nothing above the store sees them.
"""

from __future__ import annotations

import sqlite3
import sys
from array import array
from typing import Final

from research_service.runs.run_memory import Row

#: The `name` of a row holding several token events.
SEGMENT: Final = "tokens"
_TOKEN: Final = "token"
_END: Final = b"\n\n"
_WORD: Final = 4


def coalesce(batch: list[Row]) -> list[Row]:
    """`batch` with each run's consecutive token events made one row (order kept per run)."""
    rows: list[Row] = []
    going: dict[str, list[Row]] = {}
    for row in batch:
        run_id = row[0]
        segment = going.get(run_id)
        if row[2] == _TOKEN:
            if segment is not None and segment[-1][1] + 1 == row[1]:
                segment.append(row)
                continue
            if segment is not None:
                rows.append(_joined(segment))
            going[run_id] = [row]
            continue
        if segment is not None:
            rows.append(_joined(segment))
            del going[run_id]
        rows.append(row)
    rows.extend(_joined(segment) for segment in going.values())
    return rows


def expand(rows: list[Row]) -> list[Row]:
    """Stored rows back as one row per event; DatabaseError for a segment that does not split."""
    if not any(row[2] == SEGMENT for row in rows):
        return rows
    events: list[Row] = []
    for row in rows:
        if row[2] != SEGMENT:
            events.append(row)
            continue
        run_id, seq, _, _, blob = row
        count = int.from_bytes(blob[:_WORD], "little")
        times = array("I")
        times.frombytes(blob[_WORD : _WORD * (count + 1)])
        if sys.byteorder == "big":
            times.byteswap()
        wires = blob[_WORD * (count + 1) :].split(_END)
        if len(times) != count or len(wires) != count + 1 or wires[-1]:
            raise sqlite3.DatabaseError(
                f"the stored token events of run {run_id} up to {seq} do not split into the "
                f"{count} events their row says; restore the run store from a backup"
            )
        first = seq - count + 1
        events += [(run_id, first + i, _TOKEN, times[i], wires[i] + _END) for i in range(count)]
    return events


def _joined(segment: list[Row]) -> Row:
    if len(segment) == 1:
        return segment[0]
    header = array("I", [len(segment)])
    header.extend(row[3] for row in segment)
    if sys.byteorder == "big":
        header.byteswap()
    last = segment[-1]
    wire = header.tobytes() + b"".join(row[4] for row in segment)
    return (last[0], last[1], SEGMENT, last[3], wire)
