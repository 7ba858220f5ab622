"""Provider cassettes: tape every model and search exchange of a run, and play them back.

A cassette is not a run recording (`recordings/`): it holds provider exchanges, so playing it
back runs the pipeline again. Flags keep their documented names (`--record-providers` tapes,
`--llm replay` / `--search replay` with `--cassettes` play back).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import threading
from collections.abc import AsyncIterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Final

from research_service import strict_json
from research_service.errors import ConfigError, LLMError, SearchError
from research_service.providers.base import (
    AnswerRequest,
    FollowUpRequest,
    LLMProvider,
    LLMRequest,
    Plan,
    PlanRequest,
    Reporter,
    SearchHit,
    SearchProvider,
    Usage,
)
from research_service.providers.cassette_checks import check_exchange

log = logging.getLogger(__name__)

CASSETTE_FILE: Final = "cassette.jsonl"
#: The --llm / --search value that plays a cassette back.
PROVIDER_NAME: Final = "replay"
# Appends from the LLM and the search taping of one process go through this one lock,
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


def exchange_request(request: LLMRequest) -> tuple[str, dict[str, Any]]:
    """The kind and the request object of a model call as a cassette line holds them."""
    match request:
        case PlanRequest():
            asked: dict[str, Any] = {"question": request.question, "breadth": request.breadth}
            if request.feedback is not None:  # a re-plan after review: its own exchange
                asked |= {"previous": list(request.previous), "feedback": request.feedback}
            return "plan", asked
        case FollowUpRequest():
            return "follow_up", {
                "question": request.question,
                "sources": [source.brief() for source in request.sources],
                "asked": list(request.asked),
                "breadth": request.breadth,
            }
        case AnswerRequest():
            return "synthesize", {
                "question": request.question,
                "sources": [source.full() for source in request.sources],
                "max_tokens": request.max_tokens,
            }


def search_request(query: str, limit: int) -> dict[str, Any]:
    """The request object of a search as a cassette line holds it."""
    return {"query": query, "limit": limit}


def check_tape_folder(folder: Path) -> None:
    """Refuse (ConfigError) a --record-providers folder that could never be written."""
    fix = "give --record-providers a folder the service can write"
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--record-providers {folder} is not a folder; {fix}")
    existing = folder
    while not existing.exists():  # made on the first exchange: its nearest parent must allow it
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"--record-providers {folder}: {existing} cannot be written; {fix}")
    tape = folder / CASSETTE_FILE
    if tape.exists() and not (tape.is_file() and os.access(tape, os.W_OK)):
        raise ConfigError(f"--record-providers {folder}: {tape} cannot be appended to; {fix}")


class CassetteWriter:
    """Appends exchanges to `DIR/cassette.jsonl`, one JSON object a line."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / CASSETTE_FILE
        # Appends finish in the order they were asked for: a taped run's searches then end in
        # the order the search answered them, as in its playback, not as threads happen to run.
        self._in_turn = asyncio.Lock()

    async def append(self, kind: str, request: dict[str, Any], response: Any, **noted: str) -> None:
        """Tape one exchange, after those asked for before it; the write runs off the loop.

        `noted`: more fields for the line (a search's `provider`).
        """
        line = json.dumps(
            {
                "kind": kind,
                "key": request_key(kind, request),
                "request": request,
                "response": response,
                **noted,
            },
            ensure_ascii=False,
        )
        async with self._in_turn:
            try:
                await asyncio.to_thread(self._write, line)
            except OSError as exc:
                # The run goes on: its answer matters more than its tape (a full disk).
                log.warning("could not tape a %s exchange to %s: %s", kind, self.path, exc)

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


def _report_taped_usage(report: Reporter, taped: list[list[Any]]) -> None:
    for prompt, completion, estimated in taped:
        report.usage(Usage(int(prompt), int(completion)), estimated=bool(estimated))


class TapingLLM:
    """Delegates to a real model and tapes each successful exchange onto a cassette."""

    def __init__(self, inner: LLMProvider, writer: CassetteWriter) -> None:
        self.inner = inner
        self.writer = writer
        self.name = inner.name

    async def plan(self, request: PlanRequest) -> Plan:
        tap = _UsageTap(request.report)
        plan = await self.inner.plan(replace(request, report=tap))
        response = {"queries": plan.queries, "fallback": plan.fallback, "usage": tap.seen}
        await self.writer.append(*exchange_request(request), response)
        return plan

    async def follow_up(self, request: FollowUpRequest) -> list[str]:
        tap = _UsageTap(request.report)
        queries = await self.inner.follow_up(replace(request, report=tap))
        response = {"queries": queries, "usage": tap.seen}
        await self.writer.append(*exchange_request(request), response)
        return queries

    async def synthesize(self, request: AnswerRequest) -> AsyncIterator[str]:
        tap = _UsageTap(request.report)
        pieces: list[str] = []
        stream = self.inner.synthesize(replace(request, report=tap))
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
        # Only a whole answer is taped: a cut-off stream is not a reusable answer.
        if finished:
            response = {"pieces": pieces, "usage": tap.seen}
            await self.writer.append(*exchange_request(request), response)


