"""`/healthz` (the process answers) and `/readyz` (every part it needs works right now)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Final, Protocol, runtime_checkable

from aiohttp import web

from research_service.errors import ResearchError
from research_service.events import dumps
from research_service.web import validation
from research_service.web.keys import READINESS
from research_service.web.problems import problem

log = logging.getLogger(__name__)

#: A readiness answer is reused this long, so frequent probes cost the model server nothing.
READY_CACHE_S: Final = 5.0
#: Longest one part may take to answer its check.
CHECK_TIMEOUT_S: Final = 5.0


@runtime_checkable
class Checkable(Protocol):
    """A part that can say whether it works: `check` raises when it does not."""

    async def check(self) -> None:
        """Return if the part works; raise (with a message saying what to do) if not."""
        ...


@dataclass(frozen=True, slots=True)
class Readiness:
    """The outcome of one round of checks: part name -> None (ok) or what is wrong."""

    problems: dict[str, str | None]
    at: float

    @property
    def ready(self) -> bool:
        """True when every part works."""
        return not any(self.problems.values())

    def body(self) -> dict[str, Any]:
        """Each part with its status and, when failing, why."""
        return {
            name: {"status": "ok"} if failure is None else {"status": "failing", "error": failure}
            for name, failure in self.problems.items()
        }


async def _check(part: object) -> str | None:
    """None when `part` works (or has no check); else what is wrong with it.

    The answer comes within CHECK_TIMEOUT_S: a check that has not answered by then is
    cancelled and left to unwind on its own (cancelling a query on a connection that went
    silent can itself take seconds), not waited for.
    """
    if not isinstance(part, Checkable):
        return None
    task = asyncio.ensure_future(part.check())
    done, _ = await asyncio.wait({task}, timeout=CHECK_TIMEOUT_S)
    if not done:
        task.cancel()
        task.add_done_callback(_unwound)
        return f"its check did not answer within {CHECK_TIMEOUT_S:g} s"
    try:
        task.result()
    except ResearchError as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - a probe answers whatever a part's check raises
        log.warning("readiness check of %r failed unexpectedly: %r", part, exc)
        return f"its check failed: {exc!r}"
    return None


def _unwound(task: asyncio.Future[None]) -> None:
    """A timed-out check's end, whatever it is, is not an error of the probe's."""
    if not task.cancelled():
        task.exception()  # retrieved: asyncio does not log it as never retrieved


class ReadinessProbe:
    """Checks the local parts on every call and the remote ones at most every READY_CACHE_S.

    The run store's check is cheap and must be current (a full disk is news at once); a
    provider's check asks a server, so its answer is reused for a few seconds.
    """

    def __init__(self, *, local: dict[str, object], remote: dict[str, object]) -> None:
        self._local = local
        self._remote = remote
        self._last: Readiness | None = None
        self._running: asyncio.Task[Readiness] | None = None

    async def readiness(self) -> Readiness:
        """Every part's state now (the remote ones as of at most READY_CACHE_S ago).

        The local and the remote checks run side by side: an answer within CHECK_TIMEOUT_S.
        """
        local, remote = await asyncio.gather(self._check_all(self._local), self._remote_state())
        return Readiness({**local.problems, **remote.problems}, local.at)

    async def _remote_state(self) -> Readiness:
        loop = asyncio.get_running_loop()
        if self._last is not None and loop.time() - self._last.at < READY_CACHE_S:
            return self._last
        if self._running is None or self._running.done():
            # One round of checks for every probe that arrives while it runs.
            self._running = asyncio.create_task(self._check_all(self._remote))
        self._last = await asyncio.shield(self._running)
        return self._last

    @staticmethod
    async def _check_all(parts: dict[str, object]) -> Readiness:
        outcomes = await asyncio.gather(*(_check(part) for part in parts.values()))
        at = asyncio.get_running_loop().time()
        return Readiness(dict(zip(parts, outcomes, strict=True)), at)


async def healthz(request: web.Request) -> web.Response:
    """`GET /healthz`: the process is up and serving (cheap; checks nothing else)."""
    validation.known_params(request.query)
    return web.Response(body=b'{"status":"ok"}', content_type="application/json")


async def readyz(request: web.Request) -> web.Response:
    """`GET /readyz`: 200 when the store takes writes and the providers answer, else 503."""
    validation.known_params(request.query)
    state = await request.app[READINESS].readiness()
    if state.ready:
        body = dumps({"status": "ready", "checks": state.body()}).encode()
        return web.Response(body=body, content_type="application/json")
    failing = [f"{name}: {why}" for name, why in state.problems.items() if why]
    return problem(
        503,
        slug="not-ready",
        title="Not ready",
        detail="; ".join(failing),
        headers={"Retry-After": str(int(READY_CACHE_S))},
        checks=state.body(),
    )
