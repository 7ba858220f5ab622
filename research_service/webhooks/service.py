"""The webhooks of one app: where a run's deliveries are made, kept and sent from."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Final

from research_service.auth.secret import load_secret
from research_service.errors import ConfigError, InvalidInput
from research_service.reading.addresses import AllowList
from research_service.records import RunRecord
from research_service.runs.log import EventLog
from research_service.runs.memory_log import MemoryEventLog
from research_service.runs.postgres_store import postgres_store
from research_service.runs.sqlite_log import SqliteEventLog
from research_service.settings import Settings
from research_service.stats import Stats
from research_service.webhooks.dispatcher import Dispatcher
from research_service.webhooks.memory_outbox import MemoryOutbox
from research_service.webhooks.outbox import Delivery, Outbox, new_delivery_id
from research_service.webhooks.signing import SERVER_SCOPE, Signer, key_scope
from research_service.webhooks.sql_outbox import SqliteOutbox
from research_service.webhooks.target import check_reachable, webhook_url

#: The field a refused --webhook-url is reported under.
SERVER_FIELD: Final = "--webhook-url"


class Webhooks:
    """Makes a new run's deliveries and shows a run's; its dispatcher sends them."""

    def __init__(self, settings: Settings, outbox: Outbox, dispatcher: Dispatcher) -> None:
        self.settings = settings
        self.outbox = outbox
        self.dispatcher = dispatcher
        self.allow = AllowList.parse(settings.fetch_allow)

    async def check(self, url: str) -> None:
        """Refuse (400) a run's webhook URL the SSRF guard refuses."""
        await check_reachable(url, allow=self.allow)

    async def add(
        self, record: RunRecord, *, url: str | None, owner: str | None, base_url: str
    ) -> list[Delivery]:
        """Keep the deliveries `record`'s end owes: its own URL's, and --webhook-url's."""
        deliveries = []
        if url is not None:
            scope = SERVER_SCOPE if owner is None else key_scope(owner)
            deliveries.append(Delivery(new_delivery_id(), record.id, url, scope, base_url))
        if self.settings.webhook_url is not None:
            deliveries.append(
                Delivery(
                    new_delivery_id(), record.id, self.settings.webhook_url, SERVER_SCOPE, base_url
                )
            )
        if deliveries:
            await self.outbox.add(deliveries)
            self.dispatcher.nudge()
        return deliveries


async def _check_server_url(settings: Settings) -> None:
    assert settings.webhook_url is not None
    try:
        url = webhook_url({"url": settings.webhook_url})
        await check_reachable(url, allow=AllowList.parse(settings.fetch_allow), field=SERVER_FIELD)
    except InvalidInput as exc:
        raise ConfigError(str(exc).replace("options.webhook.url", SERVER_FIELD)) from None


async def outbox_for(store: EventLog) -> tuple[Outbox, bool]:
    """The outbox beside `store`, and whether this process is its only sender."""
    inner = getattr(store, "store", store)  # a cluster node's log wraps the PostgreSQL one
    if isinstance(inner, SqliteEventLog):
        return await asyncio.to_thread(SqliteOutbox, inner.path), True
    if (postgres := postgres_store(store)) is not None:
        # Its own module: only a PostgreSQL store loads asyncpg.
        from research_service.webhooks.postgres_outbox import PostgresOutbox  # noqa: PLC0415

        return PostgresOutbox(postgres.pool), postgres is store
    if isinstance(inner, MemoryEventLog):
        return MemoryOutbox(inner), True
    return MemoryOutbox(), True  # another store: every run counts as ended, the dispatcher checks


async def open_webhooks(
    settings: Settings, store: EventLog, stack: AsyncExitStack, *, stats: Stats
) -> Webhooks:
    """The app's webhooks, sending until the stack closes."""
    if settings.webhook_url is not None:
        await _check_server_url(settings)
    outbox, sole = await outbox_for(store)
    signer = Signer(
        signing_secret=lambda: load_secret(settings.secret, settings.data_dir),
        configured=settings.webhook_secret,
    )
    dispatcher = Dispatcher(
        outbox=outbox,
        runs=store,
        signer=signer,
        allow=AllowList.parse(settings.fetch_allow),
        retry_s=settings.webhook_retry_s,
        stats=stats,
    )
    close = getattr(outbox, "close", None)
    if close is not None:
        stack.push_async_callback(close)
    await dispatcher.start(sole_sender=sole)
    stack.push_async_callback(dispatcher.close)
    return Webhooks(settings, outbox, dispatcher)
