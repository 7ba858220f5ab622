"""docs/api.md's captured exchanges: create, stream, resume, fail, budget, snapshot, cancel, 429."""

from __future__ import annotations

import json
from typing import Any, Final
from urllib.parse import urlencode

from tests.samples.blocks import SampleError
from tests.samples.format import Ids, events, fenced, run_id, sse_head
from tests.samples.protocol import tokens_seen
from tests.samples.service import SLOW_TOKEN_DELAY_MS, Answer, Env, Service, serving

DOC: Final = "docs/api.md"
PARSE_JSON: Final = {
    "question": "How do I parse JSON?",
    "options": {"breadth": 2, "max_sources": 3},
}
NO_MATCH: Final = {"question": "zzqx vvbnq wqxz?"}
BUDGET: Final = {"question": "How do I parse JSON?", "options": {"max_tokens": 20}}
RESEARCH: Final = {"q": "How do I parse JSON", "max_sources": 2}
RUNNING: Final = {"question": "How do I read a CSV file?"}
CANCELLED: Final = {"question": "How do I decompress gzip data?"}
#: Where the resume example picks up.
RESUME_AFTER: Final = 55
#: The budget example leaves out the events up to `synthesizing` `started`.
BUDGET_SKIPPED: Final = 7


def http(answer: Answer, *headers: str, pretty: bool = False, whole: tuple[str, ...] = ()) -> str:
    """The answer as the docs show it: status, the named headers (their parameters left out,
    except for the `whole` ones, e.g. a cookie's attributes), the (pretty) JSON body."""
    lines = [f"HTTP {answer.status}"]
    for name in headers:
        value = answer.headers[name]
        lines.append(f"{name}: {value if name in whole else value.split(';')[0]}")
    body = json.dumps(answer.json(), indent=2, ensure_ascii=False) if pretty else answer.text
    return fenced("\n".join(lines) + "\n\n" + body, "http")


def tail(stream: str, first_seq: int) -> str:
    """The events from `first_seq` on, after a `: …` line for those left out."""
    kept = [e.block for e in events(stream) if e.seq >= first_seq]
    return fenced(": …\n\n" + "\n\n".join(kept))


async def _completed_runs(service: Service, ids: Ids) -> dict[str, str]:
    created = await service.request("POST", "/v1/runs", json=PARSE_JSON)
    actual, url = created.json()["id"], created.json()["events_url"]
    run = ids.fix(actual, "8583d6c0252677d2")
    stream = (await service.stream(url)).text
    done = events(stream)[-1]
    if done.seq <= RESUME_AFTER + 1:
        raise SampleError(f"api/resume: the run has {done.seq} events, too few to resume after 55")
    resumed = await service.stream(url, headers={"Last-Event-ID": f"{actual}:{RESUME_AFTER}"})
    after_done = await service.stream(url, headers={"Last-Event-ID": f"{actual}:{done.seq}"})
    snapshot = await service.request("GET", f"/v1/runs/{actual}")
    cancel_finished = await service.request("POST", f"/v1/runs/{actual}/cancel")
    return {
        "api/create": http(created, "Content-Type", "Location"),
        "api/events": fenced(sse_head() + stream),
        "api/resume": fenced(sse_head() + resumed.text),
        "api/resume-done": (
            f"Resuming with the id of the `done` event (`{run}:{done.seq}`) gives "
            f"`{after_done.status} No Content`, so a\nbrowser's `EventSource` stops "
            "reconnecting:\n\n" + fenced(f"HTTP {after_done.status}")
        ),
        "api/snapshot": http(snapshot, "Content-Type", pretty=True),
        "api/cancel-finished": http(cancel_finished, "Content-Type"),
    }


async def _other_runs(service: Service, ids: Ids) -> dict[str, str]:
    failed = await service.request("POST", "/v1/runs", json=NO_MATCH)
    ids.fix(failed.json()["id"], "2bf4fe023da7d223")
    failed_stream = (await service.stream(failed.json()["events_url"])).text
    budget = await service.request("POST", "/v1/runs", json=BUDGET)
    ids.fix(budget.json()["id"], "2ce97467155377a4")
    budget_stream = (await service.stream(budget.json()["events_url"])).text
    skipped = events(budget_stream)[BUDGET_SKIPPED - 1].data
    if (skipped.get("phase"), skipped.get("status")) != ("synthesizing", "started"):
        raise SampleError(f"api/budget-stream: event {BUDGET_SKIPPED} is {skipped}")
    research = (await service.stream("/v1/research?" + urlencode(RESEARCH))).text
    ids.fix(run_id(research), "89c95ed9bfd46e4a")
    return {
        "api/failed": fenced(sse_head() + failed_stream),
        "api/budget-created": http(budget, "Content-Type", "Location"),
        "api/budget-stream": tail(budget_stream, BUDGET_SKIPPED + 1),
        "api/research": fenced(sse_head() + research),
    }


async def _listing_and_health(service: Service) -> dict[str, str]:
    """The newest two runs in brief, and a readiness answer."""
    listing = await service.request("GET", "/v1/runs?limit=2")
    ready = await service.request("GET", "/readyz")
    return {
        "api/list": http(listing, "Content-Type", pretty=True),
        "api/readyz": http(ready, "Content-Type", pretty=True),
    }


async def _live_runs(service: Service, ids: Ids) -> dict[str, str]:
    """A snapshot taken mid-answer, and a cancel after the third token (slow tokens)."""
    seen: dict[str, Any] = {}
    running = (await service.request("POST", "/v1/runs", json=RUNNING)).json()
    ids.fix(running["id"], "7d15edf2a4b0c4f9")

    async def snapshot_then_cancel() -> None:
        seen["snapshot"] = await service.request("GET", f"/v1/runs/{running['id']}")
        await service.request("POST", f"/v1/runs/{running['id']}/cancel")

    await service.stream(running["events_url"], when=tokens_seen(7), then=snapshot_then_cancel)
    cancelled = (await service.request("POST", "/v1/runs", json=CANCELLED)).json()
    ids.fix(cancelled["id"], "e0b2e93dee5fc9ce")

    async def cancel() -> None:
        seen["cancel"] = await service.request("POST", f"/v1/runs/{cancelled['id']}/cancel")

    stream = (await service.stream(cancelled["events_url"], when=tokens_seen(3), then=cancel)).text
    return {
        "api/snapshot-running": http(seen["snapshot"], "Content-Type", pretty=True),
        "api/cancel": http(seen["cancel"], "Content-Type"),
        "api/cancel-stream": tail(stream, events(stream)[-4].seq),
    }


async def _too_many(service: Service) -> dict[str, str]:
    """Two runs going on a service that allows two: the third is refused."""
    for _ in range(2):
        await service.request("POST", "/v1/runs", json=RUNNING)
    refused = await service.request("POST", "/v1/runs", json=RUNNING)
    return {"api/too-many": http(refused, "Content-Type", "Retry-After")}


async def capture(env: Env) -> dict[str, str]:
    """Every sample of api.md."""
    ids = Ids()
    captured: dict[str, str] = {}
    async with serving(env, env.settings()) as service:
        captured |= await _completed_runs(service, ids)
        captured |= await _other_runs(service, ids)
        captured |= await _listing_and_health(service)
    slow = env.settings(token_delay_ms=SLOW_TOKEN_DELAY_MS)
    async with serving(env, slow) as service:
        captured |= await _live_runs(service, ids)
    async with serving(env, slow.with_changes(max_active_runs=2)) as service:
        captured |= await _too_many(service)
    return {name: ids(text) for name, text in captured.items()}
