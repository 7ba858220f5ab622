"""What the MCP tools and resources hand back: the cited answer, as data and as Markdown."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Source(BaseModel):
    """One source the answer cites as `[id]`."""

    id: int
    title: str
    url: str
    snippet: str | None = None


class Research(BaseModel):
    """A run as the tools report it: where it stands, and its cited answer once it ended."""

    run_id: str = Field(description="the run's id (research://runs/{run_id} reads it again)")
    status: str = Field(description="queued, running, completed, failed or cancelled")
    phase: str | None = Field(default=None, description="the phase running now, if any")
    progress: str | None = Field(
        default=None, description='how far a running run is ("searching 2/3")'
    )
    answer: str | None = Field(default=None, description="the answer, citing sources as [n]")
    sources: list[Source] = Field(default_factory=list)
    error: str | None = Field(default=None, description="why the run failed, if it did")
    snapshot_url: str | None = Field(default=None, description="the run on the service's API")
    events_url: str | None = Field(
        default=None, description="the run's event stream (Server-Sent Events) on the service"
    )
    resource: str | None = Field(
        default=None, description="the run as an MCP resource (its answer: add /answer)"
    )

    def model_post_init(self, context: Any, /) -> None:
        """Every result names its run as a resource."""
        if self.resource is None:
            self.resource = f"research://runs/{self.run_id}"


def from_done(run_id: str, done: dict[str, Any], *, snapshot_url: str) -> Research:
    """The result of a run from its `done` event (or a finished snapshot)."""
    error = done.get("error")
    return Research(
        run_id=run_id,
        status=str(done.get("status", "completed")),
        answer=done.get("answer") or "",
        sources=[Source(**_source(s)) for s in done.get("sources") or []],
        error=f"{error.get('code')}: {error.get('message')}" if error else None,
        snapshot_url=snapshot_url,
    )


def from_snapshot(snapshot: dict[str, Any], *, snapshot_url: str) -> Research:
    """A run from its snapshot (`GET /v1/runs/{id}`), finished or not."""
    run_id = str(snapshot["id"])
    status = str(snapshot.get("status", "running"))
    if status in ("completed", "failed", "cancelled"):
        return from_done(run_id, snapshot, snapshot_url=snapshot_url)
    searches = snapshot.get("searches") or {}
    phase = snapshot.get("phase")
    progress = f"{phase} {snapshot.get('phase_status') or ''}".strip() if phase else None
    if phase == "searching" and searches.get("total"):
        progress = f"searching {searches.get('completed', 0)}/{searches['total']}"
    return Research(
        run_id=run_id,
        status=status,
        phase=phase,
        progress=progress,
        sources=[Source(**_source(s)) for s in snapshot.get("sources") or []],
        snapshot_url=snapshot_url,
    )


def markdown(result: Research) -> str:
    """The answer with its numbered sources, as Markdown (what the tool's text block shows)."""
    if result.answer is None:
        where = f", {result.phase}" if result.phase else ""
        return f"Run {result.run_id} is {result.status}{where}; its answer is not written yet."
    lines = [result.answer or "(no answer)"]
    if result.error:
        lines += ["", f"The run {result.status}: {result.error}"]
    if result.sources:
        lines += ["", "Sources:", ""]
        lines += [f"{s.id}. [{s.title}]({s.url})" for s in result.sources]
    return "\n".join(lines)


def _source(data: dict[str, Any]) -> dict[str, Any]:
    return {key: data.get(key) for key in ("id", "title", "url", "snippet") if key in data}
