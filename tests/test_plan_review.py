"""Plan review over real HTTP: the run shows its plan, waits, and takes one decision per round."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import ServerSentEvent

from research_service.auth.key_store import SqliteKeys
from research_service.events import Event
from research_service.records import RunOptions, RunRecord
from research_service.runs import sqlite_log
from research_service.runs.sqlite_log import RUN_STORE_FILE
from tests.conftest import MakeService, Service
from tests.sse import Received, listen

QUESTION = "How do plants make food?"
SECRET = "s" * 40


def planning(events: list[ServerSentEvent], status: str) -> list[dict[str, Any]]:
    """The payloads of the run's `planning` events with `status`."""
    found = []
    for event in events:
        if event.event == "phase":
            data = json.loads(event.data)
            if data["phase"] == "planning" and data["status"] == status:
                found.append(data)
    return found


def at_review(round_number: int = 1) -> Any:
    """A `stop` predicate: true at the `review` event of `round_number`."""

    def predicate(sse: ServerSentEvent) -> bool:
        if sse.event != "phase":
            return False
        data = json.loads(sse.data)
        return data.get("status") == "review" and data.get("round") == round_number

    return predicate


async def reviewed_run(service: Service, client: httpx.AsyncClient) -> tuple[str, Received]:
    """A run with review_plan, followed until its first `review` event."""
    run_id = await service.create(client, QUESTION, review_plan=True)
    head = await listen(client, service.url(f"/v1/runs/{run_id}/events"), stop=at_review())
    return run_id, head


async def decide(
    service: Service, client: httpx.AsyncClient, run_id: str, body: Any = None, **headers: str
) -> httpx.Response:
    content = b"" if body is None else json.dumps(body).encode()
    return await client.post(
        service.url(f"/v1/runs/{run_id}/plan"),
        content=content,
        headers={"Content-Type": "application/json", **headers},
    )


async def rest_of(service: Service, client: httpx.AsyncClient, run_id: str, after: str) -> Received:
    return await listen(
        client, service.url(f"/v1/runs/{run_id}/events"), last_event_id=after, timeout=10
    )


