"""A run's current state, folded from its events; the source of snapshots and `done`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from research_service.events import PHASES, Event
from research_service.pipeline.review import AWAITING_PLAN_REVIEW
from research_service.runs.models import RunRecord


@dataclass(slots=True)
class RunState:
    """Everything a snapshot shows, rebuilt by applying events in order."""

    status: str = "queued"
    phase: str | None = None
    phase_status: str | None = None
    plan: list[str] = field(default_factory=list)
    sources: list[dict[str, Any]] = field(default_factory=list)
    searches_completed: int = 0
    searches_total: int = 0
    answer_parts: list[str] = field(default_factory=list)
    final_answer: str | None = None
    error: dict[str, Any] | None = None
    started_ms: dict[str, int] = field(default_factory=dict)
    completed_ms: dict[str, int] = field(default_factory=dict)
    total_ms: int | None = None
    usage: dict[str, Any] | None = None
    truncated: bool = False
    last_t_ms: int = 0
    event_count: int = 0
    #: What the run waits for now ("plan_review"), and the review it waits on.
    awaiting: str | None = None
    review: dict[str, Any] | None = None

    @classmethod
    def fold(cls, events: Sequence[Event]) -> RunState:
        """The state after applying `events` in order."""
        state = cls()
        # A finished run's done holds the whole answer: its tokens need not be decoded.
        finished = bool(events) and events[-1].is_final
        for event in events:
            if finished and event.name == "token":
                state.event_count, state.last_t_ms = event.seq, event.t_ms
                continue
            state.apply(event)
        return state

    @property
    def finished(self) -> bool:
        """True once `done` has been applied."""
        return self.total_ms is not None

    @property
    def answer(self) -> str:
        """The final answer, or the answer written so far."""
        if self.final_answer is not None:
            return self.final_answer
        return "".join(self.answer_parts)

    def apply(self, event: Event, data: dict[str, Any] | None = None) -> None:
        """Update the state with one event (`data`: its payload, when the caller has it)."""
        self.event_count = event.seq
        self.last_t_ms = event.t_ms
        if data is None:
            data = event.data
        if event.name == "token":  # by far the most frequent: first
            self.answer_parts.append(data["text"])
        elif event.name == "phase":
            self._apply_phase(data)
        elif event.name == "error":
            self.error = {"code": data.get("code"), "message": data.get("message")}
        elif event.name == "done":
            self.status = str(data["status"])
            self.final_answer = str(data["answer"])
            self.answer_parts = []
            self.sources = list(data.get("sources", self.sources))
            self.error = data.get("error")
            self.total_ms = int(data["timings_ms"].get("total", event.t_ms))
            self.usage = data.get("usage")
            self.truncated = bool(data.get("truncated", False))
            # An ended run waits for nothing, however it ended (cancelled mid-review too).
            self.awaiting = self.review = None

    def _apply_phase(self, data: dict[str, Any]) -> None:
        self.status = "running"
        phase = str(data["phase"])
        status = str(data["status"])
        self.phase, self.phase_status = phase, status
        elapsed = int(data.get("elapsed_ms", 0))
        if status == "started":
            self.started_ms.setdefault(phase, elapsed)
        elif status == "completed":
            self.completed_ms[phase] = elapsed
        if phase == "planning" and status == "review":
            self.plan = [str(q) for q in data.get("queries", [])]
            self.awaiting = AWAITING_PLAN_REVIEW
            self.review = {
                key: data[key]
                for key in (
                    "round",
                    "queries",
                    "review_url",
                    "expires_in_s",
                    "expires_at",
                    "feedback_allowed",
                )
                if key in data
            }
            self.review["since_ms"] = elapsed
        elif phase == "planning" and status in ("reviewed", "completed"):
            self.awaiting = self.review = None
        if phase == "planning" and status == "completed":
            self.plan = [str(q) for q in data.get("queries", [])]
            self.searches_total = len(self.plan)
        if phase == "searching" and status == "progress":
            if "queries" in data:  # a follow-up round's queries: the plan grows
                self.plan.extend(str(q) for q in data["queries"])
                self.searches_total += len(data["queries"])
            if "query" in data:
                self.searches_completed += 1
                self.sources.extend(data.get("sources", []))

    def timings(self, *, now_ms: int) -> dict[str, int]:
        """Milliseconds spent in each phase (a phase cut short counts until `now_ms`)."""
        result: dict[str, int] = {}
        for phase in PHASES:
            start = self.started_ms.get(phase)
            if start is None:
                result[phase] = 0
                continue
            end = self.completed_ms.get(phase, now_ms)
            result[phase] = max(0, end - start)
        result["total"] = self.total_ms if self.total_ms is not None else now_ms
        return result

    def snapshot(self, record: RunRecord, *, now_ms: int | None = None) -> dict[str, Any]:
        """The JSON body of `GET /v1/runs/{id}`."""
        clock = self.last_t_ms if now_ms is None or self.finished else now_ms
        return {
            "id": record.id,
            "status": self.status,
            "question": record.question,
            "options": record.options.to_dict(),
            "created_at": record.created_iso,
            "phase": self.phase,
            "phase_status": self.phase_status,
            "plan": self.plan,
            "searches": {"completed": self.searches_completed, "total": self.searches_total},
            "sources": self.sources,
            "answer": self.answer,
            "error": self.error,
            "timings_ms": self.timings(now_ms=clock),
            "usage": self.usage,
            "truncated": self.truncated,
            "event_count": self.event_count,
            "events_url": f"/v1/runs/{record.id}/events",
            "awaiting": self.awaiting,
            "review": self._review_now(clock),
        }

    def _review_now(self, now_ms: int) -> dict[str, Any] | None:
        """The review the run waits on, with the seconds left to decide as of `now_ms`."""
        if self.review is None:
            return None
        shown = {k: v for k, v in self.review.items() if k != "since_ms"}
        if "expires_in_s" in shown:
            waited_s = (now_ms - int(self.review["since_ms"])) / 1000
            shown["expires_in_s"] = max(0, round(float(shown["expires_in_s"]) - waited_s))
        return shown
