"""The displays for a pipe or a file: a plain-text transcript, or JSON Lines."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from research_service.client.events import RunEvent
from research_service.client.output import Writer, json_line, printable
from research_service.client.text import (
    done_line,
    duration,
    plural,
    query_result,
    review_outcome,
    reviewed_line,
)
from research_service.client.view import RunView


class JsonLines:
    """One JSON object per event per line (`{"id", "event", "data"}`), nothing else."""

    def __init__(self, out: Writer) -> None:
        self.out = out

    def start(self, *, run_id: str, question: str) -> None:
        """Nothing: stdout carries events only."""

    def event(self, event: RunEvent) -> None:
        """Write the event's line and flush it, so `jq` sees it at once."""
        self.out.write(json_line(event.to_json()) + "\n")
        self.out.flush()

    def finish(self) -> None:
        """Nothing left to write."""

    def pause(self) -> None:
        """Nothing: each line is written whole."""

    def resume(self) -> None:
        """Nothing: each line is written whole."""


class PlainText:
    """A transcript: one line per step, the answer streamed as it is written, then sources.

    With `quiet`, only the answer and the sources are written, and a run that did not
    complete is said through `notify` (stderr): its status and error. Everything is written
    `printable`: text from documents and pages cannot act on the terminal.
    """

    def __init__(
        self, out: Writer, *, quiet: bool = False, notify: Callable[[str], None] | None = None
    ) -> None:
        self.out = out
        self.quiet = quiet
        self.notify = notify
        self.view = RunView()
        self._in_answer = False

    def start(self, *, run_id: str, question: str) -> None:
        """Name the run and its question."""
        self._line(f"run {run_id}: {question}")

    def event(self, event: RunEvent) -> None:
        """Write what the event changed and flush, so a pipe's reader sees it live."""
        self.view.apply(event)
        if event.name == "token":
            self._write(str(event.data.get("text", "")))
        else:
            self._end_answer()
            if event.name == "phase":
                self._phase(event.data)
            elif event.name == "error":
                self._line(f"[error] {event.data.get('code')}: {event.data.get('message')}")
        self.out.flush()

    def finish(self) -> None:
        """Write the sources and the summary once the run is done."""
        self._end_answer()
        done = self.view.done
        if done is None:
            self.out.flush()
            return
        if self.view.sources:
            self._write("\nSources:\n")
            for source in self.view.sources:
                self._write(f"  [{source.id}] {source.title}\n      {source.url}\n")
        self._line(f"\ndone: {done_line(done)}")
        self.out.flush()
        if self.quiet and self.notify is not None and done.get("status") != "completed":
            self.notify(f"the run ended {done_line(done)}")

    def pause(self) -> None:
        """Nothing: each line is written whole."""

    def resume(self) -> None:
        """Nothing: each line is written whole."""

    def _end_answer(self) -> None:
        if self._in_answer:
            self._write("\n\n" if self.view.answer else "\n")
            self._in_answer = False

    def _write(self, text: str) -> None:
        self.out.write(printable(text))

    def _line(self, text: str) -> None:
        if not self.quiet:
            self._write(text + "\n")

    def _phase(self, data: dict[str, Any]) -> None:
        name, status = data.get("phase"), data.get("status")
        tag = f"[{name}]"
        if status == "started":
            if name == "searching":
                self._line(f"{tag} round {data.get('round', 1)}: {plural(data['total'], 'query')}")
            elif name == "synthesizing":
                self._line(f"{tag} writing the answer from {plural(data['sources'], 'source')}\n")
                self._in_answer = True
            else:
                self._line(f"{tag} started")
        elif status == "completed":
            self._completed(tag, data)
        elif status == "review":
            self._line(
                f"{tag} plan for review, round {data.get('round')}: "
                + " | ".join(f"{n}. {q}" for n, q in enumerate(data.get("queries") or [], 1))
            )
        elif status == "reviewed":
            self._line(f"{tag} {reviewed_line(data)}")
        elif "retrying" in data:
            retry = data["retrying"]
            self._line(
                f"{tag} retrying ({retry.get('reason')}): attempt {retry.get('attempt')} "
                f"in {duration(retry.get('wait_ms'))}"
            )
            self._in_answer = name == "synthesizing"
        elif "query" in data:
            self._line(
                f"{tag} {data.get('completed')}/{data.get('total')} {data['query']}: "
                f"{query_result(data)}"
            )
            for source in data.get("sources") or []:
                self._line(f"  [{source['id']}] {source['title']} <{source['url']}>")
        elif "queries" in data:
            self._line(f"{tag} round {data.get('round')}: " + " | ".join(data["queries"]))
        elif "page" in data:
            page = data["page"]
            result = page["error"]["message"] if "error" in page else f"{page.get('chars')} chars"
            self._line(f"{tag} page [{page.get('id')}] {page.get('url')}: {result}")
        elif "error" in data:
            self._line(f"{tag} no round {data.get('round')}: {data['error']}")

    def _completed(self, tag: str, data: dict[str, Any]) -> None:
        name = data.get("phase")
        took = self.view.phases[str(name)].duration_ms(self.view.elapsed_ms)
        if name == "planning":
            queries = data.get("queries") or []
            self._line(f"{tag} {plural(len(queries), 'query')}: " + " | ".join(queries))
            if data.get("review"):
                self._line(f"{tag} {review_outcome(data['review'])}")
            if data.get("fallback"):
                self._line(f"{tag} fell back to searching the question: {data['fallback']}")
        elif name == "searching":
            self._line(
                f"{tag} {plural(data['sources'], 'source')} in "
                f"{plural(data.get('rounds', 1), 'round')} ({duration(took)})"
            )
        else:
            truncated = ", stopped at the token budget" if data.get("truncated") else ""
            self._line(f"{tag} completed ({duration(took)}{truncated})")
