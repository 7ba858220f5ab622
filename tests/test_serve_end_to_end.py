"""`research-service serve` as a user runs it: a real process on its embedded defaults."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from research_service.defaults import DEFAULT_PORT
from tests.served import CORPUS, Served, start, stop
from tests.sse import listen


@pytest.fixture(scope="session")
def stdlib_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data dir for the session, so the stdlib corpus is indexed once."""
    return tmp_path_factory.mktemp("stdlib-data")


@pytest.fixture
async def user_corpus_service(tmp_path: Path) -> AsyncIterator[Served]:
    # RESEARCH_PORT=0: the kernel picks the port (which `start` reads from the log), where
    # without the variable the service would bind DEFAULT_PORT.
    served = await start(
        "--corpus",
        str(CORPUS),
        "--token-delay-ms",
        "0",
        env={"RESEARCH_PORT": "0", "RESEARCH_DATA_DIR": str(tmp_path / "data")},
    )
    yield served
    if served.process.returncode is None:
        await stop(served)


async def ask(base: str, question: str) -> tuple[dict[str, object], str, list[str]]:
    async with httpx.AsyncClient(timeout=30) as client:
        created = await client.post(f"{base}/v1/runs", json={"question": question})
        assert created.status_code == 201, created.text
        got = await listen(client, base + created.json()["events_url"], timeout=60)
    name, done = got.last
    assert name == "done"
    return done, got.text(), got.names


async def test_env_vars_configure_the_port_and_data_dir(
    user_corpus_service: Served, tmp_path: Path
) -> None:
    port = user_corpus_service.port
    assert 0 < port != DEFAULT_PORT
    assert user_corpus_service.base.rstrip("/").endswith(f":{port}")
    assert (tmp_path / "data").is_dir()
    async with httpx.AsyncClient() as client:
        health = await client.get(f"{user_corpus_service.base.rstrip('/')}/healthz")
    assert health.json() == {"status": "ok"}


async def test_user_corpus_answer_is_cited_and_streamed(user_corpus_service: Served) -> None:
    base = user_corpus_service.base.rstrip("/")
    done, streamed, names = await ask(base, "How does photosynthesis work?")
    assert done["status"] == "completed", done
    assert streamed == done["answer"]
    sources = done["sources"]
    assert isinstance(sources, list)
    assert sources
    cited = {int(n) for n in re.findall(r"\[(\d+)\]", str(done["answer"]))}
    assert cited
    assert cited <= {s["id"] for s in sources}
    assert all(str(s["url"]).startswith("file://") for s in sources)
    assert names.count("token") > 5  # streamed word by word
    assert await stop(user_corpus_service) == 0


async def test_first_question_on_the_default_corpus_gets_a_cited_answer(
    stdlib_data_dir: Path,
) -> None:
    served = await start("--port", "0", "--data-dir", str(stdlib_data_dir), "--token-delay-ms", "0")
    try:
        base = served.base.rstrip("/")
        done, streamed, _ = await ask(base, "How do I parse JSON in Python?")
    finally:
        assert await stop(served) == 0
    assert done["status"] == "completed", done
    assert streamed == done["answer"]
    urls = [str(s["url"]) for s in done["sources"]]  # type: ignore[attr-defined]
    assert any("library/json" in url for url in urls), urls
    assert re.search(r"\[\d+\]", streamed)
    assert "json" in streamed.lower()


async def test_bad_flag_value_is_a_clear_startup_error(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "research_service",
        "serve",
        "--data-dir",
        str(tmp_path),
        env={**os.environ, "RESEARCH_HEARTBEAT_S": "-1"},
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    assert b"heartbeat_s must be > 0" in err
    assert b"RESEARCH_" in err


async def test_bad_flag_is_a_usage_error_naming_flag_and_variable(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "research_service",
        "serve",
        "--port",
        "abc",
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    assert b"Traceback" not in err
    assert b"--port" in err
    assert b"RESEARCH_PORT" in err


async def test_openai_without_a_key_fails_at_start_up_saying_what_to_do(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if "OPENAI_API_KEY" not in k}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "research_service",
        "serve",
        "--llm",
        "openai",
        "--data-dir",
        str(tmp_path),
        "--port",
        "0",
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2
    assert b"OPENAI_API_KEY is not set" in err
    assert b"Traceback" not in err
