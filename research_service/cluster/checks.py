"""Whether the settings make a cluster node that can run: checked before anything loads Redis."""

from __future__ import annotations

from research_service.errors import ConfigError
from research_service.settings import Settings


def check_cluster_settings(settings: Settings, *, api: bool = True) -> None:
    """Refuse settings cluster mode cannot run on, saying what to change."""
    if settings.redis_url is None:
        if not settings.execute:
            raise ConfigError(
                "--no-execute makes an API-only node of a cluster; it needs --redis-url "
                "(RESEARCH_REDIS_URL) and --store postgres"
            )
        return
    if settings.store != "postgres":
        raise ConfigError(
            f"--redis-url turns on cluster mode, which keeps runs in PostgreSQL: add --store "
            f"postgres and --database-url (it is --store {settings.store} now), or drop "
            "--redis-url for a single process"
        )
    if api and settings.auth_mode == "keys" and not settings.secret:
        raise ConfigError(
            "cluster mode with --auth keys needs the same RESEARCH_SECRET on every node (a "
            "stream token or session made by one node must open on the others); set it, e.g. "
            "RESEARCH_SECRET=$(openssl rand -hex 32)"
        )
    if not settings.database_url:
        raise ConfigError(
            "cluster mode (--redis-url) needs --database-url (RESEARCH_DATABASE_URL or "
            "DATABASE_URL), e.g. postgresql://postgres@127.0.0.1:5432/research"
        )
