"""Iterative depth: follow-up rounds planned from what the previous round found."""

from __future__ import annotations

import json

import httpx

from research_service.errors import LLMError
from research_service.providers.base import FollowUpRequest, Source
from research_service.providers.builtin_llm import BuiltinLLM, follow_up_queries
from tests.conftest import Service
from tests.fakes import RecordingReporter, default_hits
from tests.sse import Received, listen


def searching(got: Received) -> list[dict[str, object]]:
    found = [json.loads(e.data) for e in got.events if e.event == "phase"]
    return [d for d in found if d["phase"] == "searching"]


async def run(service: Service, client: httpx.AsyncClient, **options: int) -> Received:
    run_id = await service.create(client, **options)
    return await listen(client, service.url(f"/v1/runs/{run_id}/events"))


async def test_depth_two_searches_follow_ups_planned_from_the_first_round(
    service: Service, client: httpx.AsyncClient
) -> None:
    service.llm.follow_ups = [["gamma", "alpha"]]  # "alpha" was searched already: dropped
    got = await run(service, client, depth=2)
    events = searching(got)
    assert events[0]["status"] == "started"
    assert events[0]["round"] == 1
    announced = [e for e in events if "queries" in e]
    assert announced == [
        {
            "phase": "searching",
            "status": "progress",
            "elapsed_ms": announced[0]["elapsed_ms"],
            "round": 2,
            "queries": ["gamma"],
        }
    ]
    rounds = [(e["round"], e["query"]) for e in events if "query" in e]
    assert sorted(rounds) == [(1, "alpha"), (1, "beta"), (2, "gamma")]
    assert events[-1]["status"] == "completed"
    assert events[-1]["rounds"] == 2
    # The follow-ups were planned from what round 1 found.
    ((asked, titles),) = service.llm.follow_up_calls
    assert asked == ["alpha", "beta"]
    assert titles == ["alpha result 1", "alpha result 2", "beta result 1", "beta result 2"]
    assert service.search.calls[-1] == "gamma"
    done = got.last[1]
    assert [s["title"] for s in done["sources"]][-1].startswith("gamma")


async def test_each_round_fills_its_share_of_the_sources(
    service: Service, client: httpx.AsyncClient
) -> None:
    service.search.results = {q: default_hits(q, count=8) for q in ("alpha", "beta", "gamma")}
    service.llm.follow_ups = [["gamma"]]
    got = await run(service, client, depth=2, max_sources=8)
    by_round: dict[object, int] = {}
    for event in searching(got):
        if "sources" in event and "query" in event:
            sources = event["sources"]
            assert isinstance(sources, list)
            by_round[event["round"]] = by_round.get(event["round"], 0) + len(sources)
    assert by_round == {1: 4, 2: 4}
    assert len(got.last[1]["sources"]) == 8


async def test_no_follow_ups_means_the_research_is_complete(
    service: Service, client: httpx.AsyncClient
) -> None:
    got = await run(service, client, depth=3)  # the scripted model has no follow-ups
    events = searching(got)
    assert events[-1]["rounds"] == 1
    assert not [e for e in events if "queries" in e]
    assert len(service.llm.follow_up_calls) == 1


async def test_depth_one_never_asks_for_follow_ups(
    service: Service, client: httpx.AsyncClient
) -> None:
    service.llm.follow_ups = [["gamma"]]
    got = await run(service, client)
    assert searching(got)[-1]["rounds"] == 1
    assert service.llm.follow_up_calls == []


def test_builtin_follow_ups_come_from_what_was_and_was_not_found() -> None:
    found = [
        Source(1, "json — JSON encoder and decoder", "u1", "Use json.loads to decode a str."),
    ]
    queries = follow_up_queries(
        "How do I parse JSON with a custom hook?", found, asked=["parse json"], breadth=3
    )
    assert "json hook" in queries  # a question term no source mentioned
    assert "json.loads" in queries  # a name the first round's sources point to
    assert follow_up_queries("How?", [], asked=[], breadth=3) == []


async def test_builtin_follow_up_reports_estimated_usage() -> None:
    report = RecordingReporter()
    request = FollowUpRequest(
        question="What does asyncio.gather do?",
        sources=[Source(1, "asyncio", "u", "See asyncio.gather and asyncio.wait.")],
        asked=["asyncio.gather"],
        breadth=2,
        report=report,
    )
    queries = await BuiltinLLM(token_delay_ms=0).follow_up(request)
    assert queries
    assert "asyncio.gather" not in queries
    assert report.usages[0][1] is True


async def test_snapshot_counts_searches_across_rounds(
    service: Service, client: httpx.AsyncClient
) -> None:
    service.llm.follow_ups = [["gamma"]]
    got = await run(service, client, depth=2)
    run_id = got.ids[0].split(":")[0]
    snapshot = (await client.get(service.url(f"/v1/runs/{run_id}"))).json()
    assert snapshot["plan"] == ["alpha", "beta", "gamma"]
    assert snapshot["searches"] == {"completed": 3, "total": 3}


async def test_a_failing_follow_up_ends_the_rounds_not_the_run(
    service: Service, client: httpx.AsyncClient
) -> None:
    async def failing_follow_up(*args: object, **kwargs: object) -> list[str]:
        raise LLMError("the model server is down", provider="scripted")

    service.llm.follow_up = failing_follow_up  # type: ignore[method-assign]
    got = await run(service, client, depth=2)
    failed = [e for e in searching(got) if "error" in e and "query" not in e]
    assert failed[0]["round"] == 2
    assert "follow-up failed" in str(failed[0]["error"])
    assert got.last[1]["status"] == "completed"
