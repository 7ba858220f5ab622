"""docs/models.md's failure samples: each fault the fake OpenAI server scripts, as streamed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final
from urllib.parse import urlencode

from tests.fake_openai import (
    Cut,
    ErrorEvent,
    FakeOpenAI,
    HTTPError,
    Malformed,
    Reply,
    Reset,
    SlowResponse,
    Stall,
    rate_limited,
    streaming,
    wants_json,
)
from tests.samples.format import Event, Ids, events, run_id
from tests.samples.models import (
    ANSWER,
    FAILING,
    PLAN,
    QUESTION,
    Run,
    ending,
    fake_server,
    openai_settings,
    planned,
    research,
    show,
)
from tests.samples.service import Env, serving
from tests.samples.unaccepting import Unaccepting

Script = Callable[[FakeOpenAI], None]
Pick = Callable[[Run], list[Event | str]]
#: The port the docs show for an address that never accepts.
HANGING_PORT: Final = "8099"


def twice(*faults: Any) -> Script:
    """The planning call fails this way on both attempts."""

    def script(fake: FakeOpenAI) -> None:
        for _ in range(2):
            fake.script.fail(*faults)

    return script


def answer_with(*faults: Any) -> Script:
    """The plan works; the answer stream has these faults."""

    def script(fake: FakeOpenAI) -> None:
        planned(fake)
        fake.script.add(Reply(ANSWER, faults=faults, when=streaming))

    return script


def last(count: int) -> Pick:
    return lambda run: list(run.last(count))


async def failing(env: Env, ids: Ids, script: Script, **overrides: Any) -> Run:
    """A run of QUESTION against a fake scripted by `script` (two attempts, short waits)."""
    async with fake_server() as fake:
        script(fake)
        return await research(env, ids, fake, **(FAILING | overrides))


def slow_plan(fake: FakeOpenAI) -> None:
    fake.script.add(Reply.json(PLAN, when=wants_json, faults=[SlowResponse(delay=4)]))


CASES: Final[dict[str, tuple[Script, Pick, dict[str, Any]]]] = {
    "llm_rate_limited": (twice(rate_limited(retry_after=0.1)), ending, {}),
    "llm_unavailable": (twice(HTTPError(status=503, message="Service Unavailable")), ending, {}),
    "llm_timeout": (
        twice(SlowResponse(delay=3)),
        ending,
        {"llm_first_token_timeout_s": 1, "llm_token_timeout_s": 1},
    ),
    "llm_auth": (
        twice(
            HTTPError(
                status=401, message="Incorrect API key provided: sk-wrong.", code="invalid_api_key"
            )
        ),
        ending,
        {},
    ),
    "llm_bad_request": (
        twice(
            HTTPError(
                status=404, message="The model `fake-model` does not exist.", code="model_not_found"
            )
        ),
        ending,
        {},
    ),
    "llm_bad_response": (twice(Malformed(data="<html>Bad Gateway</html>")), ending, {}),
    "llm_stream_broken": (answer_with(Cut(after=4)), last(3), {}),
    "llm_error": (answer_with(ErrorEvent()), ending, {"llm_max_attempts": 1}),
    "llm_first_token_timeout": (
        answer_with(Stall()),
        ending,
        {"llm_first_token_timeout_s": 1, "llm_token_timeout_s": 3},
    ),
    "llm_token_timeout": (answer_with(Stall(after=3)), last(3), {"llm_token_timeout_s": 1}),
    "run_deadline": (slow_plan, ending, {"run_deadline_s": 1}),
}


async def unreachable(env: Env, ids: Ids) -> dict[str, str]:
    """The server gone after start-up (stopped; then resetting), and one that never accepts."""
    async with fake_server() as fake:
        ids.fix(f"127.0.0.1:{fake.port}/", "127.0.0.1:8081/")
        settings = openai_settings(env, fake.base_url, **FAILING)
        async with serving(env, settings) as service:
            await fake.close()
            gone = (await service.stream("/v1/research?" + urlencode(QUESTION))).text
    reset = await failing(env, ids, twice(Reset()))
    async with Unaccepting() as port:
        ids.fix(f"127.0.0.1:{port.port}/", f"127.0.0.1:{HANGING_PORT}/")
        settings = openai_settings(env, port.base_url, llm_connect_timeout_s=1, **FAILING)
        async with serving(env, settings) as service:
            hanging = (await service.stream("/v1/research?" + urlencode(QUESTION))).text
    ids.stable(run_id(gone))
    ids.stable(run_id(hanging))
    message = reset.pick(lambda e: e.name == "error")[0].data["message"]
    return {
        "models/llm_connect": show(ending(Run(events(ids(gone))))),
        "models/llm_connect_timeout": show(ending(Run(events(ids(hanging))))),
        "models/llm_connect-reset": f'`"{message}"`.\n',
    }


async def capture(env: Env, ids: Ids) -> dict[str, str]:
    """Every failure sample: one run per code."""
    captured = await unreachable(env, ids)
    for code, (script, pick, overrides) in CASES.items():
        captured[f"models/{code}"] = show(pick(await failing(env, ids, script, **overrides)))
    return captured
