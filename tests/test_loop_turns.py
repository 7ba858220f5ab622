"""A background thread's results wake their callers a few per event-loop turn (loop_turns.py).

Turns are counted by a callback that schedules itself again: it runs once per loop turn.
"""

from __future__ import annotations

import asyncio
import gc
import threading

import pytest

from research_service.defaults import WAKE_UPS_PER_TURN
from research_service.loop_turns import TurnGate
from research_service.own_thread import OwnThread


async def per_turn(done: list[int], total: int) -> list[int]:
    """How many more callers went on in each loop turn until `total` have.

    This coroutine's own step comes last in every turn (what the gate lets go in a turn is
    scheduled in the turn before), so each sample covers exactly one turn.
    """
    counts, seen = [], len(done)
    async with asyncio.timeout(5):
        while len(done) < total:
            await asyncio.sleep(0)  # one turn
            counts.append(len(done) - seen)
            seen = len(done)
    return counts


async def through(gate: TurnGate, number: int, done: list[int]) -> None:
    await gate.turn()
    done.append(number)


async def test_callers_past_the_turns_room_go_on_in_later_turns_in_order() -> None:
    gate = TurnGate(3)
    done: list[int] = []
    tasks = [asyncio.create_task(through(gate, number, done)) for number in range(10)]
    counts = await per_turn(done, 10)
    await asyncio.gather(*tasks)
    assert done == list(range(10))
    assert counts[0] == 3  # the first turn takes its room at once
    assert max(counts) == 3
    assert gate.waiting == 0


async def test_below_its_room_a_caller_goes_on_in_the_same_turn() -> None:
    gate = TurnGate(3)
    done: list[int] = []
    tasks = [asyncio.create_task(through(gate, number, done)) for number in range(3)]
    assert await per_turn(done, 3) == [3]
    await asyncio.gather(*tasks)


async def test_pass_now_goes_on_while_the_turn_has_room_and_again_in_the_next() -> None:
    gate = TurnGate(2)
    assert [gate.pass_now() for _ in range(3)] == [True, True, False]
    await asyncio.sleep(0)  # the next turn
    assert [gate.pass_now() for _ in range(3)] == [True, True, False]


async def test_pass_now_never_goes_before_those_who_wait() -> None:
    gate = TurnGate(1)
    done: list[int] = []
    tasks = [asyncio.create_task(through(gate, number, done)) for number in range(3)]
    await asyncio.sleep(0)  # the first goes on, the other two wait
    assert done == [0]
    assert gate.waiting == 2
    await asyncio.sleep(0)  # a new turn: one of them is let go, one still waits
    assert gate.waiting == 1
    assert not gate.pass_now()
    await asyncio.gather(*tasks)
    assert done == [0, 1, 2]


async def test_a_caller_cancelled_while_it_waits_takes_no_room() -> None:
    gate = TurnGate(1)
    done: list[int] = []
    tasks = [asyncio.create_task(through(gate, number, done)) for number in range(4)]
    await asyncio.sleep(0)  # one turn: the first went on, the other three wait
    assert (done, gate.waiting) == ([0], 3)
    tasks[1].cancel()
    counts = await per_turn(done, 3)
    await asyncio.gather(*tasks, return_exceptions=True)
    assert done == [0, 2, 3]
    assert max(counts) == 1


def test_a_gate_left_full_in_one_loop_does_not_hold_another() -> None:
    gate = TurnGate(1)

    async def fill() -> None:
        first, second = asyncio.create_task(gate.turn()), asyncio.create_task(gate.turn())
        await asyncio.sleep(0)
        assert first.done()
        assert not second.done()  # the loop ends with `second` waiting at the gate
        assert gate.waiting == 1

    asyncio.run(fill())
    asyncio.run(asyncio.wait_for(gate.turn(), timeout=5))
    gc.collect()
    assert not gate._loops  # the closed loops' counts went with them


def test_a_turn_lets_at_least_one_caller_through() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        TurnGate(0)


async def test_a_background_threads_results_wake_their_callers_a_few_per_turn() -> None:
    """The loop is held (waiting on the thread, as a busy turn would) until all 40 results
    are in; they then wake their callers over several turns, each caller with its result."""
    thread = OwnThread("test-background", background=True)
    calls = 40
    started, all_in = threading.Event(), threading.Event()
    finished = 0

    def work(number: int) -> int:
        nonlocal finished
        started.wait(5)
        finished += 1
        if finished == calls:
            all_in.set()
        return number

    done: list[int] = []

    async def call(number: int) -> None:
        assert await thread.call(work, number) == number
        done.append(number)

    try:
        tasks = [asyncio.create_task(call(number)) for number in range(calls)]
        await asyncio.sleep(0)  # every call is handed to the thread
        started.set()
        assert all_in.wait(5)  # the loop held until every result is in
        counts = await per_turn(done, calls)
        await asyncio.gather(*tasks)
    finally:
        thread.close()
    assert sorted(done) == list(range(calls))
    assert max(counts) == WAKE_UPS_PER_TURN
