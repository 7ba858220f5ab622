"""The plan review samples of docs/protocol.md and docs/api.md: feedback, edit, approve,
the answers of `POST /v1/runs/{id}/plan`, a review that times out and one that is cancelled."""

from __future__ import annotations

import asyncio
from typing import Any, Final

from research_service.pipeline.review import MAX_REVIEW_ROUNDS
from tests.samples.api import http
from tests.samples.blocks import SampleError
from tests.samples.format import ELLIPSIS, Ids, events, fenced
from tests.samples.service import Answer, Env, Service, serving

QUESTION: Final = "How do I read a CSV file?"
REVIEWED: Final = {"question": QUESTION, "options": {"breadth": 2, "review_plan": True}}
FEEDBACK: Final = {"feedback": "Spreadsheets exported from Excel, with a header row"}
EDIT: Final = {"queries": ["csv DictReader header row", "csv dialect excel"]}
APPROVED: Final = {"question": "How do I parse JSON?", "options": {"review_plan": True}}
TIMED_OUT: Final = {"question": "How do I decompress gzip data?", "options": {"review_plan": True}}
#: --review-timeout-s of the service whose review times out.
SHORT_REVIEW_S: Final = 1.0
#: How often a scenario looks at a snapshot while it waits for a review round.
POLL_S: Final = 0.01


async def awaiting(service: Service, run_id: str, round_number: int) -> Answer:
    """The snapshot of the run once it waits for the review of round `round_number`."""
    async with asyncio.timeout(30):
        while True:
            snapshot = await service.request("GET", f"/v1/runs/{run_id}")
            review = snapshot.json()["review"]
            if review is not None and review["round"] == round_number:
                return snapshot
            await asyncio.sleep(POLL_S)


async def _listened(service: Service, body: dict[str, Any]) -> tuple[str, asyncio.Task[Answer]]:
    """Create a run and listen to it to its end in the background: its id and the listener."""
    created = (await service.request("POST", "/v1/runs", json=body)).json()
    listener = asyncio.create_task(service.stream(created["events_url"]))
    return created["id"], listener


def head(stream: str, last: int) -> str:
    """The stream's `retry:` block and its events up to seq `last`, then a `: …` line."""
    retry, _ = stream.split("\n\n", 1)
    kept = [e.block for e in events(stream) if e.seq <= last]
    return fenced("\n\n".join([retry, *kept, f": {ELLIPSIS}"]))


def planning_head(stream: str) -> str:
    """The stream up to `searching` `started`, the events after it left out."""
    started = next(e for e in events(stream) if e.data.get("phase") == "searching")
    return head(stream, started.seq)


async def _reviewed(service: Service, ids: Ids) -> dict[str, str]:
    """Feedback in round 1, an edit in round 2, then a late decision and a refused one."""
    created = await service.request("POST", "/v1/runs", json=REVIEWED)
    run = created.json()["id"]
    ids.fix(run, "5a3c9e1f7b2d4068")
    listener = asyncio.create_task(service.stream(created.json()["events_url"]))
    snapshot = await awaiting(service, run, 1)
    waiting = await service.request("GET", "/v1/runs?awaiting=plan_review")
    both = await service.request("POST", f"/v1/runs/{run}/plan", json=FEEDBACK | EDIT)
    feedback = await service.request("POST", f"/v1/runs/{run}/plan", json=FEEDBACK)
    await awaiting(service, run, 2)
    edited = await service.request("POST", f"/v1/runs/{run}/plan", json=EDIT)
    late = await service.request("POST", f"/v1/runs/{run}/plan", json={})
    stream = (await listener).text
    after = await service.request("POST", f"/v1/runs/{run}/plan", json={})
    if [e.data.get("status") for e in events(stream)][:6] != [
        "started",
        "review",
        "reviewed",
        "review",
        "reviewed",
        "completed",
    ]:
        raise SampleError(f"review: the planning events are not the ones the text shows: {stream}")
    return {
        "api/review-create": http(created, "Content-Type", "Location"),
        "api/review-snapshot": http(snapshot, "Content-Type", pretty=True),
        "api/list-awaiting": http(waiting, "Content-Type", pretty=True),
        "api/plan-both": http(both, "Content-Type"),
        "api/plan-feedback": http(feedback, "Content-Type"),
        "api/plan-edit": http(edited, "Content-Type"),
        "api/plan-late": http(late, "Content-Type"),
        "api/plan-finished": http(after, "Content-Type"),
        "protocol/reviewed": planning_head(stream),
    }


