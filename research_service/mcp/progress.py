"""A run's `phase` events as MCP progress: a count that only grows, and a short message."""

from __future__ import annotations

from typing import Any


def progress_message(data: dict[str, Any]) -> str:
    """What a `phase` event says, in a few words ("searching 2/3: read csv file")."""
    phase, status = data.get("phase", "?"), data.get("status", "?")
    if phase == "searching" and status == "progress":
        if "query" in data:
            done = f"searching {data.get('completed', '?')}/{data.get('total', '?')}"
            if "error" in data:
                return f"{done}: {data['query']} failed ({data['error']})"
            return f"{done}: {data['query']}"
        if "queries" in data:
            return f"searching round {data.get('round', '?')}: " + ", ".join(data["queries"])
    if phase == "planning" and status == "completed" and data.get("queries"):
        return "planned: " + ", ".join(data["queries"])
    if phase == "planning" and status == "review":
        return "waiting for the plan's review: " + ", ".join(data.get("queries", []))
    if phase == "searching" and status == "completed":
        return f"searching done: {data.get('sources', 0)} sources"
    if phase == "synthesizing" and status == "started":
        return f"writing the answer from {data.get('sources', 0)} sources"
    return f"{phase} {status}"
