"""docs/cassettes.md's samples: a recorded exchange, and what a replay lacks an answer for."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Final

from research_service.providers.cassettes import CASSETTE_FILE
from tests.samples.format import Ids, events, fenced, run_id
from tests.samples.service import Env, serving

DOC: Final = "docs/cassettes.md"
#: The folder the docs record to and replay from.
SHOWN_FOLDER: Final = "cassettes"
RECORDED: Final = {"question": "How do I parse JSON?", "options": {"breadth": 2, "max_sources": 2}}
OTHER_QUESTION: Final = {"question": "How do I parse YAML?"}
MORE_SOURCES: Final = {
    "question": "How do I parse JSON?",
    "options": {"breadth": 2, "max_sources": 3},
}


async def capture(env: Env) -> dict[str, str]:
    """Record one run, replay it, then ask what the cassette does not hold."""
    ids = Ids(seed=DOC)
    with tempfile.TemporaryDirectory(prefix="cassettes-") as tmp:
        folder = Path(tmp) / SHOWN_FOLDER
        ids.fix(str(folder), SHOWN_FOLDER)
        recording = env.settings(record_providers=folder)
        async with serving(env, recording) as service:
            created = (await service.request("POST", "/v1/runs", json=RECORDED)).json()
            recorded = (await service.stream(created["events_url"])).text
        exchanges = (folder / CASSETTE_FILE).read_text(encoding="utf-8").splitlines()
        replaying = env.settings(llm="replay", search="replay", cassettes=folder)
        streams = []
        async with serving(env, replaying) as service:
            for body in (RECORDED, OTHER_QUESTION, MORE_SOURCES):
                created = (await service.request("POST", "/v1/runs", json=body)).json()
                streams.append((await service.stream(created["events_url"])).text)
    replayed, other, more = streams
    for stream in (recorded, *streams):
        ids.stable(run_id(stream))
    if events(replayed)[-1].data["answer"] != events(recorded)[-1].data["answer"]:
        raise AssertionError("the replay did not give the recorded answer")
    failed_query = [e for e in events(ids(more)) if "error" in e.data and "query" in e.data]
    return {
        "cassettes/plan-line": fenced(exchanges[0], "json"),
        "cassettes/kinds": fenced("\n".join(_kinds(exchanges)), "text"),
        "cassettes/unrecorded-plan": fenced("\n\n".join(e.block for e in events(ids(other))[-2:])),
        "cassettes/unrecorded-search": fenced(
            "\n\n".join(e.block for e in [*failed_query, *events(ids(more))[-2:-1]])
        ),
    }


def _kinds(lines: list[str]) -> list[str]:
    """Each exchange's kind and request, one per line: what a run asked its providers."""
    import json

    shown = []
    for line in lines:
        entry = json.loads(line)
        request = {k: v for k, v in entry["request"].items() if k != "sources"}
        if "sources" in entry["request"]:
            request["sources"] = f"[{len(entry['request']['sources'])} sources]"
        shown.append(f"{entry['kind']:<10} {json.dumps(request, ensure_ascii=False)}")
    return shown
