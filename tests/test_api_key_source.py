"""A key the server refuses is reported under the variable it came from, not the SDK's name."""

from __future__ import annotations

from pathlib import Path

import pytest

from research_service.settings import source_of
from tests import cli_process
from tests.fake_openai import FakeOpenAI

GOOD, WRONG = "sk-good", "sk-wrong"


@pytest.mark.parametrize(
    ("environ", "source"),
    [
        ({"RESEARCH_OPENAI_API_KEY": WRONG, "OPENAI_API_KEY": GOOD}, "RESEARCH_OPENAI_API_KEY"),
        ({"OPENAI_API_KEY": GOOD}, "OPENAI_API_KEY"),
        ({"RESEARCH_OPENAI_API_KEY": "", "OPENAI_API_KEY": GOOD}, "OPENAI_API_KEY"),
        ({}, "RESEARCH_OPENAI_API_KEY"),
    ],
)
def test_source_of_names_the_variable_from_env_reads(environ: dict[str, str], source: str) -> None:
    assert source_of("openai_api_key", environ) == source


async def serve_against(fake: FakeOpenAI, data_dir: Path, **env: str) -> cli_process.Finished:
    return await cli_process.run(
        "serve",
        "--llm",
        "openai",
        "--openai-base-url",
        fake.base_url,
        "--data-dir",
        str(data_dir),
        "--port",
        "0",
        **env,
    )


async def test_a_wrong_research_key_over_a_good_sdk_key_is_named(tmp_path: Path) -> None:
    async with FakeOpenAI(api_key=GOOD) as fake:
        result = await serve_against(
            fake, tmp_path, RESEARCH_OPENAI_API_KEY=WRONG, OPENAI_API_KEY=GOOD
        )
    assert result.returncode == 2
    assert "rejected the API key" in result.stderr
    assert "; fix RESEARCH_OPENAI_API_KEY (it overrides OPENAI_API_KEY)" in result.stderr
    assert "set OPENAI_API_KEY" not in result.stderr


async def test_a_wrong_sdk_key_alone_is_still_named_as_such(tmp_path: Path) -> None:
    async with FakeOpenAI(api_key=GOOD) as fake:
        result = await serve_against(fake, tmp_path, OPENAI_API_KEY=WRONG)
    assert result.returncode == 2
    assert "rejected the API key" in result.stderr
    assert result.stderr.rstrip().endswith("; set OPENAI_API_KEY")


async def test_a_key_refused_during_a_run_names_the_variable_it_came_from() -> None:
    """The run-time 401 says which variable to fix, like the start-up check does."""
    import openai

    from research_service.providers.base import PlanRequest
    from research_service.providers.llm_errors import LLMAuthError
    from research_service.providers.openai_llm import OpenAILLM
    from tests.fakes import RecordingReporter

    async with FakeOpenAI(api_key=GOOD) as fake:
        client = openai.AsyncOpenAI(api_key=WRONG, base_url=fake.base_url, max_retries=0)
        model = OpenAILLM(
            client=client,
            planner_model="fake-model",
            synth_model="fake-model",
            key_setting="RESEARCH_OPENAI_API_KEY",
        )
        try:
            with pytest.raises(LLMAuthError) as failure:
                await model.plan(
                    PlanRequest(question="Why?", breadth=2, report=RecordingReporter())
                )
        finally:
            await model.close()
    assert str(failure.value).endswith("; set RESEARCH_OPENAI_API_KEY")


async def test_a_key_revoked_mid_service_is_named_by_the_variable_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the real provider factory: the key was good at start-up, then refused."""
    import httpx

    from research_service.app import create_app
    from research_service.settings import Settings
    from tests.conftest import ServiceTestServer
    from tests.fakes import ScriptedSearch
    from tests.sse import listen

    async with FakeOpenAI(api_key=GOOD, strict=False) as fake:
        monkeypatch.setenv("RESEARCH_OPENAI_API_KEY", GOOD)
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        settings = Settings.from_env(
            data_dir=tmp_path, store="memory", llm="openai", openai_base_url=fake.base_url
        )
        server = ServiceTestServer(create_app(settings, search=ScriptedSearch()), host="127.0.0.1")
        await server.start_server()
        try:
            fake.state.api_key = "sk-rotated"  # the key is revoked after start-up
            async with httpx.AsyncClient(timeout=30) as client:
                created = await client.post(
                    str(server.make_url("/v1/runs")), json={"question": "Why?"}
                )
                got = await listen(client, str(server.make_url(created.json()["events_url"])))
        finally:
            await server.close()
    _, done = got.last
    assert done["error"]["code"] == "llm_auth"
    assert done["error"]["message"].endswith("; set RESEARCH_OPENAI_API_KEY")
