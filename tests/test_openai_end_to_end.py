"""Full runs through the HTTP API with `--llm openai` against the wire-level fake server."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp.test_utils import TestServer

from research_service.app import create_app
from research_service.errors import ConfigError
from research_service.settings import Settings
from tests.fake_openai import (
    Cut,
    ErrorEvent,
    FakeOpenAI,
    HTTPError,
    Malformed,
    Reply,
    Reset,
    Stall,
    Usage,
    mentions,
    rate_limited,
    wants_json,
)
from tests.fakes import ScriptedSearch
from tests.openai_settings import openai_settings
from tests.sse import Received, listen

PLAN = {"queries": ["capital of france", "paris history"]}
ANSWER = "Paris is the capital of France [1]. It has been since the tenth century [3]."


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(models=("planner-m", "writer-m")) as server:
        yield server


async def serve(fake: FakeOpenAI, tmp_path: Path, **overrides: Any) -> TestServer:
    settings = openai_settings(fake, tmp_path, **overrides)
    server = TestServer(create_app(settings, search=ScriptedSearch()), host="127.0.0.1")
    await server.start_server()
    return server


async def research(server: TestServer, question: str, **options: int) -> Received:
    async with httpx.AsyncClient(timeout=30) as client:
        body: dict[str, Any] = {"question": question}
        if options:
            body["options"] = options
        created = await client.post(str(server.make_url("/v1/runs")), json=body)
        assert created.status_code == 201, created.text
        return await listen(client, str(server.make_url(created.json()["events_url"])))


async def research_once(
    fake: FakeOpenAI,
    tmp_path: Path,
    question: str,
    *,
    settings: dict[str, Any] | None = None,
    **options: int,
) -> Received:
    """One run on a fresh service against `fake`, listened to until `done`."""
    server = await serve(fake, tmp_path, **(settings or {}))
    try:
        return await research(server, question, **options)
    finally:
        await server.close()


def phase_events(got: Received) -> list[dict[str, Any]]:
    return [json.loads(e.data) for e in got.events if e.event == "phase"]


async def test_full_run_plans_searches_and_streams_a_cited_answer(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    fake.script.add(Reply.json(PLAN, when=wants_json, usage=Usage(40, 12)))
    fake.script.reply(ANSWER, usage=Usage(300, 25))
    got = await research_once(fake, tmp_path, "What is the capital of France?")
    name, done = got.last
    assert name == "done"
    assert done["status"] == "completed", done
    assert got.text() == done["answer"] == ANSWER
    assert got.names.count("token") == len(ANSWER.split())  # streamed as the server sent it
    planned = next(p for p in phase_events(got) if p["phase"] == "planning" and p.get("queries"))
    assert planned["queries"] == PLAN["queries"]
    searched = [p["query"] for p in phase_events(got) if p["status"] == "progress"]
    assert sorted(searched) == sorted(PLAN["queries"])
    cited = {int(n) for n in re.findall(r"\[(\d+)\]", done["answer"])}
    assert cited <= {s["id"] for s in done["sources"]}
    assert done["usage"]["by_stage"] == {
        "planning": {"prompt_tokens": 40, "completion_tokens": 12},
        "synthesizing": {"prompt_tokens": 300, "completion_tokens": 25},
    }
    assert done["usage"]["estimated"] is False
    planning_call, answer_call = fake.chat_requests
    assert planning_call.json["model"] == "planner-m"
    assert answer_call.json["model"] == "writer-m"
    assert answer_call.stream
    assert answer_call.include_usage
    assert "[1]" in answer_call.text  # the sources reach the model numbered for citing


async def test_rate_limit_is_retried_and_shown_to_listeners(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    fake.script.add(Reply.json(PLAN, when=wants_json))
    fake.script.fail(rate_limited(retry_after=0.01))
    fake.script.reply(ANSWER)
    got = await research_once(fake, tmp_path, "What is the capital of France?")
    retries = [p["retrying"] for p in phase_events(got) if "retrying" in p]
    assert len(retries) == 1
    assert retries[0]["attempt"] == 2  # the attempt about to be made
    assert "429" in retries[0]["reason"]
    assert got.last[1]["status"] == "completed"
    assert got.text() == ANSWER


async def test_budget_stops_the_answer_and_done_says_truncated(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    fake.script.add(Reply.json(PLAN, when=wants_json, usage=Usage(40, 10)))
    fake.script.reply(ANSWER, usage="auto")
    got = await research_once(fake, tmp_path, "What is the capital of France?", max_tokens=14)
    _, done = got.last
    assert done["truncated"] is True
    assert done["status"] == "completed"
    assert done["answer"] == got.text()
    assert len(done["answer"]) < len(ANSWER)
    assert fake.chat_requests[1].json.get("max_tokens", 0) <= 4 or (
        fake.chat_requests[1].json.get("max_completion_tokens", 0) <= 4
    )


async def test_cancel_during_synthesis_closes_the_upstream_stream(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    stall = Stall(after=3)
    fake.script.add(Reply.json(PLAN, when=wants_json))
    fake.script.reply(ANSWER, faults=[stall])
    server = await serve(fake, tmp_path)
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            created = await client.post(
                str(server.make_url("/v1/runs")), json={"question": "Capital of France?"}
            )
            run_id = created.json()["id"]
            async with asyncio.timeout(10):
                await stall.reached.wait()
            await client.post(str(server.make_url(f"/v1/runs/{run_id}/cancel")))
            answer_call = fake.chat_requests[1]
            async with asyncio.timeout(5):
                await answer_call.disconnected.wait()
            got = await listen(client, str(server.make_url(f"/v1/runs/{run_id}/events")))
    finally:
        await server.close()
    assert answer_call.tokens_sent == 3
    _, done = got.last
    assert done["status"] == "cancelled"
    assert done["answer"] == got.text()


async def test_missing_key_is_reported_at_start_up(fake: FakeOpenAI, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, llm="openai", openai_base_url=fake.base_url)
    server = TestServer(create_app(settings, search=ScriptedSearch()), host="127.0.0.1")
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        await server.start_server()


async def test_unreachable_server_is_reported_at_start_up(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        llm="openai",
        openai_api_key="k",
        openai_base_url="http://127.0.0.1:9/v1",  # the discard port: nothing listens
        llm_max_attempts=1,
    )
    server = TestServer(create_app(settings, search=ScriptedSearch()), host="127.0.0.1")
    with pytest.raises(ConfigError, match="OPENAI_BASE_URL"):
        await server.start_server()


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (HTTPError(status=500), "500"),
        (HTTPError(status=503), "503"),
        (Reset(), "connection"),
    ],
    ids=["500", "503", "reset-before-first-byte"],
)
async def test_transient_fault_before_the_answer_is_retried_and_the_run_completes(
    fake: FakeOpenAI, tmp_path: Path, fault: Any, reason: str
) -> None:
    fake.script.add(Reply.json(PLAN, when=wants_json))
    fake.script.fail(fault)
    fake.script.reply(ANSWER)
    got = await research_once(fake, tmp_path, "What is the capital of France?")
    (retry,) = [p["retrying"] for p in phase_events(got) if "retrying" in p]
    assert reason in retry["reason"].lower()
    _, done = got.last
    assert done["status"] == "completed"
    assert got.text() == done["answer"] == ANSWER  # nothing duplicated by the retry


@pytest.mark.parametrize(
    "fault",
    [Cut(after=3), Malformed(after=3), ErrorEvent(after=3)],
    ids=["cut-mid-answer", "malformed-chunk", "error-event"],
)
async def test_stream_broken_after_tokens_fails_keeping_what_was_sent(
    fake: FakeOpenAI, tmp_path: Path, fault: Any
) -> None:
    fake.script.add(Reply.json(PLAN, when=wants_json))
    fake.script.reply(ANSWER, faults=[fault])
    got = await research_once(fake, tmp_path, "What is the capital of France?")
    assert got.names[-2:] == ["error", "done"]
    assert got.data(-2)["code"] == "llm_stream_broken"
    assert got.data(-2)["phase"] == "synthesizing"
    _, done = got.last
    assert done["status"] == "failed"
    assert done["error"]["code"] == "llm_stream_broken"
    sent = " ".join(ANSWER.split()[:3])
    assert done["answer"] == got.text()
    assert done["answer"].strip() == sent  # the text sent so far, never restarted
    assert len(fake.chat_requests) == 2  # no retry of a stream that had started


async def test_non_retryable_status_fails_at_once(fake: FakeOpenAI, tmp_path: Path) -> None:
    fake.script.add(Reply.json(PLAN, when=wants_json))
    fake.script.fail(HTTPError(status=400, message="model does not exist"))
    got = await research_once(fake, tmp_path, "What is the capital of France?")
    assert got.data(-2)["code"] == "llm_bad_request"
    assert not [p for p in phase_events(got) if "retrying" in p]
    assert got.last[1]["status"] == "failed"
    assert len(fake.chat_requests) == 2


async def test_slow_first_token_times_out_with_its_code(fake: FakeOpenAI, tmp_path: Path) -> None:
    fake.script.add(Reply.json(PLAN, when=wants_json))
    answer = fake.script.reply(ANSWER, faults=[Stall(after=0)])
    got = await research_once(
        fake,
        tmp_path,
        "What is the capital of France?",
        settings={"llm_first_token_timeout_s": 0.2},
    )
    assert got.data(-2)["code"] == "llm_first_token_timeout"
    assert got.last[1]["status"] == "failed"
    assert got.text() == ""
    async with asyncio.timeout(5):
        await answer.served[0].disconnected.wait()  # the upstream request was abandoned


async def test_stall_between_tokens_times_out_keeping_what_was_sent(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    fake.script.add(Reply.json(PLAN, when=wants_json))
    fake.script.reply(ANSWER, faults=[Stall(after=4)])
    got = await research_once(
        fake, tmp_path, "What is the capital of France?", settings={"llm_token_timeout_s": 0.2}
    )
    assert got.data(-2)["code"] == "llm_token_timeout"
    _, done = got.last
    assert done["status"] == "failed"
    assert done["answer"].strip() == " ".join(ANSWER.split()[:4])


async def test_reasoning_never_reaches_listeners(fake: FakeOpenAI, tmp_path: Path) -> None:
    fake.script.add(Reply.json(PLAN, when=wants_json))
    fake.script.reply(ANSWER, think="Let me think about Paris.", reasoning="secret chain")
    got = await research_once(fake, tmp_path, "What is the capital of France?")
    raw = "".join(e.data for e in got.events)
    assert "think" not in raw
    assert "secret chain" not in raw
    assert "Let me think" not in raw
    assert got.text() == got.last[1]["answer"] == ANSWER


async def test_server_without_json_schema_still_plans(fake: FakeOpenAI, tmp_path: Path) -> None:
    fake.reject_json_schema = True
    fake.script.add(Reply.json(PLAN, when=wants_json))
    fake.script.reply(ANSWER)
    got = await research_once(fake, tmp_path, "What is the capital of France?")
    planned = next(p for p in phase_events(got) if p["phase"] == "planning" and "queries" in p)
    assert planned["queries"] == PLAN["queries"]
    assert "fallback" not in planned
    formats = [r.response_format for r in fake.chat_requests if r.response_format]
    assert formats[0]["type"] == "json_schema"
    assert formats[-1]["type"] == "json_object"


async def test_unusable_plan_falls_back_to_the_question_and_says_so(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    fake.script.add(Reply("I cannot make a plan, sorry.", when=wants_json))
    fake.script.add(Reply("Still no plan.", when=wants_json))
    fake.script.reply(ANSWER)
    got = await research_once(fake, tmp_path, "What is the capital of France?")
    planned = next(p for p in phase_events(got) if p["phase"] == "planning" and "queries" in p)
    assert planned["queries"] == ["What is the capital of France?"]
    assert "unusable" in planned["fallback"]
    repair = fake.chat_requests[1].json["messages"]
    assert len(repair) > len(fake.chat_requests[0].json["messages"])  # the error fed back
    assert got.last[1]["status"] == "completed"


async def test_error_event_before_the_first_token_is_retried(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    fake.script.add(Reply.json(PLAN, when=wants_json))
    fake.script.reply(ANSWER, faults=[ErrorEvent(after=0)])
    fake.script.reply(ANSWER)
    got = await research_once(fake, tmp_path, "What is the capital of France?")
    assert [p["retrying"]["attempt"] for p in phase_events(got) if "retrying" in p] == [2]
    assert got.last[1]["status"] == "completed"
    assert got.text() == ANSWER


async def test_depth_two_asks_the_model_for_follow_ups(fake: FakeOpenAI, tmp_path: Path) -> None:
    fake.script.add(Reply.json(PLAN, when=wants_json))
    follow = fake.script.add(
        Reply.json({"queries": ["paris population"]}, when=mentions("Already searched"))
    )
    fake.script.reply(ANSWER)
    got = await research_once(fake, tmp_path, "What is the capital of France?", depth=2)
    announced = [p for p in phase_events(got) if "queries" in p and p["phase"] == "searching"]
    assert announced[0]["round"] == 2
    assert announced[0]["queries"] == ["paris population"]
    asked = follow.served[0].text
    assert "capital of france" in asked  # the searches already made
    assert "capital of france result 1" in asked  # and what they found
    assert got.last[1]["status"] == "completed"


async def test_a_reviewed_plan_is_re_planned_by_the_model_with_the_feedback(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    """The re-plan prompt shows the model the plan the reviewer saw, then their feedback."""
    fake.script.add(Reply.json(PLAN, when=wants_json, usage=Usage(40, 12)))
    fake.script.add(
        Reply.json({"queries": ["paris founding"]}, when=wants_json, usage=Usage(60, 8))
    )
    fake.script.reply(ANSWER, usage=Usage(300, 25))
    server = await serve(fake, tmp_path)
    feedback = "Only the founding of the city, please."
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            body = {"question": "What is the capital of France?", "options": {"review_plan": True}}
            created = (await client.post(str(server.make_url("/v1/runs")), json=body)).json()
            url = str(server.make_url(created["events_url"]))
            plan_url = str(server.make_url(f"/v1/runs/{created['id']}/plan"))

            def review_round(number: int) -> Any:
                def at(sse: Any) -> bool:
                    data = json.loads(sse.data) if sse.event == "phase" else {}
                    return data.get("status") == "review" and data.get("round") == number

                return at

            first = await listen(client, url, stop=review_round(1))
            decided = await client.post(plan_url, json={"feedback": feedback})
            assert decided.status_code == 202, decided.text
            second = await listen(client, url, last_event_id=first.ids[-1], stop=review_round(2))
            assert json.loads(second.events[-1].data)["queries"] == ["paris founding"]
            assert (await client.post(plan_url, json={})).status_code == 202
            rest = await listen(client, url, last_event_id=second.ids[-1])
    finally:
        await server.close()
    assert rest.last[1]["status"] == "completed"
    _, replan, _ = fake.chat_requests
    said = [m for m in replan.messages if m["role"] in ("assistant", "user")]
    assert said[0]["content"] == "What is the capital of France?"
    assert json.loads(said[1]["content"]) == PLAN  # the plan the reviewer saw
    assert feedback in said[2]["content"]
    assert replan.last_user_message == said[2]["content"]
    assert rest.last[1]["usage"]["by_stage"]["planning"] == {
        "prompt_tokens": 100,
        "completion_tokens": 20,
    }
