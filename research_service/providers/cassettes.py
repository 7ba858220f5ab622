"""Provider cassettes: record every model and search exchange of a run, and replay them."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Final

from research_service.errors import ConfigError, LLMError, SearchError
from research_service.providers.base import (
    LLMProvider,
    Plan,
    Reporter,
    SearchHit,
    SearchProvider,
    Source,
    Usage,
)

CASSETTE_FILE: Final = "cassette.jsonl"
REPLAY_NAME: Final = "replay"
# Appends from the LLM and the search recorder of one process go through this one lock,
# so their lines never interleave.
_FILE_LOCK: Final = threading.Lock()


def request_key(kind: str, request: dict[str, Any]) -> str:
    """The stable key of a request: sha256 of the canonical JSON of (kind, request)."""
    canonical = json.dumps([kind, request], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def describe(kind: str, request: dict[str, Any]) -> str:
    """A request as a readable call, e.g. search('query text', limit=8)."""
    args = dict(request)
    first = repr(args.pop("question", args.pop("query", "")))
    if "sources" in args:
        args["sources"] = len(args["sources"])
    rest = "".join(f", {name}={value!r}" for name, value in args.items())
    return f"{kind}({first}{rest})"


def _sources(sources: Sequence[Source]) -> list[dict[str, object]]:
    return [source.full() for source in sources]


def _plan_request(question: str, breadth: int) -> dict[str, Any]:
    return {"question": question, "breadth": breadth}


def _follow_up_request(
    question: str, sources: Sequence[Source], asked: Sequence[str], breadth: int
) -> dict[str, Any]:
    return {
        "question": question,
        "sources": [source.brief() for source in sources],
        "asked": list(asked),
        "breadth": breadth,
    }


def _synthesize_request(
    question: str, sources: Sequence[Source], max_tokens: int | None
) -> dict[str, Any]:
    return {"question": question, "sources": _sources(sources), "max_tokens": max_tokens}


class CassetteWriter:
    """Appends exchanges to `DIR/cassette.jsonl`, one JSON object a line."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / CASSETTE_FILE

    async def append(self, kind: str, request: dict[str, Any], response: Any) -> None:
        """Record one exchange; the file write runs off the event loop."""
        line = json.dumps(
            {
                "kind": kind,
                "key": request_key(kind, request),
                "request": request,
                "response": response,
            },
            ensure_ascii=False,
        )
        await asyncio.to_thread(self._write, line)

    def _write(self, line: str) -> None:
        with _FILE_LOCK:
            self.folder.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as out:
                out.write(line + "\n")


class _UsageTap:
    """A Reporter that passes everything on and keeps the usage it saw, for the cassette."""

    def __init__(self, inner: Reporter) -> None:
        self.inner = inner
        self.seen: list[list[int | bool]] = []

    async def retrying(self, *, attempt: int, wait_ms: int, reason: str) -> None:
        await self.inner.retrying(attempt=attempt, wait_ms=wait_ms, reason=reason)

    def usage(self, usage: Usage, *, estimated: bool = False) -> None:
        self.seen.append([usage.prompt_tokens, usage.completion_tokens, estimated])
        self.inner.usage(usage, estimated=estimated)


def _report_usage(report: Reporter, recorded: list[list[Any]]) -> None:
    for prompt, completion, estimated in recorded:
        report.usage(Usage(int(prompt), int(completion)), estimated=bool(estimated))


class RecordingLLM:
    """Delegates to a real model and records each successful exchange."""

    def __init__(self, inner: LLMProvider, writer: CassetteWriter) -> None:
        self.inner = inner
        self.writer = writer
        self.name = inner.name

    async def plan(self, question: str, *, breadth: int, report: Reporter) -> Plan:
        tap = _UsageTap(report)
        plan = await self.inner.plan(question, breadth=breadth, report=tap)
        response = {"queries": plan.queries, "fallback": plan.fallback, "usage": tap.seen}
        await self.writer.append("plan", _plan_request(question, breadth), response)
        return plan

    async def follow_up(
        self,
        question: str,
        sources: Sequence[Source],
        *,
        asked: Sequence[str],
        breadth: int,
        report: Reporter,
    ) -> list[str]:
        tap = _UsageTap(report)
        queries = await self.inner.follow_up(
            question, sources, asked=asked, breadth=breadth, report=tap
        )
        request = _follow_up_request(question, sources, asked, breadth)
        await self.writer.append("follow_up", request, {"queries": queries, "usage": tap.seen})
        return queries

    async def synthesize(
        self,
        question: str,
        sources: Sequence[Source],
        *,
        report: Reporter,
        max_tokens: int | None = None,
    ) -> AsyncIterator[str]:
        tap = _UsageTap(report)
        pieces: list[str] = []
        stream = self.inner.synthesize(question, sources, report=tap, max_tokens=max_tokens)
        finished = False
        try:
            async for piece in stream:
                pieces.append(piece)
                yield piece
            finished = True
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
        # Only a whole answer is recorded: a cut-off stream is not a reusable answer.
        if finished:
            request = _synthesize_request(question, sources, max_tokens)
            await self.writer.append("synthesize", request, {"pieces": pieces, "usage": tap.seen})


