"""create_app(settings): app state under AppKeys, resources in one cleanup_ctx, routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Final

from aiohttp import web

from research_service.addresses import is_loopback
from research_service.auth import key_file
from research_service.auth.ended_sessions import EndedSessions, MemoryEndedSessions
from research_service.auth.ended_sessions_sqlite import SqliteEndedSessions
from research_service.auth.key_store import SqliteKeys
from research_service.auth.keyring import Keyring
from research_service.auth.secret import load_secret
from research_service.auth.sign_outs import SignOuts
from research_service.auth.tokens import Signer
from research_service.cluster.checks import check_cluster_settings
from research_service.defaults import RETENTION_INTERVAL_S
from research_service.errors import ConfigError, StoreUnavailable
from research_service.pipeline.orchestrator import Pipeline
from research_service.providers.base import LLMProvider, SearchProvider
from research_service.providers.instrumented import CountedLLM, CountedSearch
from research_service.providers.registry import llm_provider, search_provider
from research_service.providers.search_retry import DEFAULT_MAX_WAIT_S as SEARCH_MAX_WAIT_S
from research_service.reading import Reader, open_reader
from research_service.runs import sqlite_log, store_lock
from research_service.runs.endings import end_open_runs
from research_service.runs.log import EventLog, Prunable, StoreMaintenance
from research_service.runs.manager import RunManager
from research_service.runs.memory_log import MemoryEventLog
from research_service.runs.postgres_store import postgres_store
from research_service.runs.sqlite_log import RUN_STORE_FILE
from research_service.settings import Settings
from research_service.stats import Stats
from research_service.web.access import AUTH, Auth, access_middleware
from research_service.web.handlers import setup_routes
from research_service.web.health import ReadinessProbe
from research_service.web.keys import (
    CLUSTER,
    EVENT_LOG,
    LLM,
    MANAGER,
    READER,
    READINESS,
    SEARCH,
    SETTINGS,
    WEBHOOKS,
)
from research_service.web.origin import cors_headers, origin_middleware
from research_service.web.problems import problem_middleware
from research_service.web.protocol import common_headers, connection_middleware
from research_service.web.request_id import request_id_middleware, send_request_id
from research_service.web.turns import turn_middleware
from research_service.web.validation import MAX_BODY_BYTES
from research_service.webhooks.service import open_webhooks

if TYPE_CHECKING:
    from research_service.cluster.node import ClusterNode

log = logging.getLogger(__name__)

#: How long start-up may take to write what it must (ending interrupted runs).
START_WRITE_TIMEOUT_S: Final = 10.0

__all__ = ["RUN_STORE_FILE", "create_app"]


def create_app(
    settings: Settings,
    *,
    llm: LLMProvider | None = None,
    search: SearchProvider | None = None,
    event_log: EventLog | None = None,
    reader: Reader | None = None,
    api: bool = True,
    keys_file: key_file.Checked | None = None,
) -> web.Application:
    """Build the application; providers and the log may be handed in (tests, embedding).

    `api=False` builds a cluster worker's: the same runs and providers, served to nobody.
    `keys_file`: the --api-keys-file as `serve` read and checked it, so it is not read again.

    Serve it with `web.serving` (as `research-service serve` does): guarded connections,
    `handler_cancellation` so a listener that disconnects is released at once, and a
    shutdown bounded by the grace.
    """
    app = web.Application(
        middlewares=[
            request_id_middleware,
            connection_middleware,
            turn_middleware,
            origin_middleware,
            problem_middleware,
            access_middleware,
        ],
        client_max_size=MAX_BODY_BYTES,
    )
    app.on_response_prepare.append(common_headers)
    app.on_response_prepare.append(send_request_id)
    app.on_response_prepare.append(cors_headers)
    app[SETTINGS] = settings

    async def resources(app: web.Application) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            # The run store first: a store another process owns stops start-up before any work.
            _check_settings(settings, api=api)
            node: ClusterNode | None = None
            if settings.redis_url is not None:
                # Cluster mode's modules (and Redis's client) load for a cluster node only.
                from research_service.cluster.node import open_node  # noqa: PLC0415

                node = await open_node(settings, stack)
                app[EVENT_LOG] = node.log
            else:
                app[EVENT_LOG] = (
                    event_log if event_log is not None else await _open_event_log(settings, stack)
                )
            app[LLM] = (
                llm if llm is not None else await stack.enter_async_context(llm_provider(settings))
            )
            app[SEARCH] = (
                search
                if search is not None
                else await stack.enter_async_context(search_provider(settings))
            )
            page_reader = reader
            # Web results are read for their passages; a local corpus already has them, and
            # so do a cassette's hits when they were taped from one (`reads_pages`).
            web = settings.search != "local" and getattr(app[SEARCH], "reads_pages", True)
            if page_reader is None and web and settings.pages_per_run:
                page_reader = await stack.enter_async_context(open_reader(settings))
            if page_reader is not None:
                app[READER] = page_reader
            stats = Stats()  # what GET /metrics reports; the providers count their calls in it
            app[MANAGER] = RunManager(
                log=app[EVENT_LOG],
                pipeline=_pipeline(settings, app[LLM], app[SEARCH], page_reader, stats=stats),
                max_active_runs=settings.max_active_runs,
                max_active_runs_per_owner=settings.max_active_runs_per_owner,
                abandon_after_s=settings.abandon_after_s,
                max_tokens_per_run=settings.max_tokens_per_run,
                run_deadline_s=settings.run_deadline_s,
                review_timeout_s=settings.review_timeout_s,
                coordinator=None if node is None else node.coordinator,
                stats=stats,
            )
            store = app[EVENT_LOG]
            app[WEBHOOKS] = await open_webhooks(settings, store, stack, stats=stats)
            if not api:
                pass  # a worker: it serves no API, so there is nobody to let in
            elif settings.auth_mode == "keys":
                app[AUTH] = await _open_auth(settings, store, stack, keys_file)
            else:
                _warn_if_open(settings)
            await _look_after(store, app[MANAGER], settings, stack)
            if node is not None:
                await node.start(app[MANAGER], api=api)
                app[CLUSTER] = node
            app[READINESS] = ReadinessProbe(
                local={"store": app[EVENT_LOG]}, remote={"llm": app[LLM], "search": app[SEARCH]}
            )
            log.info("research-service ready: llm=%s search=%s", app[LLM].name, app[SEARCH].name)
            yield

    async def finish_runs(app: web.Application) -> None:
        # Runs end with a proper `done` before listeners are closed; a cluster node ends its
        # streams at once instead (clients resume elsewhere) and lets its runs drain.
        if CLUSTER in app:
            await app[CLUSTER].stop(app[MANAGER])
        elif MANAGER in app:
            await app[MANAGER].shutdown()

    app.cleanup_ctx.append(resources)
    app.on_shutdown.append(finish_runs)
    setup_routes(app)
    return app


async def _open_event_log(settings: Settings, stack: AsyncExitStack) -> EventLog:
    """The run store `--store` names, closed (flushed) when the app stops."""
    store: EventLog
    if settings.store == "sqlite":
        path = settings.data_dir / RUN_STORE_FILE
        # Before anything is read or written: only the owner may end runs left open.
        await asyncio.to_thread(stack.enter_context, store_lock.owning(path))
        store = await sqlite_log.open(path)
    elif settings.store == "postgres":
        if not settings.database_url:
            raise ConfigError(
                "--store postgres needs a database: set --database-url (RESEARCH_DATABASE_URL "
                "or DATABASE_URL), e.g. postgresql://postgres@127.0.0.1:5432/research"
            )
        # Loaded here: a process on another store never loads asyncpg.
        from research_service.runs import postgres_log  # noqa: PLC0415

        store = await postgres_log.open(settings.database_url)
    else:
        store = MemoryEventLog()
    stack.push_async_callback(store.close)
    return store


def _check_settings(settings: Settings, *, api: bool) -> None:
    """Refuse settings the service cannot start on, before any store or index is opened."""
    check_cluster_settings(settings, api=api)
    keys_kept = settings.api_keys_file is not None or settings.store == "sqlite"
    if api and settings.auth_mode == "keys" and not keys_kept:
        raise _no_keys(settings)


def _no_keys(settings: Settings) -> ConfigError:
    return ConfigError(
        f"--auth keys needs API keys: with --store {settings.store} they come only from "
        "--api-keys-file (RESEARCH_API_KEYS_FILE); give one, or use --store sqlite and "
        "`research-service keys create NAME`"
    )


async def _open_auth(
    settings: Settings, store: EventLog, stack: AsyncExitStack, checked: key_file.Checked | None
) -> Auth:
    """What --auth keys needs: the keys (run store and keys file) and the signing secret."""
    keys = None
    keys_path = store.keys_path if isinstance(store, StoreMaintenance) else None
    if keys_path is not None:
        keys = await asyncio.to_thread(SqliteKeys, keys_path)
        stack.callback(keys.close)
    elif settings.api_keys_file is None:  # a store handed in that keeps no keys
        raise _no_keys(settings)
    secret = await asyncio.to_thread(load_secret, settings.secret, settings.data_dir)
    keyring = await asyncio.to_thread(
        Keyring, store=keys, file=settings.api_keys_file, id_key=secret, checked=checked
    )
    checker = asyncio.create_task(keyring.run())
    stack.push_async_callback(_stop, checker)
    if (
        keys is not None
        and not await asyncio.to_thread(keys.listing)
        and settings.api_keys_file is None
    ):
        log.warning(
            "auth is on and there are no API keys yet: every request will be refused; "
            "create one with `research-service keys create NAME --admin --data-dir %s`",
            settings.data_dir,
        )
    log.info("auth: API keys from %s", keyring.key_count_hint)
    sign_outs = SignOuts(await _ended_sessions(store, keys_path, stack))
    watcher = asyncio.create_task(sign_outs.run())
    stack.push_async_callback(_stop, watcher)
    return Auth(keyring=keyring, signer=Signer(secret), settings=settings, sign_outs=sign_outs)


async def _ended_sessions(
    store: EventLog, keys_path: Path | None, stack: AsyncExitStack
) -> EndedSessions:
    """Where signed-out sessions are kept: beside the runs, so as long-lived as they are.

    The SQLite run store's file (`keys_path`, where its API keys are too), the PostgreSQL
    database (which every node of a cluster shares), or this process's memory with
    --store memory.
    """
    ended: EndedSessions
    if keys_path is not None:
        ended = await asyncio.to_thread(SqliteEndedSessions, keys_path)
    elif (record := postgres_store(store)) is not None:
        from research_service.auth.ended_sessions_postgres import (  # noqa: PLC0415 - asyncpg
            PostgresEndedSessions,
        )

        ended = PostgresEndedSessions(record.pool)
    else:
        if not isinstance(store, MemoryEventLog):
            log.warning(
                "the run store %s keeps no signed-out sessions: they are kept in memory, "
                "forgotten at a restart and unknown to other processes",
                type(store).__name__,
            )
        ended = MemoryEndedSessions()
    stack.push_async_callback(ended.close)
    return ended


def _warn_if_open(settings: Settings) -> None:
    """Say loudly that anyone who reaches a non-loopback address may use the service."""
    if not is_loopback(settings.host):
        log.warning(
            "AUTH IS OFF on %s: anyone who can reach port %d can read every run and start new "
            "ones; use --auth keys unless only trusted clients can reach it",
            settings.host,
            settings.port,
        )


def _pipeline(
    settings: Settings,
    llm: LLMProvider,
    search: SearchProvider,
    reader: Reader | None,
    *,
    stats: Stats,
) -> Pipeline:
    """The pipeline every run of this app executes, its provider calls counted in `stats`."""
    return Pipeline(
        llm=CountedLLM(llm, stats),
        search=CountedSearch(search, stats),
        search_concurrency=settings.search_concurrency,
        # --search-timeout-s bounds one attempt; a query may take all its attempts.
        search_timeout_s=settings.search_timeout_s * settings.search_attempts
        + SEARCH_MAX_WAIT_S * (settings.search_attempts - 1),
        first_token_timeout_s=settings.llm_first_token_timeout_s,
        token_timeout_s=settings.llm_token_timeout_s,
        reader=reader,
        pages_per_run=settings.pages_per_run,
        context_chars=settings.context_chars,
    )


async def _end_interrupted(manager: RunManager, store: StoreMaintenance) -> None:
    """End the runs a stopped process left open, so their streams finish; or fail start-up.

    They are found along the store's index of the runs not yet ended. Each run's ending is
    bounded by START_WRITE_TIMEOUT_S, so a store that takes no writes fails start-up.
    """
    try:
        records = await store.interrupted_runs()
        message = "the service stopped during the run; ask again"
        for record in records:
            async with asyncio.timeout(START_WRITE_TIMEOUT_S):
                await end_open_runs(manager.log, [record], code="interrupted", message=message)
    except (TimeoutError, StoreUnavailable):
        failure = store.write_failure
        reason = failure.detail if failure is not None else "it did not take writes"
        raise ConfigError(f"cannot end the runs a stopped service left open: {reason}") from None


async def _look_after(
    store: EventLog, manager: RunManager, settings: Settings, stack: AsyncExitStack
) -> None:
    """Keep the run store: its runs left open, and its retention limits until the app stops.

    Only a durable store has runs a stopped process left open; every run store, `--store
    memory` too, deletes finished runs past `--retention-days` and `--retention-runs`.
    """
    if isinstance(store, StoreMaintenance):
        await _end_interrupted(manager, store)
    if isinstance(store, Prunable):
        cleaner = asyncio.create_task(_prune_forever(store, settings))
        stack.push_async_callback(_stop, cleaner)


async def _prune_forever(store: Prunable, settings: Settings) -> None:
    """Delete finished runs past the retention limits now and every RETENTION_INTERVAL_S."""
    while True:
        try:
            removed = await store.prune(
                max_age_s=settings.retention_days * 86400, max_runs=settings.retention_runs
            )
        except StoreUnavailable as exc:
            log.warning("pruning the run store failed (%s); will try again", exc)
        except Exception:
            log.exception("pruning the run store failed; will try again")
        else:
            if removed:
                log.info("deleted %d finished runs past the retention limits", removed)
        await asyncio.sleep(RETENTION_INTERVAL_S)


async def _stop(task: asyncio.Task[None]) -> None:
    """Cancel a background task and wait until it has ended."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