async def _approved(service: Service, ids: Ids) -> dict[str, str]:
    """A plan approved as it is, with an empty body."""
    run, listener = await _listened(service, APPROVED)
    ids.fix(run, "c41d0b7e93a2f815")
    await awaiting(service, run, 1)
    approved = await service.request("POST", f"/v1/runs/{run}/plan")
    stream = (await listener).text
    return {
        "api/plan-approve": http(approved, "Content-Type"),
        "protocol/approved": planning_head(stream),
    }


async def _round_five(service: Service, ids: Ids) -> dict[str, str]:
    """Feedback after four re-plans: refused; the run still takes an approval."""
    run, listener = await _listened(service, APPROVED)
    ids.fix(run, "c44a44e1bceef1cd")
    for round_number in range(1, MAX_REVIEW_ROUNDS):
        await awaiting(service, run, round_number)
        await service.request("POST", f"/v1/runs/{run}/plan", json=FEEDBACK)
    await awaiting(service, run, MAX_REVIEW_ROUNDS)
    refused = await service.request("POST", f"/v1/runs/{run}/plan", json=FEEDBACK)
    await service.request("POST", f"/v1/runs/{run}/plan")
    await listener
    return {"api/plan-round-5": http(refused, "Content-Type")}


async def _never_asked(service: Service, ids: Ids) -> dict[str, str]:
    """A decision for a run that did not ask for a review."""
    run, listener = await _listened(service, {"question": QUESTION})
    ids.fix(run, "e7f20a4c1b9d3586")
    await listener
    refused = await service.request("POST", f"/v1/runs/{run}/plan", json={})
    return {"api/plan-not-asked": http(refused, "Content-Type")}


async def _timed_out(service: Service, ids: Ids) -> dict[str, str]:
    """Nobody decides within --review-timeout-s: the run goes on with its plan."""
    run, listener = await _listened(service, TIMED_OUT)
    ids.fix(run, "9b6e2d0f4a8c1357")
    stream = (await listener).text
    return {"protocol/review-timed-out": planning_head(stream)}


async def _cancelled(service: Service, ids: Ids) -> dict[str, str]:
    """A run cancelled while it waits for its review."""
    run, listener = await _listened(service, APPROVED)
    ids.fix(run, "3d8a5f1c0e7b9246")
    await awaiting(service, run, 1)
    await service.request("POST", f"/v1/runs/{run}/cancel")
    stream = (await listener).text
    return {"protocol/review-cancelled": fenced(stream)}


async def capture_protocol(env: Env) -> dict[str, str]:
    """protocol.md's review samples."""
    captured = await capture(env)
    return {name: text for name, text in captured.items() if name.startswith("protocol/")}


async def capture_api(env: Env) -> dict[str, str]:
    """api.md's review samples."""
    captured = await capture(env)
    return {name: text for name, text in captured.items() if name.startswith("api/")}


async def capture(env: Env) -> dict[str, str]:
    """Every review sample, of both documents."""
    ids = Ids()
    captured: dict[str, str] = {}
    async with serving(env, env.settings()) as service:
        captured |= await _reviewed(service, ids)
        captured |= await _approved(service, ids)
        captured |= await _never_asked(service, ids)
        captured |= await _round_five(service, ids)
        captured |= await _cancelled(service, ids)
    async with serving(env, env.settings(review_timeout_s=SHORT_REVIEW_S)) as service:
        captured |= await _timed_out(service, ids)
    return {name: ids(text) for name, text in captured.items()}
