"""docs/models.md's captured runs: `--llm openai` against the fake OpenAI server, faults and all."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlencode

from research_service.settings import Settings
from tests.fake_openai import (
    DEFAULT_MODEL,
    FakeOpenAI,
    Reply,
    rate_limited,
    streaming,
    wants_json,
)
from tests.samples.format import Event, Ids, events, fenced, run_id, shown
from tests.samples.service import Env, serving

DOC: Final = "docs/models.md"
QUESTION: Final = {"q": "How do I parse JSON", "max_sources": 2}
PLAN: Final = {"queries": ["parse json", "json decoder"]}
ANSWER: Final = "Use json.loads to parse a JSON string [1]."
#: Where the docs say the fake listens (`python -m tests.fake_openai --port 8081`).
SHOWN_PORT: Final = "8081"
#: The failure samples: few attempts and short waits, so each takes a moment.
FAILING: Final = {"llm_max_attempts": 2, "llm_max_wait_s": 0.2}
MORE_TOKENS: Final = ": (… more token events …)"


@dataclass
class Run:
    """One captured run: its events, and the log lines of the loggers watched meanwhile."""

    events: list[Event]
    log: list[str] = field(default_factory=list)

    def pick(self, keep: Callable[[Event], bool]) -> list[Event]:
        return [event for event in self.events if keep(event)]

    def last(self, count: int) -> list[Event]:
        return self.events[-count:]


def show(picked: list[Event | str]) -> str:
    """Events (and comment lines) as the docs show them: a done's non-empty sources as `[…]`."""
    parts = []
    for item in picked:
        if isinstance(item, str):
            parts.append(item)
        elif item.name == "done" and item.data.get("sources"):
            parts.append(shown(item, brief=("sources",)))
        else:
            parts.append(item.block)
    return fenced("\n\n".join(parts))


def retrying(event: Event) -> bool:
    return event.name == "phase" and "retrying" in event.data


def ending(run: Run) -> list[Event | str]:
    """A failed run's last events: its retries, the error and done."""
    return [*run.pick(retrying), *run.last(2)]


@contextmanager
def watching(*names: str) -> Iterator[list[str]]:
    """The lines these loggers write meanwhile, as `LEVEL logger: message`."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(f"{record.levelname} {record.name}: {record.getMessage()}")

    handler = Keep(logging.INFO)
    loggers = [logging.getLogger(name) for name in names]
    saved = [(logger.level, logger.propagate) for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False  # kept here, not printed
    try:
        yield lines
    finally:
        for logger, (level, propagate) in zip(loggers, saved, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate


@asynccontextmanager
async def fake_server(**options: Any) -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(**options) as fake:
        yield fake


def openai_settings(env: Env, base_url: str, **overrides: Any) -> Settings:
    return env.settings(
        llm="openai",
        openai_api_key="test",
        openai_base_url=base_url,
        model=DEFAULT_MODEL,
        **overrides,
    )


async def research(
    env: Env,
    ids: Ids,
    fake: FakeOpenAI,
    *,
    query: dict[str, Any] = QUESTION,
    loggers: tuple[str, ...] = (),
    **overrides: Any,
) -> Run:
    """One `GET /v1/research` on a service that uses `fake`; its port is shown as 8081."""
    ids.fix(f"127.0.0.1:{fake.port}/", f"127.0.0.1:{SHOWN_PORT}/")
    settings = openai_settings(env, fake.base_url, **overrides)
    with watching(*loggers) as lines:
        async with serving(env, settings) as service:
            stream = (await service.stream("/v1/research?" + urlencode(query))).text
    ids.stable(run_id(stream))
    return Run(events(ids(stream)), [ids(line) for line in lines])


def planned(fake: FakeOpenAI) -> None:
    """The plan the complete run uses, for every planning call."""
    fake.script.always(Reply.json(PLAN, when=wants_json))


async def complete_run(env: Env, ids: Ids) -> dict[str, str]:
    async with fake_server() as fake:
        planned(fake)
        fake.script.always(Reply(ANSWER))
        run = await research(env, ids, fake)
    tokens = run.pick(lambda e: e.is_token)
    picked: list[Event | str] = [
        *run.pick(lambda e: e.data.get("queries") is not None),
        *run.pick(lambda e: e.data.get("phase") == "synthesizing" and "sources" in e.data),
        *tokens[:2],
        MORE_TOKENS,
        *run.last(2),
    ]
    return {"models/complete": show(picked)}


async def retries_and_fallbacks(env: Env, ids: Ids) -> dict[str, str]:
    async with fake_server() as fake:
        planned(fake)
        fake.script.fail(rate_limited(retry_after=0.05), when=streaming)
        fake.script.always(Reply(ANSWER))
        run = await research(
            env, ids, fake, loggers=("research_service.providers.llm_retry",), **FAILING
        )
    async with fake_server() as fake:
        fake.script.always(Reply(ANSWER))  # no plan: the reply is not one
        fallback = await research(env, ids, fake)
    async with fake_server(reject_json_schema=True) as fake:
        planned(fake)
        fake.script.always(Reply(ANSWER))
        rejected = await research(
            env, ids, fake, loggers=("research_service.providers.openai_llm",)
        )
    return {
        "models/retrying": show(run.pick(retrying)),
        "models/retry-log": fenced("\n".join(run.log)),
        "models/fallback": show([*fallback.pick(lambda e: "fallback" in e.data)]),
        "models/json-schema-rejected": fenced(
            "\n".join(line for line in rejected.log if line.startswith("WARNING"))
        ),
    }


async def budget(env: Env, ids: Ids) -> dict[str, str]:
    async with fake_server() as fake:
        planned(fake)
        fake.script.always(Reply(ANSWER))
        run = await research(env, ids, fake, query=QUESTION | {"max_tokens": 16})
    return {"models/budget": show(run.last(3))}


async def capture(env: Env, ids: Ids) -> dict[str, str]:
    """The samples of models.md that are not failures."""
    return (
        await complete_run(env, ids)
        | await retries_and_fallbacks(env, ids)
        | await budget(env, ids)
    )
