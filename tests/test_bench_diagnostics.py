"""bench/diagnostics/: the loop and CPU diagnostics behind bench/README.md's issue 16 figures.

Each runs in its own interpreter, as it does beside the bench: a `sitecustomize.py` changes
asyncio for the whole process it is imported into.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DIAGNOSTICS = Path(__file__).resolve().parent.parent / "bench" / "diagnostics"
TIMEOUT_S = 60

# Five sockets with a byte each to read. A callback that schedules itself again with
# call_soon runs once per loop iteration, so it numbers them; each reader notes the iteration
# it ran in. Prints how many readers ran in each iteration.
READERS_PER_TURN = """
import asyncio, collections, socket

async def main():
    loop = asyncio.get_running_loop()
    pairs = [socket.socketpair() for _ in range(5)]
    turn, seen, all_read = 0, [], loop.create_future()

    def tick():
        nonlocal turn
        turn += 1
        if not all_read.done():
            loop.call_soon(tick)

    def read(sock):
        sock.recv(1)
        loop.remove_reader(sock)
        seen.append(turn)
        if len(seen) == len(pairs):
            all_read.set_result(None)

    for ours, theirs in pairs:
        theirs.send(b"x")
        loop.add_reader(ours, read, ours)
    tick()
    await asyncio.wait_for(all_read, 10)
    print(sorted(collections.Counter(seen).values()))

asyncio.run(main())
"""

# A loop callback that holds the loop's thread for `seconds` of its CPU.
BURN = """
import time

def burn(seconds):
    began = time.thread_time()
    while time.thread_time() - began < seconds:
        pass
"""

# A task that burns CPU before SIGUSR1 (forgotten), one after it (kept), then SIGUSR2.
BUSY_TASKS = f"""{BURN}
import asyncio, os, signal

async def before():
    burn(0.03)

async def busy():
    burn(0.03)

async def main():
    await asyncio.create_task(before())
    os.kill(os.getpid(), signal.SIGUSR1)
    await asyncio.create_task(busy())
    os.kill(os.getpid(), signal.SIGUSR2)

asyncio.run(main())
"""


def run_as_server(code: str, folder: str, **env: str) -> str:
    """Run `code` as a process whose arguments name `serve`, with `folder` on PYTHONPATH."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in {"MAXEVENTS", "LOOP_CPU_OUT", "LONG_TURNS_OUT", "LONG_TURNS_ONLY"}
    }
    environment |= {"PYTHONPATH": str(DIAGNOSTICS / folder), **env}
    done = subprocess.run(
        [sys.executable, "-c", code, "serve"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=True,
    )
    return done.stdout


def test_epoll_cap_hands_the_loop_at_most_maxevents_ready_sockets_a_turn() -> None:
    capped = json.loads(run_as_server(READERS_PER_TURN, "epoll_cap", MAXEVENTS="2"))
    assert sum(capped) == 5  # every socket was read, none left waiting
    assert max(capped) <= 2
    # Without the cap, asyncio's loop reads all five in one turn.
    assert json.loads(run_as_server(READERS_PER_TURN, "epoll_cap", MAXEVENTS="0")) == [5]


def test_loop_cpu_sums_each_tasks_cpu_from_the_last_reset(tmp_path: Path) -> None:
    out = tmp_path / "cpu.json"
    run_as_server(BUSY_TASKS, "loop_cpu", LOOP_CPU_OUT=str(out))
    sums = json.loads(out.read_text())
    cpu_s, calls = sums["task:busy"]
    assert cpu_s >= 0.03
    assert calls == 1
    assert "task:before" not in sums  # SIGUSR1 started the sums afresh


# A task that holds the loop for 30 ms in one step, and a turn spent only waiting in epoll.
LONG_STEP = f"""{BURN}
import asyncio

async def hog():
    await asyncio.sleep(0)
    burn(0.03)

async def main():
    await asyncio.sleep(0.05)
    await asyncio.create_task(hog())

asyncio.run(main())
"""


def test_long_turns_names_the_step_that_held_the_loop_and_not_the_wait(tmp_path: Path) -> None:
    prefix = tmp_path / "turns"
    run_as_server(LONG_STEP, "long_turns", LONG_TURNS_OUT=str(prefix), LONG_TURNS_MS="20")
    (written,) = tmp_path.glob("turns.*")
    lines = written.read_text().splitlines()
    assert len(lines) == 1, lines  # the 50 ms in epoll is no long turn
    turn = re.search(r" turn (\d+\.\d) ms, (\d+) callbacks", lines[0])
    step = re.search(r": task:hog>hog (\d+\.\d) ms/1(;|$)", lines[0])  # its one step, first
    assert turn is not None, lines[0]
    assert step is not None, lines[0]
    assert float(turn[1]) >= float(step[1]) >= 30
    assert int(turn[2]) >= 1


def test_long_turns_watches_only_the_processes_named(tmp_path: Path) -> None:
    prefix = tmp_path / "turns"
    run_as_server(LONG_STEP, "long_turns", LONG_TURNS_OUT=str(prefix), LONG_TURNS_ONLY="client")
    assert list(tmp_path.glob("turns.*")) == []


def test_metrics_scrape_times_both_paths_on_a_real_service() -> None:
    done = subprocess.run(
        [sys.executable, str(DIAGNOSTICS / "metrics_scrape.py"), "--rounds=1", "--requests=3"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=True,
    )
    header, rule, row = done.stdout.splitlines()
    assert rule == "|---|---|---|"
    assert header == "| source | /metrics p50 / p99 ms | /healthz p50 / p99 ms |"
    source, metrics, health = (cell.strip() for cell in row.strip("|").split("|"))
    assert source == str(DIAGNOSTICS.parent.parent)  # this checkout, by default
    for cell in (metrics, health):
        p50, p99 = (float(figure) for figure in cell.split(" / "))
        assert 0 < p50 <= p99


@pytest.mark.parametrize("way", [[], ["--reconnect"]], ids=["held-run", "reconnect-storm"])
def test_one_run_crowd_gets_every_token_to_every_listener(way: list[str]) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(DIAGNOSTICS / "one_run_crowd.py"),
            "--listeners=150",
            "--tokens=20",
            "--no-pin",
            *way,
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=True,
    )
    header, rule, row = done.stdout.splitlines()
    assert header.startswith("| listeners | tokens | every `done` after s |")
    assert rule == "|---|---|---|---|---|---|"
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[:2] == ["150", "20"]  # and it checked that each listener had every token
    done_s, cpu_s, stall_ms, healthz_ms = (float(cell) for cell in cells[2:])
    assert done_s > 0
    assert cpu_s > 0
    assert stall_ms >= 0
    assert healthz_ms > 0