def assert_problem(response: httpx.Response, status: int, slug: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/problem+json")
    body = response.json()
    assert body["type"].endswith(f"/{slug}")
    detail: str = body["detail"]
    return detail


async def test_approving_the_plan_runs_it_as_proposed(
    service: Service, client: httpx.AsyncClient
) -> None:
    run_id, head = await reviewed_run(service, client)
    review = planning(head.events, "review")[0]
    assert review["queries"] == ["alpha", "beta"]
    assert review["round"] == 1
    assert review["review_url"] == f"/v1/runs/{run_id}/plan"
    assert review["expires_in_s"] == 900
    assert review["feedback_allowed"] is True
    # Nothing was searched yet: the run waits.
    assert service.search.calls == []
    snapshot = (await client.get(service.url(f"/v1/runs/{run_id}"))).json()
    assert snapshot["status"] == "running"
    assert snapshot["awaiting"] == "plan_review"
    assert snapshot["review"]["queries"] == ["alpha", "beta"]
    assert 0 < snapshot["review"]["expires_in_s"] <= 900
    response = await decide(service, client, run_id, {})
    assert response.status_code == 202, response.text
    assert response.json() == {
        "id": run_id,
        "status": "running",
        "decision": "approved",
        "round": 1,
        "events_url": f"/v1/runs/{run_id}/events",
    }
    rest = await rest_of(service, client, run_id, head.ids[-1])
    (reviewed,) = planning(rest.events, "reviewed")
    assert {k: reviewed[k] for k in ("round", "decision")} == {"round": 1, "decision": "approved"}
    assert "queries" not in reviewed
    completed = planning(rest.events, "completed")[0]
    assert completed["queries"] == ["alpha", "beta"]
    assert completed["review"] == "approved"
    assert rest.last[0] == "done"
    assert rest.last[1]["status"] == "completed"
    assert sorted(service.search.calls) == ["alpha", "beta"]
    done = (await client.get(service.url(f"/v1/runs/{run_id}"))).json()
    assert done["awaiting"] is None
    assert done["review"] is None


async def test_edited_queries_are_run_exactly_cleaned_and_said_to_be_edited(
    service: Service, client: httpx.AsyncClient
) -> None:
    run_id, head = await reviewed_run(service, client)
    response = await decide(
        service, client, run_id, {"queries": ["  gamma   rays ", "Delta", "delta", "epsilon"]}
    )
    assert response.status_code == 202, response.text
    assert response.json()["decision"] == "edited"
    rest = await rest_of(service, client, run_id, head.ids[-1])
    reviewed = planning(rest.events, "reviewed")[0]
    assert reviewed["decision"] == "edited"
    assert reviewed["queries"] == ["gamma rays", "Delta", "epsilon"]
    completed = planning(rest.events, "completed")[0]
    assert completed["queries"] == ["gamma rays", "Delta", "epsilon"]
    assert completed["review"] == "edited"
    assert sorted(service.search.calls) == ["Delta", "epsilon", "gamma rays"]


async def test_feedback_re_plans_round_after_round_then_approve(
    service: Service, client: httpx.AsyncClient
) -> None:
    service.llm.replans = [["chlorophyll"], ["light reactions", "calvin cycle"]]
    run_id, head = await reviewed_run(service, client)
    url = service.url(f"/v1/runs/{run_id}/events")
    first = await decide(service, client, run_id, {"feedback": "  more about chlorophyll "})
    assert first.json() == {**first.json(), "decision": "feedback", "round": 1}
    second_round = await listen(client, url, last_event_id=head.ids[-1], stop=at_review(2))
    assert planning(second_round.events, "review")[-1]["queries"] == ["chlorophyll"]
    second = await decide(service, client, run_id, {"feedback": "the light and dark reactions"})
    assert second.json()["round"] == 2
    third_round = await listen(client, url, last_event_id=second_round.ids[-1], stop=at_review(3))
    assert planning(third_round.events, "review")[-1]["queries"] == [
        "light reactions",
        "calvin cycle",
    ]
    assert (await decide(service, client, run_id)).json()["round"] == 3
    rest = await rest_of(service, client, run_id, third_round.ids[-1])
    completed = planning(rest.events, "completed")[0]
    assert completed == {**completed, "queries": ["light reactions", "calvin cycle"]}
    assert completed["review"] == "approved"
    # Each re-plan showed the model the plan the reviewer saw and what they said.
    replans = [r for r in service.llm.plan_requests if r.feedback is not None]
    assert [(list(r.previous), r.feedback) for r in replans] == [
        (["alpha", "beta"], "more about chlorophyll"),
        (["chlorophyll"], "the light and dark reactions"),
    ]
    events = head.events + second_round.events + third_round.events + rest.events
    assert [d["decision"] for d in planning(events, "reviewed")] == [
        "feedback",
        "feedback",
        "approved",
    ]
    assert planning(events, "reviewed")[0]["feedback"] == "more about chlorophyll"


async def test_after_five_rounds_only_approve_or_edit_is_taken(
    service: Service, client: httpx.AsyncClient
) -> None:
    run_id, head = await reviewed_run(service, client)
    url = service.url(f"/v1/runs/{run_id}/events")
    last = head.ids[-1]
    for round_number in range(1, 5):
        response = await decide(service, client, run_id, {"feedback": f"try again {round_number}"})
        assert response.status_code == 202, response.text
        step = await listen(client, url, last_event_id=last, stop=at_review(round_number + 1))
        last = step.ids[-1]
    assert planning(step.events, "review")[-1]["feedback_allowed"] is False
    detail = assert_problem(
        await decide(service, client, run_id, {"feedback": "once more"}), 409, "not-awaiting-review"
    )
    assert "re-planned 4 times" in detail
    assert (await decide(service, client, run_id, {"queries": ["final"]})).status_code == 202


async def test_without_a_decision_the_run_goes_on_when_the_review_times_out(
    make_service: MakeService, client: httpx.AsyncClient
) -> None:
    # The wait (0.6 s) is longer than the whole-run deadline: waiting does not count.
    service = await make_service(review_timeout_s=0.6, run_deadline_s=0.4)
    run_id = await service.create(client, QUESTION, review_plan=True)
    events = await listen(client, service.url(f"/v1/runs/{run_id}/events"), timeout=10)
    assert planning(events.events, "review")[0]["expires_in_s"] == 0.6
    assert planning(events.events, "reviewed") == []
    completed = planning(events.events, "completed")[0]
    assert completed["review"] == "timed_out"
    assert completed["queries"] == ["alpha", "beta"]
    assert events.last[1]["status"] == "completed"


async def test_a_run_waiting_for_review_can_be_cancelled(
    service: Service, client: httpx.AsyncClient
) -> None:
    run_id, head = await reviewed_run(service, client)
    cancelled = await client.post(service.url(f"/v1/runs/{run_id}/cancel"))
    assert cancelled.json()["cancelling"] is True
    rest = await rest_of(service, client, run_id, head.ids[-1])
    assert rest.last[1]["status"] == "cancelled"
    assert service.search.calls == []
    late = assert_problem(await decide(service, client, run_id, {}), 409, "not-awaiting-review")
    assert late == f"run {run_id} has ended (cancelled); it takes no decision"


async def awaits_nothing(service: Service, client: httpx.AsyncClient, run_id: str) -> Any:
    """The ended run's snapshot, having checked it and its listing entry await nothing."""
    snapshot = (await client.get(service.url(f"/v1/runs/{run_id}"))).json()
    assert snapshot["awaiting"] is None, snapshot
    assert snapshot["review"] is None
    (listed,) = (await client.get(service.url("/v1/runs"))).json()["runs"]
    assert listed["awaiting"] is None
    assert_problem(await decide(service, client, run_id, {}), 409, "not-awaiting-review")
    return snapshot


async def test_a_run_cancelled_while_its_plan_waits_awaits_nothing_any_more(
    service: Service, client: httpx.AsyncClient
) -> None:
    run_id, _ = await reviewed_run(service, client)
    waiting = (await client.get(service.url(f"/v1/runs/{run_id}"))).json()
    assert waiting["awaiting"] == "plan_review"
    assert waiting["review"]["expires_in_s"] > 0
    assert (await client.post(service.url(f"/v1/runs/{run_id}/cancel"))).status_code == 202
    await service.wait_done(run_id)
    snapshot = await awaits_nothing(service, client, run_id)
    assert snapshot["status"] == "cancelled"
    assert snapshot["plan"] == ["alpha", "beta"]  # what was proposed is still shown


async def test_a_run_stopped_while_its_plan_waits_awaits_nothing_after_a_restart(
    make_service: MakeService, client: httpx.AsyncClient
) -> None:
    service = await make_service(store="sqlite")
    run_id, _ = await reviewed_run(service, client)
    await service.server.close()  # the run ends with done cancelled, code shutdown
    restarted = await make_service(store="sqlite")
    snapshot = await awaits_nothing(restarted, client, run_id)
    assert snapshot["status"] == "cancelled"
    assert snapshot["error"]["code"] == "shutdown"


async def test_a_run_interrupted_while_its_plan_waits_awaits_nothing_after_the_next_start(
    tmp_path: Path, make_service: MakeService, client: httpx.AsyncClient
) -> None:
    # A process that died while the plan waited left the run with no done at all.
    store = await sqlite_log.open(tmp_path / "data" / RUN_STORE_FILE)
    record = RunRecord("0123456789abcdef", QUESTION, RunOptions(review_plan=True))
    await store.create_run(record)
    started: dict[str, Any] = {"phase": "planning", "status": "started", "elapsed_ms": 0}
    review: dict[str, Any] = {
        "phase": "planning",
        "status": "review",
        "elapsed_ms": 3,
        "round": 1,
        "queries": ["alpha", "beta"],
        "review_url": f"/v1/runs/{record.id}/plan",
        "expires_in_s": 900,
        "feedback_allowed": True,
    }
    for seq, data in enumerate((started, review), start=1):
        await store.append(Event.create(record.id, seq, "phase", data, t_ms=data["elapsed_ms"]))
    await store.close()
    service = await make_service(store="sqlite")
    snapshot = await awaits_nothing(service, client, record.id)
    assert snapshot["status"] == "failed"
    assert snapshot["error"]["code"] == "interrupted"


async def test_racing_decisions_exactly_one_wins(
    service: Service, client: httpx.AsyncClient
) -> None:
    run_id, head = await reviewed_run(service, client)
    bodies: list[Any] = [{}, {"queries": ["one"]}, {"feedback": "two"}, {}, {"queries": ["x"]}]
    answers = await asyncio.gather(*(decide(service, client, run_id, b) for b in bodies))
    assert sorted(a.status_code for a in answers) == [202, 409, 409, 409, 409]
    for answer in answers:
        if answer.status_code == 409:
            detail = assert_problem(answer, 409, "not-awaiting-review")
            assert "only the first decision is taken" in detail
    rest = await rest_of(service, client, run_id, head.ids[-1])
    assert len(planning(rest.events, "reviewed")) == 1


async def test_a_decision_names_its_round_and_is_taken_only_while_that_round_is_open(
    service: Service, client: httpx.AsyncClient
) -> None:
    """Reviewers who all saw round 1 send feedback at once. The re-plan is quick enough for
    round 2 to be open before the others' requests are handled; naming round 1, they are
    refused, and round 2 waits for a decision on the plan it shows."""
    service.llm.replans = [["chlorophyll"]]
    run_id, head = await reviewed_run(service, client)
    url = service.url(f"/v1/runs/{run_id}/events")
    bodies = [{"feedback": f"reviewer {n}", "round": 1} for n in range(6)]
    answers = await asyncio.gather(*(decide(service, client, run_id, b) for b in bodies))
    assert sorted(a.status_code for a in answers) == [202, 409, 409, 409, 409, 409]
    second = await listen(client, url, last_event_id=head.ids[-1], stop=at_review(2))
    assert [d["round"] for d in planning(second.events, "reviewed")] == [1]

    late = assert_problem(
        await decide(service, client, run_id, {"round": 1}), 409, "not-awaiting-review"
    )
    assert "round 1 was decided already; the plan now waits in round 2" in late
    early = assert_problem(
        await decide(service, client, run_id, {"round": 3}), 409, "not-awaiting-review"
    )
    assert "round 3 has not begun; the plan waits in round 2" in early
    taken = await decide(service, client, run_id, {"queries": ["leaves"], "round": 2})
    assert taken.status_code == 202, taken.text
    assert taken.json()["round"] == 2
    rest = await rest_of(service, client, run_id, second.ids[-1])
    assert planning(rest.events, "completed")[0]["queries"] == ["leaves"]


async def test_every_listener_sees_the_review_in_its_place_also_after_a_resume(
    service: Service, client: httpx.AsyncClient
) -> None:
    run_id, head = await reviewed_run(service, client)
    url = service.url(f"/v1/runs/{run_id}/events")
    others = await asyncio.gather(*(listen(client, url, stop=at_review()) for _ in range(3)))
    assert all(o.ids == head.ids for o in others)
    assert (await decide(service, client, run_id)).status_code == 202
    rest = await rest_of(service, client, run_id, head.ids[-1])
    late = await listen(client, url, timeout=10)  # joins after the decision: sees it all
    assert late.ids == head.ids + rest.ids
    assert [int(i.rsplit(":", 1)[1]) for i in late.ids] == list(range(1, len(late.ids) + 1))
    assert len(planning(late.events, "review")) == 1
    assert len(planning(late.events, "reviewed")) == 1


async def test_the_list_shows_the_runs_that_wait_for_review(
    service: Service, client: httpx.AsyncClient
) -> None:
    plain = await service.create(client, QUESTION)
    run_id, _ = await reviewed_run(service, client)
    listed = (await client.get(service.url("/v1/runs?awaiting=plan_review"))).json()
    assert [r["id"] for r in listed["runs"]] == [run_id]
    assert listed["runs"][0]["awaiting"] == "plan_review"
    assert listed["next"] is None
    everyone = (await client.get(service.url("/v1/runs"))).json()["runs"]
    assert {r["id"] for r in everyone} >= {plain, run_id}
    assert (await decide(service, client, run_id)).status_code == 202
    await service.wait_done(run_id)
    after = (await client.get(service.url("/v1/runs?awaiting=plan_review"))).json()
    assert after["runs"] == []
    bad = await client.get(service.url("/v1/runs?awaiting=coffee"))
    assert "awaiting must be plan_review" in assert_problem(bad, 400, "invalid-input")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"queries": "alpha"}, "queries"),
        ({"queries": []}, "queries"),
        ({"queries": [f"q{i}" for i in range(9)]}, "queries"),
        ({"queries": ["ok", "   "]}, "queries[1]"),
        ({"queries": ["ok", 7]}, "queries[1]"),
        ({"queries": ["x" * 201]}, "queries[0]"),
        ({"feedback": ""}, "feedback"),
        ({"feedback": "x" * 2001}, "feedback"),
        ({"feedback": ["no"]}, "feedback"),
        # Only `queries` may be null (to approve): a null feedback is no feedback to take.
        ({"feedback": None}, "feedback"),
        ({"queries": None, "feedback": None}, "feedback"),
        # Lone surrogates survive json.loads, and no event could carry them.
        ({"queries": ["ok", "\ud800 csv"]}, "queries[1]"),
        ({"feedback": "more \udfff"}, "feedback"),
        ({"queries": ["a"], "feedback": "b"}, "feedback"),
        ({"queries": None, "feedback": "b"}, "feedback"),
        ({"round": 0}, "round"),
        ({"round": 6}, "round"),
        ({"round": "1"}, "round"),
        ({"round": True}, "round"),
        ({"round": 1.0}, "round"),
        ({"approve": True}, "approve"),
        ([], None),
    ],
)
async def test_bad_decisions_are_400_naming_the_field_and_lose_nothing(
    service: Service, client: httpx.AsyncClient, body: Any, field: str | None
) -> None:
    run_id, _ = await reviewed_run(service, client)
    response = await decide(service, client, run_id, body)
    detail = assert_problem(response, 400, "invalid-input")
    if field is not None:
        assert response.json().get("field") == field or field in detail
    # The run still waits, and takes a good decision.
    assert (await decide(service, client, run_id, {})).status_code == 202


