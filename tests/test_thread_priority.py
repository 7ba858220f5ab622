"""Background threads (local search, builtin model) run below the event loop's priority.

Read from the kernel: each thread's nice value in /proc/PID/task/TID/stat, of a real
`research-service serve` process after a real run, and of this process's own threads.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from research_service.errors import ConfigError
from research_service.own_thread import OwnThread, set_background_nice
from research_service.settings import Settings
from tests import postgres
from tests.cluster import cluster_on, post_run
from tests.served import CORPUS, start, stop
from tests.sse import listen

postgres_database = postgres.postgres_database
postgres_url = postgres.postgres_url

pytestmark = pytest.mark.skipif(
    sys.platform != "linux", reason="a nice value of one thread is Linux's (elsewhere: a no-op)"
)


def nice_of_threads(pid: int) -> dict[int, int]:
    """Each thread's id → its nice value, from /proc (Python 3.11 names no OS thread)."""
    found: dict[int, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        # Fields after the name, in parentheses, start at field 3 (state); nice is field 19.
        found[int(task.name)] = int(stat[stat.rindex(")") + 2 :].split()[16])
    return found


@pytest.mark.parametrize(("setting", "increment"), [(None, 19), ("7", 7), ("0", 0)])
async def test_a_served_run_searches_and_writes_on_threads_below_the_loop(
    tmp_path: Path, setting: str | None, increment: int
) -> None:
    env = {} if setting is None else {"RESEARCH_BACKGROUND_NICE": setting}
    served = await start(
        "--port=0",
        f"--data-dir={tmp_path / 'data'}",
        f"--corpus={CORPUS}",
        "--token-delay-ms=0",
        env=env,
    )
    try:
        base = served.base.rstrip("/")
        async with httpx.AsyncClient(timeout=30) as client:
            created = await client.post(f"{base}/v1/runs", json={"question": "What is light?"})
            assert created.status_code == 201, created.text
            got = await listen(client, base + created.json()["events_url"], timeout=60)
        assert got.last[0] == "done"
        assert got.last[1]["status"] == "completed"
        nice = nice_of_threads(served.process.pid)
    finally:
        assert await stop(served) == 0
    assert_lowered(nice, served.process.pid, increment)


def assert_lowered(nice: dict[int, int], pid: int, increment: int) -> None:
    """The local search's thread and the builtin model's are `increment` below the main
    thread's (the event loop's); every other (the run store's, whose writes a POST's answer
    and a durable `done` wait on) is level with it."""
    loop = nice.pop(pid)
    lowered = [tid for tid, value in nice.items() if value != loop]
    assert len(nice) > 2, nice
    assert len(lowered) == (2 if increment else 0), nice
    assert all(nice[tid] == min(19, loop + increment) for tid in lowered), nice


async def test_a_cluster_worker_searches_and_writes_on_threads_below_its_loop(
    postgres_url: str, tmp_path: Path, client: httpx.AsyncClient
) -> None:
    async with cluster_on(postgres_url, tmp_path, RESEARCH_TOKEN_DELAY_MS="0") as cluster:
        api, worker = await cluster.api(), await cluster.worker()
        run_id = await post_run(client, api.base, "How does photosynthesis work?")
        got = await listen(client, f"{api.base}/v1/runs/{run_id}/events", timeout=60)
        assert got.last[0] == "done"
        assert got.last[1]["status"] == "completed"
        assert await worker.executed(run_id) == 1
        nice = nice_of_threads(worker.process.pid)
    assert_lowered(nice, worker.process.pid, 19)


@pytest.fixture
def background_nice() -> Iterator[None]:
    set_background_nice(0)
    yield
    set_background_nice(0)


def own_nice() -> int:
    """The calling thread's nice value."""
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


async def nice_on(thread: OwnThread) -> int:
    """The nice value of the thread `thread` runs its work on."""
    return await thread.call(own_nice)


@pytest.mark.usefixtures("background_nice")
async def test_only_background_threads_started_after_the_setting_are_lowered() -> None:
    own = own_nice()
    before = OwnThread("before", background=True)
    assert await nice_on(before) == own  # started before: as it was
    set_background_nice(5)
    background, store = OwnThread("background", background=True), OwnThread("store")
    try:
        assert await nice_on(background) == min(19, own + 5)
        assert await nice_on(store) == own
        assert await nice_on(before) == own
        # The loop's own thread is never touched.
        assert own_nice() == own
    finally:
        for thread in (before, background, store):
            thread.close()


@pytest.mark.usefixtures("background_nice")
def test_an_increment_outside_0_to_19_is_refused() -> None:
    with pytest.raises(ValueError, match="0-19, got 20"):
        set_background_nice(20)
    with pytest.raises(ValueError, match="0-19, got -1"):
        set_background_nice(-1)
    with pytest.raises(ConfigError, match=r"background_nice must be <= 19.*RESEARCH_"):
        Settings.from_env({"RESEARCH_BACKGROUND_NICE": "20"})
    with pytest.raises(ConfigError, match=r"background_nice must be >= 0"):
        Settings(background_nice=-1)
