"""docs/mcp.md's transcript: a real MCP session over stdio, the SDK's client driving
`research-service mcp --server` against the service on the embedded defaults."""

from __future__ import annotations

import json
import sys
from typing import Any, Final

from mcp import Client, StdioServerParameters
from mcp_types import TextContent

from tests import cli_process
from tests.samples.format import Ids, fenced
from tests.samples.service import STREAM_TIMEOUT_S, Env, serving

DOC: Final = "docs/mcp.md"
#: The service's address as the document shows it.
SHOWN_BASE: Final = "http://127.0.0.1:8080"
ASKED: Final = {"question": "How do I read a CSV file?", "breadth": 2, "max_sources": 3}


def _text(result: Any) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent)
    return str(block.text)


async def capture(env: Env) -> dict[str, str]:
    ids = Ids(seed=DOC)
    async with serving(env, env.settings()) as service:
        base = service.url("/").rstrip("/")
        ids.fix(base, SHOWN_BASE)
        params = StdioServerParameters(
            command=sys.executable,
            args=["-m", "research_service", "mcp", "--server", base],
            env=cli_process.child_env(),
        )
        lines: list[str] = []
        async with Client(params, read_timeout_seconds=STREAM_TIMEOUT_S) as mcp:
            tools = (await mcp.list_tools()).tools
            lines.append("→ tools/list")
            lines += [
                f"← {tool.name}: {(tool.description or '').splitlines()[0]}" for tool in tools
            ]
            lines += ["", f"→ tools/call research {json.dumps(ASKED, ensure_ascii=False)}"]

            async def heard(value: float, total: float | None, message: str | None) -> None:
                lines.append(f"← notifications/progress {value:g}: {message}")

            result = await mcp.call_tool("research", ASKED, progress_callback=heard)
            run_id = result.structured_content["run_id"]
            ids.stable(run_id)
            structured = json.dumps(result.structured_content, indent=2, ensure_ascii=False)
            text = _text(result)
            answer = await mcp.read_resource(f"research://runs/{run_id}/answer")
        lines += ["", "← result, structuredContent:", structured]
    return {
        "mcp-session": fenced(ids("\n".join(lines))),
        "mcp-text": fenced(ids(text), "markdown"),
        "mcp-answer-resource": fenced(
            ids(f"→ resources/read research://runs/{run_id}/answer\n{answer.contents[0].text}"),
        ),
    }