async def test_what_is_not_a_decision_to_take(service: Service, client: httpx.AsyncClient) -> None:
    plain = await service.create(client, QUESTION)
    detail = assert_problem(await decide(service, client, plain, {}), 409, "not-awaiting-review")
    assert detail == f"run {plain} did not ask for a review of its plan (options.review_plan)"
    assert_problem(await decide(service, client, "0123456789abcdef", {}), 404, "not-found")
    run_id, _ = await reviewed_run(service, client)
    form = await client.post(
        service.url(f"/v1/runs/{run_id}/plan"),
        content=b"queries=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert form.status_code == 415
    unknown = await client.post(service.url(f"/v1/runs/{run_id}/plan?force=1"), json={})
    assert_problem(unknown, 400, "invalid-input")
    bad_option = await client.post(
        service.url("/v1/runs"), json={"question": QUESTION, "options": {"review_plan": "yes"}}
    )
    assert "options.review_plan must be true or false" in assert_problem(
        bad_option, 400, "invalid-input"
    )
    bad_param = await client.get(service.url("/v1/research?q=x&review_plan=maybe"))
    assert "review_plan must be true or false" in assert_problem(bad_param, 400, "invalid-input")


async def test_the_one_shot_stream_takes_review_plan_too(
    service: Service, client: httpx.AsyncClient
) -> None:
    url = service.url(f"/v1/research?q={QUESTION.replace(' ', '+')}&review_plan=true")
    head = await listen(client, url, stop=at_review())
    run_id = head.ids[0].split(":")[0]
    assert (await decide(service, client, run_id, {"queries": ["zeta"]})).status_code == 202
    rest = await listen(client, url, last_event_id=head.ids[-1], timeout=10)
    assert planning(rest.events, "completed")[0]["queries"] == ["zeta"]


async def test_a_run_waiting_for_review_with_no_listener_is_abandoned(
    make_service: MakeService, client: httpx.AsyncClient
) -> None:
    service = await make_service(abandon_after_s=0.3)
    run_id = await service.create(client, QUESTION, review_plan=True)
    await service.wait_done(run_id)
    snapshot = (await client.get(service.url(f"/v1/runs/{run_id}"))).json()
    assert snapshot["status"] == "cancelled"
    assert snapshot["error"]["code"] == "abandoned"
    assert snapshot["awaiting"] is None
    assert snapshot["review"] is None


async def test_only_the_owner_or_an_admin_decides(
    tmp_path: Path, make_service: MakeService, client: httpx.AsyncClient
) -> None:
    keys = SqliteKeys(tmp_path / "data" / RUN_STORE_FILE)
    try:
        _, alice = keys.create("alice", admin=False)
        _, bob = keys.create("bob", admin=False)
        _, root = keys.create("root", admin=True)
        service = await make_service(store="sqlite", auth="keys", secret=SECRET)
        created = await client.post(
            service.url("/v1/runs"),
            json={"question": QUESTION, "options": {"review_plan": True}},
            headers={"Authorization": f"Bearer {alice}"},
        )
        run_id, events_url = created.json()["id"], created.json()["events_url"]
        await listen(client, service.url(events_url), stop=at_review())
        token = events_url.split("token=", 1)[1]
        by_bob = await decide(service, client, run_id, {}, Authorization=f"Bearer {bob}")
        assert_problem(by_bob, 404, "not-found")
        by_token = await client.post(service.url(f"/v1/runs/{run_id}/plan?token={token}"), json={})
        assert by_token.status_code == 403
        by_root = await decide(service, client, run_id, {}, Authorization=f"Bearer {root}")
        assert by_root.status_code == 202, by_root.text
        again = await decide(service, client, run_id, {}, Authorization=f"Bearer {alice}")
        assert_problem(again, 409, "not-awaiting-review")
    finally:
        keys.close()


async def test_a_fallback_plan_says_so_in_review_and_not_once_replaced(
    service: Service, client: httpx.AsyncClient
) -> None:
    service.llm.fallback = "the model's plan was unusable; searching the question itself"
    run_id, head = await reviewed_run(service, client)
    assert planning(head.events, "review")[0]["fallback"] == service.llm.fallback
    assert (await decide(service, client, run_id, {"queries": ["mine"]})).status_code == 202
    rest = await rest_of(service, client, run_id, head.ids[-1])
    completed = planning(rest.events, "completed")[0]
    assert "fallback" not in completed
    assert completed["review"] == "edited"
