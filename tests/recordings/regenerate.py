"""Regenerate the shipped recordings: `python -m tests.recordings.regenerate [NAME...]`.

Runs the real service in-process (create_app on an aiohttp TestServer, real HTTP on 127.0.0.1),
researches each case to its `done`, and writes the run's recording from
`GET /v1/runs/{id}/recording` to `tests/recordings/<name>.jsonl`, with the provider cassettes the
run recorded (`Settings(record_providers=...)`) in `tests/recordings/<name>/`.
Run ids and timings change on every regeneration; answers and sources do not.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
from aiohttp.test_utils import TestServer
from httpx_sse import ServerSentEvent

from research_service.app import create_app
from research_service.settings import Settings
from tests.fake_openai import DEFAULT_MODEL, FakeOpenAI, Reply, Usage, wants_json
from tests.sse import after_event, listen

HERE: Final = Path(__file__).parent
CORPUS: Final = HERE.parent / "data" / "corpus"

BUILTIN_QUESTION: Final = "Who created Python and when was it first released?"
OPENAI_QUESTION: Final = "Why is Python called Python?"
OPENAI_PLAN: Final = {"queries": ["python name origin", "monty python flying circus"]}
OPENAI_ANSWER: Final = (
    "Python is named after Monty Python's Flying Circus, not the snake [1]. "
    "Guido van Rossum was reading its scripts when he started the language [1]."
)
UNANSWERABLE_QUESTION: Final = "Qwxzv blorptang frimble zyxx?"
CANCELLED_QUESTION: Final = "How does photosynthesis turn light into sugar?"
REVIEWED_QUESTION: Final = "Who created Python and when was it first released?"
#: The reviewed run's decisions, one per review round: feedback, then an edit.
REVIEW_DECISIONS: Final = (
    {"feedback": "Focus on Guido van Rossum and the first public release"},
    {"queries": ["Guido van Rossum Python", "Python 0.9.0 release alt.sources"]},
)


@dataclass(frozen=True)
class Case:
    """One shipped recording: its file stem, expected final status and how to produce it."""

    name: str
    status: str
    question: str
    options: dict[str, Any] = field(default_factory=dict)
    #: With options.review_plan: the body posted to the plan's review_url in each round.
    decisions: tuple[dict[str, Any], ...] = ()


CASES: Final = (
    Case("builtin_completed", "completed", BUILTIN_QUESTION),
    Case("openai_completed", "completed", OPENAI_QUESTION),
    Case("builtin_failed", "failed", UNANSWERABLE_QUESTION),
    Case("builtin_cancelled", "cancelled", CANCELLED_QUESTION),
    Case(
        "builtin_reviewed",
        "completed",
        REVIEWED_QUESTION,
        options={"review_plan": True},
        decisions=REVIEW_DECISIONS,
    ),
)


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[TestServer]:
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


async def create(http: httpx.AsyncClient, server: TestServer, case: Case) -> str:
    """Start the case's run (its question and options); its id."""
    body: dict[str, Any] = {"question": case.question}
    if case.options:
        body["options"] = case.options
    created = await http.post(str(server.make_url("/v1/runs")), json=body)
    created.raise_for_status()
    run_id: str = created.json()["id"]
    return run_id


async def review(
    http: httpx.AsyncClient, server: TestServer, run_id: str, decisions: Sequence[dict[str, Any]]
) -> None:
    """Post one decision per `planning` `review` event of the run, in order."""
    url = str(server.make_url(f"/v1/runs/{run_id}/events"))
    last = f"{run_id}:0"
    for decision in decisions:
        shown = await listen(http, url, last_event_id=last, stop=_is_review)
        if not shown.events or not _is_review(shown.events[-1]):
            raise SystemExit(f"run {run_id} did not wait for a review: {shown.names}")
        last = shown.ids[-1]
        answer = await http.post(str(server.make_url(f"/v1/runs/{run_id}/plan")), json=decision)
        answer.raise_for_status()


def _is_review(sse: ServerSentEvent) -> bool:
    return sse.event == "phase" and '"status":"review"' in sse.data


async def _to_done(http: httpx.AsyncClient, server: TestServer, run_id: str) -> None:
    received = await listen(http, str(server.make_url(f"/v1/runs/{run_id}/events")))
    if received.names[-1:] != ["done"]:
        raise SystemExit(f"run {run_id} ended without done: {received.names}")


