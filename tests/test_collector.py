"""The garbage collector's long work: full collections deferred, then taken while nothing runs.

Real collections of real cyclic garbage in this process, observed by a weak reference's
callback; the automatic collector is switched off around each test so that only the code
under test collects.
"""

from __future__ import annotations

import asyncio
import gc
import resource
import subprocess
import sys
import weakref
from collections.abc import Iterator

import pytest

from research_service import collector
from research_service.collector import (
    DEFERRED_FULL_THRESHOLD,
    collect_when_quiet,
    defer_full_collections,
    quiet_collections,
)
from research_service.web.connections import MAX_PRESIZED_FILES, presize_file_table


@pytest.fixture
def manual_gc() -> Iterator[None]:
    """No automatic collection, and the thresholds as they were afterwards."""
    thresholds = gc.get_threshold()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        if was_enabled:
            gc.enable()


class Node:
    """A cycle of one: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


def old_cyclic_garbage(freed: asyncio.Event) -> weakref.ref[Node]:
    """A cycle in the oldest generation, which only a full collection frees.

    It is held while a generation-1 collection promotes it, then let go; that collection
    also counts as one since the last full one.
    """
    node = Node()
    ref = weakref.ref(node, lambda _: freed.set())
    gc.collect(1)
    del node
    return ref


class Looks:
    """A `quiet()` that answers `busy`'s opposite and counts how often it was asked."""

    def __init__(self, *, busy: bool) -> None:
        self.busy = busy
        self.count = 0
        self.asked: dict[int, asyncio.Event] = {}

    def __call__(self) -> bool:
        self.count += 1
        for times, event in self.asked.items():
            if self.count >= times:
                event.set()
        return not self.busy

    async def until(self, times: int) -> None:
        """Wait until it has been asked `times` times in all."""
        event = self.asked.setdefault(times, asyncio.Event())
        if self.count >= times:
            event.set()
        async with asyncio.timeout(10):
            await event.wait()


def test_full_collections_are_considered_ten_times_less_often(
    manual_gc: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(collector, "_usual_full_threshold", None)
    gc.set_threshold(700, 10, 10)
    assert defer_full_collections() == 10
    assert gc.get_threshold() == (700, 10, DEFERRED_FULL_THRESHOLD)
    # A second time (a second `serve` in one process): still due at the usual threshold.
    assert defer_full_collections() == 10
    assert gc.get_threshold() == (700, 10, DEFERRED_FULL_THRESHOLD)


def test_a_threshold_already_higher_is_left_alone(
    manual_gc: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(collector, "_usual_full_threshold", None)
    gc.set_threshold(700, 10, 500)
    assert defer_full_collections() == DEFERRED_FULL_THRESHOLD
    assert gc.get_threshold() == (700, 10, 500)


async def test_a_due_collection_waits_until_nothing_runs(manual_gc: None) -> None:
    gc.collect()
    freed = asyncio.Event()
    ref = old_cyclic_garbage(freed)  # and due: one generation-1 collection since
    looks = Looks(busy=True)
    task = asyncio.create_task(collect_when_quiet(looks, due_after=1, check_s=0.001))
    try:
        await looks.until(3)
        assert ref() is not None  # due, but runs were executing: not collected
        taken = quiet_collections()
        looks.busy = False
        async with asyncio.timeout(10):
            await freed.wait()
        assert ref() is None
        assert quiet_collections() == taken + 1  # counted for GET /metrics
    finally:
        task.cancel()


async def test_no_collection_while_quiet_before_it_is_due(manual_gc: None) -> None:
    gc.collect()
    freed = asyncio.Event()
    ref = old_cyclic_garbage(freed)  # one generation-1 collection since the last full one
    looks = Looks(busy=False)
    task = asyncio.create_task(collect_when_quiet(looks, due_after=3, check_s=0.001))
    try:
        gc.collect(1)  # two
        await looks.until(3)
        assert ref() is not None  # quiet, but not due
        gc.collect(1)  # three: due
        async with asyncio.timeout(10):
            await freed.wait()
        assert ref() is None
    finally:
        task.cancel()


#: Run in a fresh interpreter, whose table is still small: sizes before and after, and
#: the descriptors open before and after.
PRESIZE = """
import os, re
from research_service.web.connections import presize_file_table

def size():
    return int(re.search(r"FDSize:\\s+(\\d+)", open("/proc/self/status").read()).group(1))

def open_fds():
    return sorted(os.listdir("/proc/self/fd"))

before, fds = size(), open_fds()
got = presize_file_table(5000)
print(before, got, size(), open_fds() == fds)
"""


def test_the_descriptor_table_grows_once_and_keeps_no_descriptor_open() -> None:
    limits = (8192, 8192)
    out = subprocess.run(
        [sys.executable, "-c", PRESIZE],
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, limits),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    before, got, after, unchanged = int(out[0]), int(out[1]), int(out[2]), out[3]
    assert before < 5000
    assert got == 5000
    assert after >= 5000
    assert unchanged == "True"


def test_the_descriptor_table_stays_within_the_limits() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    expected = MAX_PRESIZED_FILES
    if soft != resource.RLIM_INFINITY:
        expected = min(soft, MAX_PRESIZED_FILES)
    assert presize_file_table(resource.RLIM_INFINITY) == expected
    assert presize_file_table(10**9) == expected
    assert presize_file_table(1) == 0
