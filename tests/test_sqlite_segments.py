"""Token events stored several to a row (schema 4): fewer rows, the same events read back."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from research_service.events import Event
from research_service.runs import sqlite_log
from research_service.runs.models import RunRecord
from research_service.runs.run_memory import Row
from research_service.runs.sqlite_segments import SEGMENT, coalesce, expand

A, B = "a" * 16, "b" * 16


def row(run_id: str, seq: int, name: str = "token") -> Row:
    data = {"status": "completed"} if name == "done" else {"text": f"piece\n{seq} \\n\\n"}
    if name == "phase":
        data = {"phase": "searching", "status": "started"}
    return tuple.__new__(tuple, Event.create(run_id, seq, name, data, t_ms=seq * 7))  # type: ignore[no-any-return]


def test_a_runs_consecutive_tokens_become_one_row_and_expand_back_exactly() -> None:
    # Two runs interleaved, a phase between tokens of A, and A's done at the end.
    batch = [row(A, 1), row(B, 1), row(A, 2), row(B, 2), row(A, 3, "phase"), row(A, 4)]
    batch += [row(B, 3), row(A, 5), row(A, 6, "done")]
    stored = coalesce(batch)
    names = sorted((r[0][0], r[1], r[2]) for r in stored)
    assert names == [
        ("a", 2, SEGMENT),
        ("a", 3, "phase"),
        ("a", 5, SEGMENT),
        ("a", 6, "done"),
        ("b", 3, SEGMENT),
    ]
    # A segment's seq and t_ms are its last event's, so "the run's last event" queries hold.
    assert {(r[1], r[3]) for r in stored if r[2] == SEGMENT} == {(2, 14), (5, 35), (3, 21)}
    by_run = sorted(expand(stored), key=lambda r: (r[0], r[1]))
    assert by_run == sorted(batch, key=lambda r: (r[0], r[1]))


def test_lone_tokens_and_gaps_stay_rows_of_their_own() -> None:
    batch = [row(A, 1), row(A, 3), row(B, 7)]
    assert coalesce(batch) == batch
    assert expand(batch) == batch


def test_a_segment_that_does_not_split_is_an_error_naming_its_run() -> None:
    (segment,) = coalesce([row(A, 1), row(A, 2), row(A, 3)])
    broken = (*segment[:4], segment[4][:-2])
    with pytest.raises(sqlite3.DatabaseError, match=f"run {A} up to 3 do not split into the 3"):
        expand([broken])  # type: ignore[list-item]


async def test_a_stored_run_takes_few_rows_and_reads_back_whole_after_a_restart(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runs.sqlite3"
    log = await sqlite_log.open(path, flush_interval_s=3600, flush_max_events=10_000)
    appended = [row(A, 1, "phase")] + [row(A, seq) for seq in range(2, 502)]
    appended += [row(A, 502, "phase"), *(row(A, seq) for seq in range(503, 603))]
    appended.append(row(A, 603, "done"))
    try:
        await log.create_run(RunRecord(A, "question", created_at=1.0))
        for each in appended:
            await log.append(Event._make(each))
    finally:
        await log.close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        names = db.execute("SELECT name FROM events ORDER BY seq").fetchall()
    assert [name for (name,) in names] == ["phase", SEGMENT, "phase", SEGMENT, "done"]

    again = await sqlite_log.open(path)
    try:
        read = await again.read(A, after=0)
        assert [tuple(event) for event in read] == appended
        assert (await again.tails([A]))[A].event_count == 603
    finally:
        await again.close()
