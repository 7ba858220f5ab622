"""Who to tell when a key is revoked or a session ends: callbacks by id, each called once."""

from __future__ import annotations

from collections.abc import Callable


class Watchers:
    """Callbacks waiting on ids (a key's, a session's); an id's all go at once when it ends."""

    __slots__ = ("_by_id",)

    def __init__(self) -> None:
        self._by_id: dict[str, set[Callable[[], None]]] = {}

    def __contains__(self, watched_id: str) -> bool:
        return watched_id in self._by_id

    def ids(self) -> list[str]:
        """The ids watched now."""
        return list(self._by_id)

    def watch(self, watched_id: str, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` once when `watched_id` ends; returns the call that stops it."""
        callbacks = self._by_id.setdefault(watched_id, set())
        callbacks.add(callback)

        def unwatch() -> None:
            callbacks.discard(callback)
            if not callbacks and self._by_id.get(watched_id) is callbacks:
                del self._by_id[watched_id]

        return unwatch

    def fire(self, watched_id: str) -> int:
        """Call (and forget) every callback waiting on `watched_id`; how many there were."""
        callbacks = self._by_id.pop(watched_id, set())
        for callback in callbacks:
            callback()
        return len(callbacks)