class RecordingSearch:
    """Delegates to a real search provider and records each successful exchange."""

    def __init__(self, inner: SearchProvider, writer: CassetteWriter) -> None:
        self.inner = inner
        self.writer = writer
        self.name = inner.name

    async def search(self, query: str, *, limit: int) -> list[SearchHit]:
        hits = await self.inner.search(query, limit=limit)
        response = [asdict(hit) for hit in hits]
        await self.writer.append("search", {"query": query, "limit": limit}, response)
        return hits


class Cassette:
    """The recorded exchanges of a cassette folder, answered by request key."""

    def __init__(self, folder: Path, answers: dict[str, Any]) -> None:
        self.folder = folder
        self.answers = answers

    @classmethod
    def load(cls, folder: Path | None) -> Cassette:
        """Read `folder/cassette.jsonl`; a missing or bad file is a ConfigError."""
        if folder is None:
            raise ConfigError(
                "--llm replay / --search replay need --cassettes DIR; "
                "record one with --record-providers DIR"
            )
        path = folder / CASSETTE_FILE
        if not path.is_file():
            raise ConfigError(f"no cassette at {path}; record one with --record-providers {folder}")
        answers: dict[str, Any] = {}
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                    answers[entry["key"]] = entry["response"]
                except (ValueError, KeyError, TypeError) as exc:
                    raise ConfigError(
                        f"{path} line {number} is not a cassette exchange ({exc}); "
                        f"record it again with --record-providers {folder}"
                    ) from None
        return cls(folder, answers)

    def answer(
        self, kind: str, request: dict[str, Any], error: type[LLMError | SearchError]
    ) -> Any:
        """The recorded response to a request; `error` naming the request if there is none."""
        try:
            return self.answers[request_key(kind, request)]
        except KeyError:
            raise error(
                f"no recorded answer for {describe(kind, request)} in {self.folder}; "
                f"record it with --record-providers {self.folder}",
                provider=REPLAY_NAME,
            ) from None


class ReplayLLM:
    """A model that answers from a cassette, deterministically and without delay."""

    name: str = REPLAY_NAME

    def __init__(self, cassette: Cassette) -> None:
        self.cassette = cassette

    async def plan(self, question: str, *, breadth: int, report: Reporter) -> Plan:
        recorded = self.cassette.answer("plan", _plan_request(question, breadth), LLMError)
        _report_usage(report, recorded["usage"])
        return Plan(list(recorded["queries"]), recorded["fallback"])

    async def follow_up(
        self,
        question: str,
        sources: Sequence[Source],
        *,
        asked: Sequence[str],
        breadth: int,
        report: Reporter,
    ) -> list[str]:
        request = _follow_up_request(question, sources, asked, breadth)
        recorded = self.cassette.answer("follow_up", request, LLMError)
        _report_usage(report, recorded["usage"])
        return list(recorded["queries"])

    async def synthesize(
        self,
        question: str,
        sources: Sequence[Source],
        *,
        report: Reporter,
        max_tokens: int | None = None,
    ) -> AsyncIterator[str]:
        request = _synthesize_request(question, sources, max_tokens)
        recorded = self.cassette.answer("synthesize", request, LLMError)
        for piece in recorded["pieces"]:
            # Sleeping 0 still yields to the loop, so a replayed answer cannot starve others.
            await asyncio.sleep(0)
            yield piece
        _report_usage(report, recorded["usage"])


class ReplaySearch:
    """A search provider that answers from a cassette."""

    name: str = REPLAY_NAME

    def __init__(self, cassette: Cassette) -> None:
        self.cassette = cassette

    async def search(self, query: str, *, limit: int) -> list[SearchHit]:
        request = {"query": query, "limit": limit}
        recorded = self.cassette.answer("search", request, SearchError)
        return [SearchHit(**hit) for hit in recorded]
