"""The MCP server's lists: its resources with the service's recent runs, and its prompts' checks."""

from __future__ import annotations

import logging
from typing import Any, Final

import aiohttp
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, Resource

from research_service.client.api import ServiceClient
from research_service.errors import ClientError
from research_service.mcp.callers import CALLER

log = logging.getLogger(__name__)

#: How many of the newest runs `resources/list` names.
RECENT_RUNS: Final = 20


class RecentRunsServer(MCPServer):
    """An MCPServer whose `resources/list` also names the service's newest runs.

    Each run is listed twice, as research://runs/{id} (its snapshot) and
    research://runs/{id}/answer (its answer in Markdown). The list is the one the caller's
    key may see (the `Authorization: Bearer` it sent over Streamable HTTP), else the server's
    own (--api-key); a service that refuses it lists none, and says why in the log.

    A `prompts/get` of a prompt it does not have, or without a required argument, is refused
    as invalid params naming what is wrong, before the SDK would fail it with code 0 and an
    ERROR traceback in the log.
    """

    def __init__(self, api: ServiceClient, **settings: Any) -> None:
        super().__init__(**settings)
        self._api = api

    async def list_resources(self) -> list[Resource]:
        """The static resources (none) and the recent runs'."""
        listed = await super().list_resources()
        try:
            caller = CALLER.get()
            api = (
                self._api
                if caller is None or caller.key is None
                else self._api.with_key(caller.key)
            )
            runs = await api.runs(limit=RECENT_RUNS)
        except (ClientError, aiohttp.ClientError) as exc:
            log.warning("resources/list names no runs: %s", exc)
            return listed
        for run in runs:
            run_id, question = str(run.get("id")), str(run.get("question", ""))
            status = str(run.get("status", ""))
            listed += [
                Resource(
                    uri=f"research://runs/{run_id}",
                    name=f"run {run_id}",
                    title=question[:80],
                    description=f"{status}: {question}",
                    mime_type="application/json",
                ),
                Resource(
                    uri=f"research://runs/{run_id}/answer",
                    name=f"answer {run_id}",
                    title=f"Answer: {question[:72]}",
                    description=f"the answer of run {run_id} ({status}), in Markdown",
                    mime_type="text/markdown",
                ),
            ]
        return listed

    async def get_prompt(
        self, name: str, arguments: dict[str, Any] | None = None, context: Any = None
    ) -> Any:
        """The prompt, once its name and required arguments are known to be there."""
        prompts = {prompt.name: prompt for prompt in await self.list_prompts()}
        if name not in prompts:
            known = ", ".join(sorted(prompts))
            raise MCPError(INVALID_PARAMS, f"no prompt named {name!r}; the prompts: {known}")
        given = arguments or {}
        missing = [
            argument.name
            for argument in prompts[name].arguments or []
            if argument.required and argument.name not in given
        ]
        if missing:
            raise MCPError(
                INVALID_PARAMS, f"prompt {name!r} needs its argument(s): {', '.join(missing)}"
            )
        return await super().get_prompt(name, arguments, context)