async def _cancel_after_first_token(
    http: httpx.AsyncClient, server: TestServer, run_id: str
) -> None:
    url = str(server.make_url(f"/v1/runs/{run_id}/events"))
    first = await listen(http, url, stop=after_event("token"))
    if first.names[-1:] != ["token"]:
        raise SystemExit(f"run {run_id} sent no token: {first.names}")
    cancelled = await http.post(str(server.make_url(f"/v1/runs/{run_id}/cancel")))
    cancelled.raise_for_status()
    rest = await listen(http, url, last_event_id=first.ids[-1])
    if rest.names[-1:] != ["done"]:
        raise SystemExit(f"run {run_id} ended without done after cancel: {rest.names}")


async def _reviewed_to_done(http: httpx.AsyncClient, server: TestServer, run_id: str) -> None:
    await review(http, server, run_id, REVIEW_DECISIONS)
    await _to_done(http, server, run_id)


Drive = Callable[[httpx.AsyncClient, TestServer, str], Awaitable[None]]


async def _record(
    http: httpx.AsyncClient, out: Path, case: Case, settings: Settings, drive: Drive
) -> dict[str, Any]:
    """Run the case on a fresh service, write its recording, return its `done` data."""
    async with serving(settings) as server:
        run_id = await create(http, server, case)
        await drive(http, server, run_id)
        response = await http.get(str(server.make_url(f"/v1/runs/{run_id}/recording")))
        response.raise_for_status()
    (out / f"{case.name}.jsonl").write_bytes(response.content)
    last = response.text.rstrip("\n").rsplit("\n", 1)[-1]
    done: dict[str, Any] = httpx.Response(200, content=last).json()["data"]
    if done["status"] != case.status:
        raise SystemExit(f"{case.name}: expected status {case.status}, got {done}")
    return done


async def _record_openai(
    http: httpx.AsyncClient, out: Path, case: Case, settings: Settings
) -> None:
    """The openai case, against a fake model server scripted with its plan and answer."""
    async with FakeOpenAI() as fake:
        fake.script.add(Reply.json(OPENAI_PLAN, when=wants_json, usage=Usage(40, 12)))
        fake.script.reply(OPENAI_ANSWER, usage=Usage(300, 30))
        settings = settings.with_changes(
            llm="openai",
            openai_api_key="test",
            openai_base_url=fake.base_url,
            planner_model=DEFAULT_MODEL,
            synth_model=DEFAULT_MODEL,
        )
        await _record(http, out, case, settings, _to_done)


#: How each case is driven to its end, and the settings it changes.
DRIVES: Final[dict[str, tuple[Drive, dict[str, Any]]]] = {
    "builtin_completed": (_to_done, {}),
    "builtin_failed": (_to_done, {}),
    "builtin_cancelled": (_cancel_after_first_token, {"token_delay_ms": 200}),
    "builtin_reviewed": (_reviewed_to_done, {}),
}


async def regenerate(out: Path = HERE, names: Sequence[str] = ()) -> None:
    """Record the cases named (every case when none is), replacing their files."""
    chosen = [case for case in CASES if not names or case.name in names]
    with tempfile.TemporaryDirectory() as tmp:
        async with httpx.AsyncClient(timeout=30.0) as http:
            for case in chosen:
                shutil.rmtree(out / case.name, ignore_errors=True)
                (out / f"{case.name}.jsonl").unlink(missing_ok=True)
                settings = Settings(
                    data_dir=Path(tmp) / case.name,
                    corpus=CORPUS,
                    token_delay_ms=0,
                    record_providers=out / case.name,
                )
                if case.name == "openai_completed":
                    await _record_openai(http, out, case, settings)
                else:
                    drive, changes = DRIVES[case.name]
                    await _record(http, out, case, settings.with_changes(**changes), drive)
                print(f"wrote {out / case.name}.jsonl and {out / case.name}/")


if __name__ == "__main__":
    unknown = set(sys.argv[1:]) - {case.name for case in CASES}
    if unknown:
        raise SystemExit(f"no such case: {', '.join(sorted(unknown))}")
    asyncio.run(regenerate(names=sys.argv[1:]))