class TapingSearch:
    """Delegates to a real search provider and tapes each successful exchange onto a cassette."""

    def __init__(self, inner: SearchProvider, writer: CassetteWriter) -> None:
        self.inner = inner
        self.writer = writer
        self.name = inner.name

    async def search(self, query: str, *, limit: int) -> list[SearchHit]:
        hits = await self.inner.search(query, limit=limit)
        response = [asdict(hit) for hit in hits]
        # Which provider found them: a playback reads the pages of web results only.
        request = search_request(query, limit)
        await self.writer.append("search", request, response, provider=self.inner.name)
        return hits


class Cassette:
    """The taped exchanges of a cassette folder, answered by request key."""

    def __init__(self, folder: Path, answers: dict[str, Any], *, web: bool = False) -> None:
        self.folder = folder
        self.answers = answers
        #: Whether its searches were taped from a web search provider (SearXNG): only then
        #: does a playback read the results' pages, as the taped runs did. (Lines taped
        #: before providers were noted are a local corpus's, as the shipped cassettes are.)
        self.web = web

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
        providers: set[str] = set()
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    entry = strict_json.loads(line)
                    check_exchange(entry)
                except (ValueError, RecursionError) as exc:
                    raise ConfigError(
                        f"{path} line {number} is not a cassette exchange ({exc}); "
                        f"record it again with --record-providers {folder}"
                    ) from None
                answers[entry["key"]] = entry["response"]
                if entry["kind"] == "search":
                    web = entry.get("provider", "local") not in ("local", PROVIDER_NAME)
                    providers.add("web search" if web else "a local corpus")
        if len(providers) > 1:
            # Pages are read for every hit or for none: one folder is taped from one kind.
            raise ConfigError(
                f"{path} holds searches taped from a local corpus and from web search; tape "
                "each kind into a folder of its own (--record-providers DIR)"
            )
        return cls(folder, answers, web=providers == {"web search"})

    def answer(
        self, kind: str, request: dict[str, Any], error: type[LLMError | SearchError]
    ) -> Any:
        """The taped response to a request; `error` naming the request if there is none."""
        try:
            return self.answers[request_key(kind, request)]
        except KeyError:
            # The documented wording (docs/cassettes.md samples): it names the flag to use.
            raise error(
                f"no recorded answer for {describe(kind, request)} in {self.folder}; "
                f"record it with --record-providers {self.folder}",
                provider=PROVIDER_NAME,
            ) from None


class CassetteLLM:
    """A model that plays its answers back from a cassette, deterministically and at once."""

    name: str = PROVIDER_NAME

    def __init__(self, cassette: Cassette) -> None:
        self.cassette = cassette

    async def plan(self, request: PlanRequest) -> Plan:
        taped = self.cassette.answer(*exchange_request(request), LLMError)
        _report_taped_usage(request.report, taped["usage"])
        return Plan(list(taped["queries"]), taped["fallback"])

    async def follow_up(self, request: FollowUpRequest) -> list[str]:
        taped = self.cassette.answer(*exchange_request(request), LLMError)
        _report_taped_usage(request.report, taped["usage"])
        return list(taped["queries"])

    async def synthesize(self, request: AnswerRequest) -> AsyncIterator[str]:
        taped = self.cassette.answer(*exchange_request(request), LLMError)
        for piece in taped["pieces"]:
            # Sleeping 0 still yields to the loop, so a played-back answer cannot starve others.
            await asyncio.sleep(0)
            yield piece
        _report_taped_usage(request.report, taped["usage"])


class CassetteSearch:
    """A search provider that plays its hits back from a cassette."""

    name: str = PROVIDER_NAME

    def __init__(self, cassette: Cassette) -> None:
        self.cassette = cassette

    @property
    def reads_pages(self) -> bool:
        """Whether runs read the pages of its hits: only if web search found them."""
        return self.cassette.web

    async def search(self, query: str, *, limit: int) -> list[SearchHit]:
        taped = self.cassette.answer("search", search_request(query, limit), SearchError)
        return [SearchHit(**hit) for hit in taped]
