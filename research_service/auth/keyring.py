"""Every usable API key (the run store's and the keys file's), and who is using them now."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final

from research_service.auth import key_file
from research_service.auth.key_store import TOUCH_EVERY_S, SqliteKeys
from research_service.auth.keys import MAX_KEY_CHARS, KeyInfo, StoredKey, digest, key_id_of
from research_service.auth.watchers import Watchers
from research_service.errors import ConfigError
from research_service.own_thread import OwnThread

log = logging.getLogger(__name__)

#: How often open requests' keys are checked for revocation, and the keys file for edits.
RECHECK_S: Final = 2.0


class FileKeys:
    """The keys file's keys, found by the hash of a presented secret and by id.

    The file's keys share one salt (`key_file.parse`): a presented secret is hashed once and
    looked up, whatever the number of keys, and the lookup's time says nothing about them.
    """

    def __init__(self, keys: Iterable[StoredKey]) -> None:
        self._by_digest = {stored.digest: stored for stored in keys}
        self._salt = next(iter(self._by_digest.values())).salt if self._by_digest else b""
        self.by_id: Final = {stored.info.id: stored.info for stored in self._by_digest.values()}

    def find(self, presented: str) -> KeyInfo | None:
        """The file key whose secret `presented` is, or None."""
        if not self._by_digest:
            return None
        stored = self._by_digest.get(digest(self._salt, presented))
        return None if stored is None else stored.info


class Keyring:
    """Authenticates keys; cuts the requests of a key that is revoked while they last.

    A store key is looked up in the store at every authentication, so a revoked key is
    refused at once; requests already going are checked every RECHECK_S.
    """

    def __init__(
        self,
        *,
        store: SqliteKeys | None,
        file: Path | None,
        id_key: bytes,
        checked: key_file.Checked | None = None,
    ) -> None:
        """`checked`: the keys file as already read at start (`serve`), so not read again."""
        self._store = store
        self._file = file
        self._id_key = id_key
        self._file_version: key_file.Version | None = None
        #: The file as it was when it last listed no keys: kept so one check later.
        self._emptied: key_file.Version | None = None
        self._file_keys = FileKeys(())
        self._watchers = Watchers()
        self._touched: dict[str, float] = {}
        # A thread of its own, not asyncio's default executor: every request's key lookup
        # must not queue behind local searches or page reads.
        self._thread = OwnThread("api-keys")
        if file is not None:
            self._load_first(file, checked)

    @property
    def key_count_hint(self) -> str:
        """Where keys come from, for the start-up log."""
        sources = []
        if self._store is not None:
            sources.append(f"the run store {self._store.path}")
        if self._file is not None:
            sources.append(f"{self._file} ({len(self._file_keys.by_id)} keys)")
        return " and ".join(sources)

    async def authenticate(self, presented: str) -> KeyInfo | None:
        """The key `presented` is, or None when it is no usable key."""
        if not presented or len(presented) > MAX_KEY_CHARS:
            return None
        key_id = key_id_of(presented)
        if key_id is not None and self._store is not None:
            stored = await self._thread.call(self._store.find, key_id)
            if stored is not None and stored.matches(presented):
                await self._touch(key_id)
                return stored.info
            # Not the store's: a keys file may list a key of this shape too (one made by
            # `keys create` on another machine), so the file keys are still compared.
        return self._file_keys.find(presented)

    async def usable(self, key_id: str) -> KeyInfo | None:
        """The key with id `key_id` if it is still usable (sessions and stream tokens)."""
        if (info := self._file_keys.by_id.get(key_id)) is not None:
            return info
        if self._store is None or key_id.startswith("file-"):
            return None
        stored_key = await self._thread.call(self._store.find, key_id)
        if stored_key is None:
            return None
        # A session or stream token in use is its key in use.
        await self._touch(key_id)
        return stored_key.info

    async def _touch(self, key_id: str) -> None:
        """Note a store key's use (at most once per TOUCH_EVERY_S: a write per request is waste)."""
        now = time.monotonic()
        if self._store is None or now - self._touched.get(key_id, -TOUCH_EVERY_S) < TOUCH_EVERY_S:
            return
        self._touched[key_id] = now
        await self._thread.call(self._store.touch, key_id)

    def watch(self, key_id: str, on_revoked: Callable[[], None]) -> Callable[[], None]:
        """Call `on_revoked` once if key `key_id` is revoked; returns the call that stops it."""
        return self._watchers.watch(key_id, on_revoked)

    async def run(self) -> None:
        """Check watched keys and the keys file every RECHECK_S, until cancelled."""
        while True:
            await asyncio.sleep(RECHECK_S)
            try:
                await self.recheck()
            except Exception:
                log.exception("checking API keys for revocation failed; will try again")

    async def recheck(self) -> None:
        """Reload an edited keys file; cut what revoked keys still have open."""
        if self._file is not None:
            await self._thread.call(self._reload_file)
        watched = self._watchers.ids()
        if not watched:
            return
        usable = set(self._file_keys.by_id)
        in_store = [key_id for key_id in watched if not key_id.startswith("file-")]
        if in_store and self._store is not None:
            usable |= await self._thread.call(self._store.usable, in_store)
        for key_id in watched:
            if key_id not in usable:
                cut = self._watchers.fire(key_id)
                log.info("key %s was revoked: closed its %d open requests", key_id, cut)

    def _load_first(self, file: Path, checked: key_file.Checked | None) -> None:
        # A file that lists no keys is refused here; later it may be an edit half done.
        first = checked or key_file.check(file, store_keys=self._store is not None)
        keys = key_file.parse(first.text, source=str(file), id_key=self._id_key)
        self._file_version = first.version
        self._file_keys = FileKeys(keys)

    def _load_file(self) -> None:
        assert self._file is not None
        keys, self._file_version = key_file.load(self._file, id_key=self._id_key)
        self._file_keys = FileKeys(keys)

    def _reload_file(self) -> None:
        assert self._file is not None
        try:
            state = key_file.version(self._file.stat())
        except OSError:
            state = None
        if state == self._file_version:
            return
        before = self._file_keys
        try:
            self._load_file()
        except key_file.FileChanging:
            return  # being written: read it at the next check, once the edit is done
        except ConfigError as exc:
            # Keep serving with the keys last read rather than locking everyone out.
            log.warning(
                "the API keys file changed but cannot be used (%s); keeping the old keys", exc
            )
            self._file_version = state
            return
        if before.by_id and not self._file_keys.by_id and self._file_version != self._emptied:
            # An editor that empties the file before writing it again must not cut every
            # stream: the old keys hold until the next check, which applies a file still empty.
            self._emptied, self._file_version = self._file_version, None
            self._file_keys = before
            log.warning(
                "the API keys file %s now lists no keys; keeping the %d keys read before "
                "until the next check (%g s), which revokes them if it is still empty",
                self._file,
                len(before.by_id),
                RECHECK_S,
            )
            return
        self._emptied = None
        log.info("reloaded %d API keys from %s", len(self._file_keys.by_id), self._file)
