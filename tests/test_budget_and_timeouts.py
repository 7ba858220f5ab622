"""Usage, the token budget, retries shown to listeners, and the stream and run timeouts."""

from __future__ import annotations

import json

import httpx

from research_service.pipeline.synthesizer import MAX_PIECE_CHARS
from research_service.providers.base import Usage
from tests.conftest import MakeService, Service
from tests.sse import Received, listen


def phases(got: Received, phase: str, status: str) -> list[dict[str, object]]:
    found = [json.loads(e.data) for e in got.events if e.event == "phase"]
    return [d for d in found if d["phase"] == phase and d["status"] == status]


async def run(service: Service, client: httpx.AsyncClient, **options: int) -> Received:
    run_id = await service.create(client, **options)
    return await listen(client, service.url(f"/v1/runs/{run_id}/events"))


async def test_done_reports_usage_by_stage(service: Service, client: httpx.AsyncClient) -> None:
    service.llm.plan_usage = Usage(12, 5)
    service.llm.synth_usage = Usage(200, 7)
    got = await run(service, client)
    _, done = got.last
    assert done["usage"] == {
        "prompt_tokens": 212,
        "completion_tokens": 12,
        "by_stage": {
            "planning": {"prompt_tokens": 12, "completion_tokens": 5},
            "synthesizing": {"prompt_tokens": 200, "completion_tokens": 7},
        },
        "estimated": False,
        "budget": 16000,
    }
    assert done["truncated"] is False


async def test_budget_runs_out_mid_answer_and_the_stream_stops_cleanly(
    service: Service, client: httpx.AsyncClient
) -> None:
    service.llm.plan_usage = Usage(10, 2)
    service.llm.pieces = [f"word{n} " for n in range(20)]  # about 2 tokens each
    got = await run(service, client, max_tokens=8)
    _, done = got.last
    assert done["status"] == "completed"
    assert done["truncated"] is True
    assert done["error"] is None
    assert done["answer"] == got.text()
    assert 0 < len(got.text()) < len(service.llm.answer)
    assert done["usage"]["budget"] == 8
    assert done["usage"]["completion_tokens"] >= 8
    assert phases(got, "synthesizing", "completed")[0]["truncated"] is True
    assert service.llm.max_tokens == 6  # the model is told what is left after planning
    assert service.llm.closed  # the model's stream was closed, not drained
    run_id = got.ids[0].split(":")[0]
    snapshot = (await client.get(service.url(f"/v1/runs/{run_id}"))).json()
    assert snapshot["truncated"] is True
    assert snapshot["usage"] == done["usage"]


async def test_server_ceiling_caps_what_a_run_asks_for(
    make_service: MakeService, client: httpx.AsyncClient
) -> None:
    service = await make_service(max_tokens_per_run=4)
    service.llm.pieces = [f"word{n} " for n in range(20)]
    got = await run(service, client, max_tokens=1000)
    _, done = got.last
    assert done["usage"]["budget"] == 4
    assert done["truncated"] is True


async def test_retries_are_shown_to_listeners(service: Service, client: httpx.AsyncClient) -> None:
    service.llm.retries = [(2, 250, "429 Too Many Requests"), (3, 500, "503 Service Unavailable")]
    got = await run(service, client)
    retrying = [p["retrying"] for p in phases(got, "synthesizing", "progress")]
    assert retrying == [
        {"attempt": 2, "wait_ms": 250, "reason": "429 Too Many Requests"},
        {"attempt": 3, "wait_ms": 500, "reason": "503 Service Unavailable"},
    ]
    assert got.last[1]["status"] == "completed"


async def test_plan_fallback_is_said_in_the_planning_event(
    service: Service, client: httpx.AsyncClient
) -> None:
    service.llm.fallback = "the model's plan was unusable; searching the question itself"
    got = await run(service, client)
    (completed,) = phases(got, "planning", "completed")
    assert completed["fallback"] == service.llm.fallback


async def test_first_token_timeout_fails_the_run_with_its_code(
    make_service: MakeService, client: httpx.AsyncClient
) -> None:
    service = await make_service(llm_first_token_timeout_s=0.05)
    service.llm.hold_after = 0  # never sends a token
    got = await run(service, client)
    assert got.names[-2:] == ["error", "done"]
    assert got.data(-2)["code"] == "llm_first_token_timeout"
    assert got.data(-2)["phase"] == "synthesizing"
    assert got.last[1]["status"] == "failed"
    assert service.llm.closed


async def test_stall_between_tokens_fails_the_run_keeping_what_was_sent(
    make_service: MakeService, client: httpx.AsyncClient
) -> None:
    service = await make_service(llm_token_timeout_s=0.05)
    service.llm.hold_after = 2
    got = await run(service, client)
    assert got.data(-2)["code"] == "llm_token_timeout"
    _, done = got.last
    assert done["status"] == "failed"
    assert done["answer"] == "".join(service.llm.pieces[:2]) == got.text()


async def test_run_deadline_fails_the_run_with_its_code(
    make_service: MakeService, client: httpx.AsyncClient
) -> None:
    service = await make_service(run_deadline_s=0.1)
    service.llm.hold_after = 1
    got = await run(service, client)
    assert got.data(-2)["code"] == "run_deadline"
    assert got.last[1]["status"] == "failed"


async def test_cancel_during_synthesis_closes_the_model_stream(
    service: Service, client: httpx.AsyncClient
) -> None:
    service.llm.hold_after = 1
    run_id = await service.create(client)
    await service.until_held()
    await client.post(service.url(f"/v1/runs/{run_id}/cancel"))
    await service.wait_done(run_id)
    assert service.llm.closed


async def test_a_megabyte_in_one_piece_is_cut_into_events_and_stopped_by_the_budget(
    service: Service, client: httpx.AsyncClient
) -> None:
    # A model server may send anything in one delta: no event grows with it.
    service.llm.pieces = ["Start. ", "x" * 1_000_000, "never sent"]
    got = await run(service, client, max_tokens=3000)
    _, done = got.last
    assert done["status"] == "completed"
    assert done["truncated"] is True
    texts = [json.loads(e.data)["text"] for e in got.events if e.event == "token"]
    assert max(len(text) for text in texts) == MAX_PIECE_CHARS
    # Stopped within one event of the budget (about four characters a token).
    assert MAX_PIECE_CHARS < len(got.text()) <= 3000 * 4 + MAX_PIECE_CHARS
    assert done["answer"] == got.text() == "".join(texts)
    assert "never sent" not in got.text()
