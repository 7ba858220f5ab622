"""The terminal display: a live stepper, search progress, sources and the answer, with rich."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.rule import Rule
from rich.spinner import Spinner
from rich.style import Style
from rich.table import Table
from rich.text import Text

from research_service.client.events import RunEvent
from research_service.client.output import printable, printable_event
from research_service.client.text import CITATION, done_line, duration, plural
from research_service.client.view import PhaseView, QueryView, RunView

#: Redraws per second while the run goes on (spinners and clocks move between events).
FRAMES_PER_S = 10
#: Sources listed while searching; the rest are counted.
LIVE_SOURCES = 6
#: Queries listed while searching; the rest are counted.
LIVE_QUERIES = 8
_MARKS = {"completed": ("✓", "green"), "failed": ("✗", "red"), "cancelled": ("■", "yellow")}


class LiveDisplay:
    """Redraws the run's state in place while it runs, then prints the finished report.

    What the run sends is made `printable` as it arrives: text from documents and pages
    cannot act on the terminal, nor break out of a source's hyperlink.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self.view = RunView()
        self.question = ""
        self.run_id = ""
        self._live: Live | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._anchor = (0, time.monotonic())  # (run elapsed ms, when it was seen)
        self._drawn = 0.0
        self._paused = False

    def start(self, *, run_id: str, question: str) -> None:
        """Open the live region and start the frame timer."""
        self.run_id, self.question = run_id, printable(question)
        self._open()

    def pause(self) -> None:
        """Take the live region off the screen while someone types (a plan review)."""
        if self._live is not None:
            self._close()
            self._paused = True

    def resume(self) -> None:
        """Draw the live region again after `pause`."""
        if self._paused:
            self._paused = False
            self._open()

    def _open(self) -> None:
        self._live = Live(
            console=self.console,
            get_renderable=self.frame,
            auto_refresh=False,  # redrawn from the event loop: no thread reads the view
            transient=True,
            redirect_stdout=False,
            redirect_stderr=True,  # reconnect notices print above the live region
        )
        self._live.start()
        self._tick()

    def event(self, event: RunEvent) -> None:
        """Fold the event in; redraw at most FRAMES_PER_S times a second (and on done)."""
        before = self.view.elapsed_ms
        self.view.apply(printable_event(event))
        if self.view.elapsed_ms != before:
            self._anchor = (self.view.elapsed_ms, time.monotonic())
        if event.is_final or time.monotonic() - self._drawn >= 1 / FRAMES_PER_S:
            self._refresh()

    def finish(self) -> None:
        """Close the live region and print the whole report once."""
        self._close()
        self._paused = False
        self.console.print(self.report())

    def _close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._live is not None:
            self._live.stop()
            self._live = None

    def _tick(self) -> None:
        self._refresh()
        self._timer = asyncio.get_running_loop().call_later(1 / FRAMES_PER_S, self._tick)

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.refresh()
            self._drawn = time.monotonic()

    def _now_ms(self) -> int:
        if self.view.done is not None:
            return self.view.elapsed_ms
        elapsed, seen = self._anchor
        return elapsed + int((time.monotonic() - seen) * 1000)

    # --- the live region ---------------------------------------------------------------------

    def frame(self) -> RenderableType:
        """What the live region shows now (rich redraws it from this)."""
        now = self._now_ms()
        parts: list[RenderableType] = [self._heading(), self._stepper(now)]
        writing = self.view.phases["synthesizing"].state != "pending"
        if self.view.review is not None:
            parts += self._review(self.view.review)
        elif not writing:
            parts += self._searching()
        if self.view.retrying:
            retry = self.view.retrying
            parts.append(
                Text(
                    f"retrying: {retry.get('reason')}, attempt {retry.get('attempt')} "
                    f"in {duration(retry.get('wait_ms'))}",
                    style="yellow",
                )
            )
        if writing:
            parts += [Rule("Answer", style="dim"), self._answer_tail(rows_used=len(parts) + 5)]
        return Group(*parts)

    def _heading(self) -> Text:
        heading = Text.assemble(("Question ", "bold"), self.question)
        heading.append(f"  run {self.run_id}", style="dim")
        return heading

    def _stepper(self, now: int) -> Table:
        grid = Table.grid(padding=(0, 1))
        grid.add_column(width=1)
        grid.add_column(min_width=13)
        grid.add_column(justify="right", min_width=7)
        grid.add_column()
        for phase in self.view.phases.values():
            grid.add_row(
                self._mark(phase, now),
                Text(phase.name.capitalize(), style="bold" if phase.state == "active" else ""),
                Text(duration(phase.duration_ms(now)) if phase.started_ms is not None else ""),
                self._phase_detail(phase),
            )
        return grid

    @staticmethod
    def _mark(phase: PhaseView, now: int) -> RenderableType:
        if phase.state == "active":
            return Spinner("dots", style="cyan").render(now / 1000)
        mark, style = _MARKS.get(phase.state, ("·", "dim"))
        return Text(mark, style=style)

    def _phase_detail(self, phase: PhaseView) -> RenderableType:
        view = self.view
        if phase.name == "planning" and view.review is not None:
            return Text(f"waiting for review, round {view.review.get('round')}", style="yellow")
        if phase.name == "planning" and phase.state != "pending":
            planned = plural(len([q for q in view.queries if q.round == 1]), "query")
            if view.decisions:
                planned += f", {view.decisions[-1].get('decision')}"
            return Text(planned, style="dim")
        if phase.name == "searching" and phase.state == "active" and view.round_total:
            bar = Table.grid(padding=(0, 1))
            bar.add_row(
                ProgressBar(total=view.round_total, completed=view.round_completed, width=24),
                Text(f"{view.round_completed}/{view.round_total} queries, round {view.round}"),
            )
            return bar
        if phase.name == "searching" and phase.state != "pending":
            return Text(plural(len(view.sources), "source"), style="dim")
        if phase.name == "synthesizing" and phase.state != "pending":
            return Text(f"{len(view.answer)} characters", style="dim")
        return Text("")

    def _review(self, review: dict[str, Any]) -> list[RenderableType]:
        """The plan that waits for a decision, numbered, and how to give one."""
        parts: list[RenderableType] = [
            Text(f"Plan for review, round {review.get('round')}", style="bold")
        ]
        for number, query in enumerate(review.get("queries") or [], 1):
            line = Text(f"  {number}. {query}")
            line.truncate(self.console.width, overflow="ellipsis")
            parts.append(line)
        parts.append(
            Text(
                f"waiting for a decision: research-service plan {self.run_id} --approve | "
                "--query Q … | --feedback TEXT",
                style="yellow",
            )
        )
        return parts

    def _searching(self) -> list[RenderableType]:
        parts: list[RenderableType] = []
        queries = self.view.queries
        if queries:
            parts.append(Text("Queries", style="bold"))
            parts += [self._query_line(q) for q in queries[-LIVE_QUERIES:]]
            if len(queries) > LIVE_QUERIES:
                parts.append(Text(f"  and {len(queries) - LIVE_QUERIES} more", style="dim"))
        sources = self.view.sources
        if sources:
            parts.append(Text(f"Sources ({len(sources)})", style="bold"))
            for source in sources[-LIVE_SOURCES:]:
                line = Text(f"  [{source.id}] ")
                line.append(source.title, style=Style(link=source.url))
                line.append(f"  {source.host}", style="dim")
                line.truncate(self.console.width, overflow="ellipsis")
                parts.append(line)
        return parts

    def _query_line(self, query: QueryView) -> Text:
        mark, style = _MARKS.get(query.state, ("…", "cyan"))
        line = Text(f"  {mark} ", style=style)
        line.append(query.text)
        if query.state == "completed":
            line.append(f"  +{query.added}", style="dim")
        elif query.error:
            line.append(f"  {query.error}", style="red")
        line.truncate(self.console.width, overflow="ellipsis")
        return line

    def _answer_tail(self, *, rows_used: int) -> Text:
        """The answer's last lines that fit under the rest of the live region."""
        room = max(3, self.console.height - rows_used)
        lines = Text(self.view.answer).wrap(self.console, self.console.width)
        return Text("\n").join(lines[-room:]) if len(lines) > room else Text("\n").join(lines)

    # --- the report ----------------------------------------------------------------------------

    def report(self) -> RenderableType:
        """The finished run: question, phases, the answer with linked citations, sources."""
        now = self._now_ms()
        steps = Text()
        for phase in self.view.phases.values():
            mark, style = _MARKS.get(phase.state, ("·", "dim"))
            steps.append(f"{mark} ", style=style)
            steps.append(f"{phase.name.capitalize()} {duration(phase.duration_ms(now))}   ")
        parts: list[RenderableType] = [self._heading(), steps, Text("")]
        if self.view.answer:
            parts += [self.answer_text(), Text("")]
        if self.view.sources:
            parts.append(Text("Sources", style="bold"))
            for source in self.view.sources:
                line = Text(f"[{source.id}] ", style="bold")
                line.append(source.title, style=Style(link=source.url))
                line.append("\n    ")
                line.append(source.url, style=Style(link=source.url, color="blue"))
                parts.append(line)
            parts.append(Text(""))
        done = self.view.done
        if done is not None:
            style = {"completed": "green", "failed": "red"}.get(str(done.get("status")), "yellow")
            parts.append(Text(done_line(done), style=style))
        else:
            parts.append(Text("stopped listening before the run ended", style="yellow"))
        return Group(*parts)

    def answer_text(self) -> Text:
        """The answer with each `[n]` styled and linked to source n's URL."""
        text = Text(self.view.answer)
        for match in CITATION.finditer(text.plain):
            ids = [int(n) for n in match.group(1).split(",")]
            source = self.view.source(ids[0])
            link = source.url if source is not None else None
            text.stylize(Style(color="cyan", link=link), match.start(), match.end())
        return text
