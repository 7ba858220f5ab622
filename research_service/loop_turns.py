"""A few wake-ups per event-loop turn, so that work woken in bulk cannot make one long turn.

asyncio runs, in one turn, every callback that became ready during the turn before. Under a
burst, work arrives in bulk: a background thread (the local search, the builtin model)
finishes a hundred results while the loop is busy and they wake a hundred runs at once; a
group of new runs is committed together and all of them start; their listeners' requests
arrive together and all their streams open. Each is 100-200 µs of the loop's time, so one
turn takes 10-40 ms in which no listener is written to, and more piles up meanwhile
(bench/README.md, "Work woken in bulk, a few per loop turn").

`SHARED` lets about `WAKE_UPS_PER_TURN` such callers go on per turn; the others wait, in the
order they came, for the following turns. Below that many a turn it changes nothing. Requests
pass it first thing (`web/turns.py`), runs as they start, background threads' results as they
arrive. Requests' answers and events written to listeners do not pass it: they are what must
not wait.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from typing import Final

from research_service.defaults import WAKE_UPS_PER_TURN


class TurnGate:
    """`await gate.turn()` returns at once while the loop's turn has let few callers through.

    Callers that find the turn full wait in order; each new turn lets up to `per_turn` of them
    go on in the turn after it, and new callers wait behind them. Callers that run in a turn
    before the gate has counted it as new still count for the old one, so a turn may let
    through up to twice `per_turn` at worst. Each event loop has its own count.
    """

    def __init__(self, per_turn: int) -> None:
        if per_turn < 1:
            raise ValueError(f"a turn lets at least 1 caller through, got {per_turn}")
        self.per_turn = per_turn
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Turns] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def waiting(self) -> int:
        """Callers waiting for a turn of the running loop."""
        turns = self._loops.get(asyncio.get_running_loop())
        return 0 if turns is None else len(turns.waiting)

    def pass_now(self) -> bool:
        """True: go on in this turn, counted as `turn` counts; False: await `turn`.

        True when the turn has room and nobody waits. A caller that need not wait then makes
        no coroutine for it.
        """
        return self._turns().pass_now()

    async def turn(self) -> None:
        """Return in a turn with room, after the callers that waited before."""
        await self._turns().turn()

    def _turns(self) -> _Turns:
        loop = asyncio.get_running_loop()
        turns = self._loops.get(loop)
        if turns is None:
            turns = self._loops[loop] = _Turns(self.per_turn)
        return turns


class _Turns:
    """One loop's count of the callers let through its turns.

    It holds no reference to its loop, so that the gate's entry for a closed loop goes with it.
    """

    def __init__(self, per_turn: int) -> None:
        self.per_turn = per_turn
        self.passed = 0  # callers going on in the current turn
        self.released = 0  # waiters let go, who go on in the next turn
        self.waiting: deque[asyncio.Future[None]] = deque()
        self.counting = False  # a new turn is due to be counted

    def pass_now(self) -> bool:
        if self.waiting or self.passed >= self.per_turn:
            return False
        self.passed += 1
        self._count_next_turn()
        return True

    async def turn(self) -> None:
        if self.pass_now():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.append(waiter)
        self._count_next_turn()
        await waiter

    def _count_next_turn(self) -> None:
        if not self.counting:
            self.counting = True
            asyncio.get_running_loop().call_soon(self._new_turn)  # runs in the next turn

    def _new_turn(self) -> None:
        self.counting = False
        # Those let go last turn go on in this one.
        self.passed, self.released = self.released, 0
        while self.waiting and self.released < self.per_turn:
            waiter = self.waiting.popleft()
            if not waiter.done():  # a caller cancelled while it waited takes no room
                waiter.set_result(None)
                self.released += 1
        if self.passed or self.released or self.waiting:
            self._count_next_turn()


#: The process's gate: background threads' results, runs starting and streams opening.
SHARED: Final = TurnGate(WAKE_UPS_PER_TURN)
