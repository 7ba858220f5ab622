"""The Redis connection of a cluster node, the names of its keys, and Redis failures in words."""

from __future__ import annotations

import logging
import os
import secrets
import socket
from dataclasses import dataclass
from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from research_service.addresses import redact_url as redact
from research_service.errors import ClusterUnavailable, ConfigError

log = logging.getLogger(__name__)

#: Every failure of a call to Redis: its errors, a lost connection, a timeout.
ERRORS: Final = (RedisError, OSError, TimeoutError)
CONNECT_TIMEOUT_S: Final = 5.0
#: Longest one command may take (blocking reads add their own block time).
COMMAND_TIMEOUT_S: Final = 10.0
#: A request refused because Redis did not answer may succeed after this long.
RETRY_AFTER_S: Final = 2


@dataclass(frozen=True, slots=True)
class Keys:
    """The names of a cluster's Redis keys, all under one prefix (one cluster per prefix)."""

    prefix: str

    @property
    def queue(self) -> str:
        """The Stream of runs waiting for an executor (consumer group `GROUP`)."""
        return f"{self.prefix}queue"

    @property
    def active(self) -> str:
        """Sorted set of active runs (score: when the entry lapses unless refreshed)."""
        return f"{self.prefix}active"

    def owner_active(self, owner: str) -> str:
        """Sorted set of one owner's active runs (--max-active-runs-per-owner), as `active`."""
        return f"{self.prefix}owner:{owner}:active"

    @property
    def cancels(self) -> str:
        """Pub/sub channel of cancel requests."""
        return f"{self.prefix}cancels"

    def events(self, run_id: str) -> str:
        """A run's live window: its recent events, entry id `<seq>-0`."""
        return f"{self.prefix}run:{run_id}:events"

    def listeners(self, run_id: str) -> str:
        """Hash: node id → `count expiry_ms`, the run's listeners on each other node."""
        return f"{self.prefix}run:{run_id}:listeners"

    @property
    def reviews(self) -> str:
        """Pub/sub channel of plan review decisions."""
        return f"{self.prefix}reviews"

    def review(self, run_id: str, round_number: int) -> str:
        """The decision taken on a run's plan in a round (set once: the first one wins)."""
        return f"{self.prefix}run:{run_id}:review:{round_number}"

    def cancel(self, run_id: str) -> str:
        """A run's cancel request, kept until its executor sees it (`code` NUL `message`)."""
        return f"{self.prefix}run:{run_id}:cancel"

    def node(self, node_id: str) -> str:
        """A node's heartbeat: present while the process is alive."""
        return f"{self.prefix}node:{node_id}"


#: The consumer group of the executors on the queue.
GROUP: Final = "executors"


def node_id() -> str:
    """A name for this process, unique in the cluster: host, pid and a random part."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def client(url: str, **options: Any) -> aioredis.Redis:
    """A client (a connection pool) for the Redis at `url`."""
    return aioredis.Redis.from_url(
        url,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=options.pop("socket_timeout", COMMAND_TIMEOUT_S),
        health_check_interval=30,
        **options,
    )


async def connect(url: str) -> aioredis.Redis:
    """A client for `url` that has answered a PING; ConfigError when it does not."""
    try:
        redis = client(url)
    except ValueError as exc:
        raise ConfigError(f"--redis-url {redact(url)!r} is not a Redis URL ({exc})") from None
    try:
        await redis.ping()
    except ERRORS as exc:
        await redis.aclose()
        raise ConfigError(
            f"cannot reach Redis at {redact(url)} ({exc}); check --redis-url "
            "(RESEARCH_REDIS_URL) and that the server is up"
        ) from None
    return redis


def unavailable(exc: BaseException) -> ClusterUnavailable:
    """The error a request gets when a call to Redis fails with `exc`."""
    reason = "it does not answer" if isinstance(exc, RedisConnectionError) else str(exc)
    return ClusterUnavailable(
        f"the cluster's Redis failed ({reason})",
        retry_after=RETRY_AFTER_S,
    )


async def server_life(redis: aioredis.Redis) -> tuple[str, float]:
    """The Redis server's run id and how long it has been up.

    A restart forgets what it had not persisted: heartbeats, queue entries, live windows.
    """
    info = await redis.info("server")
    return str(info["run_id"]), float(info["uptime_in_seconds"])
