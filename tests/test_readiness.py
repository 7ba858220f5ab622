"""/readyz asks the real parts (the run store, the model server); /healthz stays cheap."""

from __future__ import annotations

from pathlib import Path

import httpx

from research_service.app import create_app
from research_service.settings import Settings
from tests.conftest import MakeService, ServiceTestServer
from tests.fake_openai import FakeOpenAI
from tests.fakes import ScriptedSearch
from tests.metrics_text import metric_samples


async def test_readyz_is_200_with_every_part_checked(
    make_service: MakeService, client: httpx.AsyncClient
) -> None:
    service = await make_service(store="sqlite")
    ready = await client.get(service.url("/readyz"))
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "checks": {"store": {"status": "ok"}, "llm": {"status": "ok"}, "search": {"status": "ok"}},
    }


async def test_readyz_names_a_model_server_that_stopped_answering(
    tmp_path: Path, client: httpx.AsyncClient
) -> None:
    fake = FakeOpenAI(strict=False)
    await fake.start()
    settings = Settings(
        data_dir=tmp_path, llm="openai", openai_api_key="test-key", openai_base_url=fake.base_url
    )
    server = ServiceTestServer(create_app(settings, search=ScriptedSearch()), host="127.0.0.1")
    await server.start_server()  # its start-up check asks the fake, which answers
    try:
        await fake.close()
        gone = await client.get(str(server.make_url("/readyz")))
        alive = await client.get(str(server.make_url("/healthz")))
        scraped = metric_samples((await client.get(str(server.make_url("/metrics")))).text)
    finally:
        await server.close()
    assert alive.status_code == 200
    assert gone.status_code == 503
    assert gone.headers["content-type"] == "application/problem+json"
    assert gone.headers["retry-after"] == "5"
    problem = gone.json()
    assert problem["type"].endswith("/not-ready")
    assert problem["checks"]["llm"]["status"] == "failing"
    assert problem["checks"]["store"] == {"status": "ok"}
    assert problem["detail"].startswith("llm: ")
    assert fake.url.split("//")[1] in problem["detail"]
    # A probe's answer is no refused request: the metric counts those of the API only.
    assert scraped['research_refusals_total{status="503"}'] == 0
