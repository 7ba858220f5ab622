"""Signing out for real: a session ended on any node is refused, and its open requests cut."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

from research_service.auth.ended_sessions import EndedSessions
from research_service.auth.keyring import RECHECK_S
from research_service.auth.tokens import SessionGrant
from research_service.auth.watchers import Watchers
from research_service.defaults import RETENTION_INTERVAL_S
from research_service.errors import StoreUnavailable

log = logging.getLogger(__name__)

#: How often the requests open with a session are checked against the ended sessions (a
#: sign-out on another node): as often as the Keyring checks open requests' keys.
CHECK_OPEN_EVERY_S: Final = RECHECK_S
#: How often ended sessions past their expiry are deleted (and at start).
PURGE_EVERY_S: Final = RETENTION_INTERVAL_S


class SignOuts:
    """Ends sessions in `store`; refuses ended ones; cuts what an ended session has open.

    A sign-out here cuts this process's requests of that session at once; one made elsewhere
    (another node) is seen by the next request at once, and by open requests within
    CHECK_OPEN_EVERY_S.
    """

    def __init__(self, store: EndedSessions) -> None:
        self.store = store
        #: Sessions known to have ended, and their expiry: asked again of nobody.
        self._known: dict[str, int] = {}
        self._watchers = Watchers()

    async def end(self, grant: SessionGrant) -> None:
        """End the session `grant` stands for (StoreUnavailable when it cannot be recorded)."""
        await self.store.end(grant.session_id, expires=grant.expires)
        self._ended(grant.session_id, grant.expires)

    async def has_ended(self, grant: SessionGrant) -> bool:
        """Whether the session `grant` stands for was signed out (here or on another node)."""
        if grant.session_id in self._known:
            return True
        if not await self.store.ended([grant.session_id]):
            return False
        self._ended(grant.session_id, grant.expires)
        return True

    def watch(self, session_id: str, on_ended: Callable[[], None]) -> Callable[[], None]:
        """Call `on_ended` once if session `session_id` ends; returns the call that stops it.

        A session that ended between the request's check and this call is cut at the next
        turn of the loop: its sign-out found nobody to tell.
        """
        unwatch = self._watchers.watch(session_id, on_ended)
        if session_id in self._known:
            asyncio.get_running_loop().call_soon(self._watchers.fire, session_id)
        return unwatch

    async def run(self) -> None:
        """Check open requests' sessions every CHECK_OPEN_EVERY_S, purge now and then."""
        next_purge = 0.0
        while True:
            if time.monotonic() >= next_purge:
                next_purge = time.monotonic() + PURGE_EVERY_S
                await self._logged(self.purge())
            await asyncio.sleep(CHECK_OPEN_EVERY_S)
            await self._logged(self.recheck())

    async def recheck(self) -> None:
        """Cut the open requests of sessions that were ended elsewhere."""
        watched = [sid for sid in self._watchers.ids() if sid not in self._known]
        if not watched:
            return
        for session_id in await self.store.ended(watched):
            # Its expiry is not known here: the store answers for it again after a purge.
            self._ended(session_id, 0)

    async def purge(self) -> int:
        """Forget the ended sessions past their expiry, in the store and here."""
        now = time.time()
        self._known = {sid: expires for sid, expires in self._known.items() if expires > now}
        removed = await self.store.purge(now=now)
        if removed:
            log.info("forgot %d signed-out sessions past their expiry", removed)
        return removed

    def _ended(self, session_id: str, expires: int) -> None:
        """Note that session `session_id` has ended; cut what it has open here."""
        self._known[session_id] = expires
        if cut := self._watchers.fire(session_id):
            log.info("session signed out: closed its %d open requests", cut)

    @staticmethod
    async def _logged(work: Awaitable[object]) -> None:
        try:
            await work
        except StoreUnavailable as exc:
            log.warning("checking signed-out sessions failed (%s); will try again", exc)
        except Exception:
            log.exception("checking signed-out sessions failed; will try again")
