"""The service's settings for a model served by tests/fake_openai: one place for the tests that
run the real `openai` SDK against it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from research_service.settings import Settings
from tests.fake_openai import FakeOpenAI

#: The fake's models: `PLANNER` plans, `WRITER` writes the answer.
PLANNER = "planner-m"
WRITER = "writer-m"


def openai_settings(fake: FakeOpenAI, data_dir: Path, **overrides: Any) -> Settings:
    """Settings for the `openai` provider on `fake`, whose retries wait 10 ms at most."""
    return Settings(
        data_dir=data_dir,
        llm="openai",
        openai_api_key="test-key",
        openai_base_url=fake.base_url,
        planner_model=PLANNER,
        synth_model=WRITER,
        llm_max_wait_s=0.01,
        **overrides,
    )
