"""docs/protocol.md's captured streams: a completed, a failed and a cancelled run."""

from __future__ import annotations

from typing import Final
from urllib.parse import urlencode

from tests.samples.blocks import SampleError
from tests.samples.format import Ids, events, fenced, run_id
from tests.samples.service import SLOW_TOKEN_DELAY_MS, Env, Service, serving

DOC: Final = "docs/protocol.md"
COMPLETED: Final = {"q": "How do I read a CSV file?", "breadth": 2, "max_sources": 3}
FAILED: Final = {"q": "xylophone quokka zeppelin"}
CANCELLED: Final = {
    "question": "How do I read a CSV file?",
    "options": {"breadth": 1, "max_sources": 2},
}


def tokens_seen(count: int) -> object:
    """A `when` for Service.stream: true once `count` token events have arrived whole."""
    return lambda text: text.count("event: token\ndata: ") >= count and text.endswith("\n\n")


async def cancelled_after(service: Service, body: dict[str, object], tokens: int) -> str:
    """Create a run, listen to it, cancel it after its `tokens`-th token; the whole stream."""
    created = (await service.request("POST", "/v1/runs", json=body)).json()

    async def cancel() -> None:
        await service.request("POST", f"/v1/runs/{created['id']}/cancel")

    answer = await service.stream(created["events_url"], when=tokens_seen(tokens), then=cancel)
    return answer.text


async def capture(env: Env) -> dict[str, str]:
    """Every sample of protocol.md."""
    ids = Ids()
    async with serving(env, env.settings()) as service:
        completed = (await service.stream("/v1/research?" + urlencode(COMPLETED))).text
        failed = (await service.stream("/v1/research?" + urlencode(FAILED))).text
    async with serving(env, env.settings(token_delay_ms=SLOW_TOKEN_DELAY_MS)) as service:
        cancelled = await cancelled_after(service, CANCELLED, tokens=3)
    _check_completed(completed)
    ids.fix(run_id(completed), "0d4eae04c60a941b")
    ids.fix(run_id(failed), "06dd8db800ee47d8")
    ids.fix(run_id(cancelled), "1cafe13ef69e3eda")
    return {
        "protocol/completed": fenced(ids(completed)),
        "protocol/failed": fenced(ids(failed)),
        "protocol/cancelled": fenced(ids(cancelled)),
    }


def _check_completed(stream: str) -> None:
    """What the prose above the sample says: two queries sharing three slots, 2 then 1."""
    added = [
        len(e.data["sources"])
        for e in events(stream)
        if e.name == "phase" and "query" in e.data and "sources" in e.data
    ]
    if added != [2, 1]:
        raise SampleError(
            f"protocol/completed: queries added {added} sources, the text says [2, 1]"
        )
