"""Regenerate the shipped recordings: `python -m tests.recordings.regenerate`.

Runs the real service in-process (create_app on an aiohttp TestServer, real HTTP on 127.0.0.1),
researches each case to its `done`, and writes the run's recording from
`GET /v1/runs/{id}/recording` to `tests/recordings/<name>.jsonl`, with the provider cassettes the
run recorded (`Settings(record_providers=...)`) in `tests/recordings/<name>/`.
Run ids and timings change on every regeneration; answers and sources do not.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
from aiohttp.test_utils import TestServer

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


@dataclass(frozen=True)
class Case:
    """One shipped recording: its file stem, expected final status and how to produce it."""

    name: str
    status: str
    question: str


CASES: Final = (
    Case("builtin_completed", "completed", BUILTIN_QUESTION),
    Case("openai_completed", "completed", OPENAI_QUESTION),
    Case("builtin_failed", "failed", UNANSWERABLE_QUESTION),
    Case("builtin_cancelled", "cancelled", CANCELLED_QUESTION),
)


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[TestServer]:
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


async def _create(http: httpx.AsyncClient, server: TestServer, question: str) -> str:
    created = await http.post(str(server.make_url("/v1/runs")), json={"question": question})
    created.raise_for_status()
    run_id: str = created.json()["id"]
    return run_id


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


Drive = Callable[[httpx.AsyncClient, TestServer, str], Awaitable[None]]


async def _record(
    http: httpx.AsyncClient, out: Path, case: Case, settings: Settings, drive: Drive
) -> dict[str, Any]:
    """Run the case on a fresh service, write its recording, return its `done` data."""
    async with serving(settings) as server:
        run_id = await _create(http, server, case.question)
        await drive(http, server, run_id)
        response = await http.get(str(server.make_url(f"/v1/runs/{run_id}/recording")))
        response.raise_for_status()
    (out / f"{case.name}.jsonl").write_bytes(response.content)
    last = response.text.rstrip("\n").rsplit("\n", 1)[-1]
    done: dict[str, Any] = httpx.Response(200, content=last).json()["data"]
    if done["status"] != case.status:
        raise SystemExit(f"{case.name}: expected status {case.status}, got {done}")
    return done


async def regenerate(out: Path = HERE) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        for case in CASES:
            shutil.rmtree(out / case.name, ignore_errors=True)
            (out / f"{case.name}.jsonl").unlink(missing_ok=True)

        def builtin(case: Case, **overrides: Any) -> Settings:
            base: dict[str, Any] = {
                "data_dir": data / case.name,
                "corpus": CORPUS,
                "token_delay_ms": 0,
                "record_providers": out / case.name,
            }
            return Settings(**{**base, **overrides})

        async with httpx.AsyncClient(timeout=30.0) as http:
            completed, openai, failed, cancelled = CASES
            await _record(http, out, completed, builtin(completed), _to_done)
            async with FakeOpenAI() as fake:
                fake.script.add(Reply.json(OPENAI_PLAN, when=wants_json, usage=Usage(40, 12)))
                fake.script.reply(OPENAI_ANSWER, usage=Usage(300, 30))
                settings = builtin(
                    openai,
                    llm="openai",
                    openai_api_key="test",
                    openai_base_url=fake.base_url,
                    planner_model=DEFAULT_MODEL,
                    synth_model=DEFAULT_MODEL,
                )
                await _record(http, out, openai, settings, _to_done)
            await _record(http, out, failed, builtin(failed), _to_done)
            slow = builtin(cancelled, token_delay_ms=200)
            await _record(http, out, cancelled, slow, _cancel_after_first_token)
    for case in CASES:
        print(f"wrote {out / case.name}.jsonl and {out / case.name}/")


if __name__ == "__main__":
    asyncio.run(regenerate())
