"""What a listener knows of a run, folded from its events: phases, queries, sources, answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from research_service.client.events import RunEvent
from research_service.events import PHASES


@dataclass
class PhaseView:
    """One phase: pending, active, completed, failed or cancelled, with its times."""

    name: str
    state: str = "pending"
    started_ms: int | None = None
    ended_ms: int | None = None

    def duration_ms(self, now_ms: int) -> int | None:
        """How long the phase ran (until `now_ms` while it is active)."""
        if self.started_ms is None:
            return None
        end = self.ended_ms if self.ended_ms is not None else now_ms
        return max(0, end - self.started_ms)


@dataclass
class QueryView:
    """A planned search query and how it went."""

    text: str
    round: int
    state: str = "pending"  # pending, completed, failed
    added: int = 0
    error: str | None = None


@dataclass(frozen=True)
class SourceView:
    """A source the run kept, numbered as the answer cites it."""

    id: int
    title: str
    url: str

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or self.url


@dataclass
class RunView:
    """The state of one run as its events describe it."""

    phases: dict[str, PhaseView] = field(
        default_factory=lambda: {name: PhaseView(name) for name in PHASES}
    )
    queries: list[QueryView] = field(default_factory=list)
    round: int = 0
    round_total: int = 0
    round_completed: int = 0
    sources: list[SourceView] = field(default_factory=list)
    answer_parts: list[str] = field(default_factory=list)
    retrying: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    pages_read: int = 0
    review: dict[str, Any] | None = None  # the plan that waits for a decision now
    decisions: list[dict[str, Any]] = field(default_factory=list)  # each `reviewed`
    error: dict[str, Any] | None = None
    done: dict[str, Any] | None = None
    elapsed_ms: int = 0

    @property
    def answer(self) -> str:
        return "".join(self.answer_parts)

    @property
    def active(self) -> PhaseView | None:
        return next((p for p in self.phases.values() if p.state == "active"), None)

    def source(self, source_id: int) -> SourceView | None:
        return next((s for s in self.sources if s.id == source_id), None)

    def apply(self, event: RunEvent) -> None:
        """Fold one event into the view."""
        data = event.data
        if event.name == "token":
            self.answer_parts.append(str(data.get("text", "")))
            self.retrying = None
        elif event.name == "phase":
            self._phase(data)
        elif event.name == "error":
            self.error = data
        elif event.name == "done":
            self._done(data)

    def _phase(self, data: dict[str, Any]) -> None:
        phase = self.phases.get(str(data.get("phase")))
        if phase is None:
            return
        elapsed = int(data.get("elapsed_ms", self.elapsed_ms))
        self.elapsed_ms = max(self.elapsed_ms, elapsed)
        status = data.get("status")
        if status == "started":
            phase.state, phase.started_ms = "active", elapsed
            if phase.name == "searching":
                self._new_round(int(data.get("round", 1)), int(data.get("total", 0)))
        elif status == "review":
            self.review = data
        elif status == "reviewed":
            self.review = None
            self.decisions.append(data)
        elif status == "completed":
            phase.state, phase.ended_ms = "completed", elapsed
            self.retrying = self.review = None
            if phase.name == "planning":
                self.queries = [QueryView(str(q), 1) for q in data.get("queries", [])]
                if data.get("fallback"):
                    self.notes.append(f"planning fell back to the question: {data['fallback']}")
        elif status == "progress":
            self._progress(data)

    def _new_round(self, number: int, total: int) -> None:
        self.round, self.round_total, self.round_completed = number, total, 0

    def _progress(self, data: dict[str, Any]) -> None:
        if "retrying" in data:
            self.retrying = data["retrying"]
        elif "query" in data:
            self._query_done(data)
        elif "queries" in data:
            queries = [str(q) for q in data["queries"]]
            self._new_round(int(data.get("round", self.round + 1)), len(queries))
            self.queries.extend(QueryView(q, self.round) for q in queries)
        elif "round" in data and "error" in data:
            self.notes.append(f"no follow-up round {data['round']}: {data['error']}")
        elif "page" in data:
            page = data["page"]
            if "error" in page:
                self.notes.append(f"page [{page.get('id')}] not read: {page['error']['message']}")
            else:
                self.pages_read += 1

    def _query_done(self, data: dict[str, Any]) -> None:
        text, number = str(data["query"]), int(data.get("round", self.round))
        query = next(
            (
                q
                for q in self.queries
                if q.text == text and q.round == number and q.state == "pending"
            ),
            None,
        )
        if query is None:
            query = QueryView(text, number)
            self.queries.append(query)
        added = data.get("sources") or []
        query.added = len(added)
        if "error" in data:
            query.state, query.error = "failed", str(data["error"])
        else:
            query.state = "completed"
        self.sources.extend(SourceView(int(s["id"]), str(s["title"]), str(s["url"])) for s in added)
        self.round_completed = int(data.get("completed", self.round_completed + 1))
        self.round_total = int(data.get("total", self.round_total))

    def _done(self, data: dict[str, Any]) -> None:
        self.done = data
        self.retrying = self.review = None
        status = data.get("status")
        timings = data.get("timings_ms") or {}
        self.elapsed_ms = max(self.elapsed_ms, int(timings.get("total", self.elapsed_ms)))
        for phase in self.phases.values():
            if phase.state == "active":
                phase.state = "failed" if status == "failed" else "cancelled"
                phase.ended_ms = self.elapsed_ms
        if data.get("sources"):
            self.sources = [
                SourceView(int(s["id"]), str(s["title"]), str(s["url"])) for s in data["sources"]
            ]
        if isinstance(data.get("answer"), str) and data["answer"] != self.answer:
            # done.answer is the whole answer; it equals the tokens unless some were never seen.
            self.answer_parts = [data["answer"]]
