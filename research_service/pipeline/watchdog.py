"""First-token and between-token timeouts for a streamed answer, at no cost per token."""

from __future__ import annotations

import asyncio

from research_service.errors import PipelineError


class StreamWatchdog:
    """Cancels the current task if the first piece, or the next one, is too long in coming.

    A piece only records the time (`tick`); one timer checks it, re-armed when it fires,
    so a fast stream pays no timer per token.
    """

    def __init__(self, *, first_s: float, between_s: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._first_s = first_s
        self._between_s = between_s
        self._last: float | None = None
        self.fired: str | None = None
        self._timer = self._loop.call_later(first_s, self._check)

    def tick(self) -> None:
        """A piece arrived."""
        if self._last is None:
            # The first piece: from now on the clock is the between-tokens one.
            self._timer.cancel()
            self._timer = self._loop.call_later(self._between_s, self._check)
        self._last = self._loop.time()

    def restart(self, *, after_s: float) -> None:
        """A retry will start over in `after_s`: the first-token clock starts again then."""
        self._timer.cancel()
        self._last = None
        self._timer = self._loop.call_later(after_s + self._first_s, self._check)

    def stop(self) -> None:
        """The stream ended (or was abandoned): no more checks."""
        self._timer.cancel()

    def error(self) -> PipelineError:
        """The error that names the timeout that fired."""
        if self.fired == "first":
            return PipelineError(
                f"the model sent no token within {self._first_s:g} s; raise "
                "--llm-first-token-timeout-s or check the model server's load",
                code="llm_first_token_timeout",
                phase="synthesizing",
            )
        return PipelineError(
            f"the model stalled for {self._between_s:g} s between tokens; raise "
            "--llm-token-timeout-s or check the model server",
            code="llm_token_timeout",
            phase="synthesizing",
        )

    def _check(self) -> None:
        now = self._loop.time()
        if self._last is None:
            self._fire("first")
        elif now - self._last >= self._between_s:
            self._fire("between")
        else:
            self._timer = self._loop.call_later(self._between_s - (now - self._last), self._check)

    def _fire(self, kind: str) -> None:
        self.fired = kind
        if self._task is not None:
            self._task.cancel()
