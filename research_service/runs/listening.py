"""Who follows the runs executing here: a run that nobody follows for a while is abandoned."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from research_service.runs.coordinator import Coordinator
from research_service.runs.live_run import LiveRun


class Listening:
    """Counts each live run's listeners; the last one leaving arms the run's abandon timer.

    A run with listeners is never abandoned. One that has none for `abandon_after_s` seconds
    is cancelled (`abandoned`): in a cluster, only once no other process has a listener either.
    """

    def __init__(
        self,
        live: Mapping[str, LiveRun],
        *,
        abandon_after_s: float,
        coordinator: Coordinator | None = None,
    ) -> None:
        self._live = live  # the manager's runs executing here, by id
        self.abandon_after_s = abandon_after_s
        self.coordinator = coordinator

    def count(self, run_id: str) -> int:
        """How many clients follow a run live in this process (0 when it is not live here)."""
        run = self._live.get(run_id)
        return 0 if run is None else run.listeners

    def joined(self, run_id: str) -> None:
        """Count a listener; a run with listeners is never abandoned."""
        run = self._live.get(run_id)
        if run is not None:
            run.listeners += 1
            self.disarm(run)
        elif self.coordinator is not None:
            self.coordinator.listener_joined(run_id)

    def left(self, run_id: str) -> None:
        """Uncount a listener; the last one leaving starts the abandon timer."""
        run = self._live.get(run_id)
        if run is not None:
            run.listeners -= 1
            if run.listeners == 0:
                self.arm(run)
        elif self.coordinator is not None:
            self.coordinator.listener_left(run_id)

    def arm(self, run: LiveRun, *, after_s: float | None = None) -> None:
        """Abandon `run` in `after_s` (`abandon_after_s`) seconds, unless a listener comes."""
        self.disarm(run)
        message = f"no listener for {self.abandon_after_s:g} s, so the run was abandoned"

        def abandon() -> None:
            run.abandon_timer = None
            if self.coordinator is None:
                run.cancel(code="abandoned", message=message)
            else:
                run.abandon_check = asyncio.create_task(self._abandon_unless_followed(run, message))

        delay = self.abandon_after_s if after_s is None else after_s
        run.abandon_timer = asyncio.get_running_loop().call_later(delay, abandon)

    @staticmethod
    def disarm(run: LiveRun) -> None:
        """Stop `run`'s abandon timer, if it is running."""
        if run.abandon_timer is not None:
            run.abandon_timer.cancel()
            run.abandon_timer = None

    async def _abandon_unless_followed(self, run: LiveRun, message: str) -> None:
        """In a cluster, abandon the run only if no other process has a listener either."""
        assert self.coordinator is not None
        elsewhere = await self.coordinator.listeners_elsewhere(run.record.id)
        if run.listeners == 0 and run.abandon_timer is None:
            if elsewhere.listeners:
                self.arm(run)
            elif elsewhere.quiet_s is not None and elsewhere.quiet_s < self.abandon_after_s:
                # A listener on another node left since: the count starts from then.
                self.arm(run, after_s=self.abandon_after_s - elsewhere.quiet_s)
            else:
                run.cancel(code="abandoned", message=message)
