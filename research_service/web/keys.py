"""Typed application keys: every piece of app state, declared in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from research_service.providers.base import LLMProvider, SearchProvider
from research_service.runs.log import EventLog
from research_service.runs.manager import RunManager
from research_service.settings import Settings

if TYPE_CHECKING:
    # Typing only: the page reader's modules (trafilatura) load when a reader is opened.
    from research_service.cluster.node import ClusterNode
    from research_service.reading import Reader
    from research_service.web.health import ReadinessProbe
    from research_service.webhooks.service import Webhooks

SETTINGS = web.AppKey("settings", Settings)
EVENT_LOG = web.AppKey("event_log", EventLog)
LLM = web.AppKey("llm", LLMProvider)
SEARCH = web.AppKey("search", SearchProvider)
MANAGER = web.AppKey("manager", RunManager)
READER: web.AppKey[Reader] = web.AppKey("reader")
READINESS: web.AppKey[ReadinessProbe] = web.AppKey("readiness")
#: This process's part in a cluster (with --redis-url only).
CLUSTER: web.AppKey[ClusterNode] = web.AppKey("cluster")
#: Completion webhooks: deliveries made with runs and sent when they end.
WEBHOOKS: web.AppKey[Webhooks] = web.AppKey("webhooks")
