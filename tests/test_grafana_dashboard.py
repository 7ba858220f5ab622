"""deploy/grafana/research-service.json: every metric its queries name is one the service has."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Service
from tests.sse import listen

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "research-service.json"
METRIC = re.compile(r"\bresearch_[a-z0-9_]+\b")
#: `rate(name{…}[…])`: what a rate is taken of.
RATED = re.compile(r"\b(?:rate|increase)\((research_[a-z0-9_]+)")
#: Grafana's grid is 24 columns wide.
GRID_COLUMNS = 24


def load() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return dashboard


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """The panels that show data (rows only group them)."""
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression: the panels' targets and the template variables' queries."""
    exprs = [t["expr"] for p in panels(dashboard) for t in p["targets"]]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            exprs.append(query["query"])
    return exprs


async def scraped_names(service: Service, client: httpx.AsyncClient) -> tuple[set[str], set[str]]:
    """The sample names of a scrape, and the families it describes without a sample."""
    response = await client.get(service.url("/metrics"))
    assert response.status_code == 200, response.text
    samples: set[str] = set()
    described: set[str] = set()
    for family in text_string_to_metric_families(response.text):
        if family.samples:
            samples.update(sample.name for sample in family.samples)
        elif family.type == "gauge":  # a gauge with nothing to report here (the queue)
            described.add(family.name)
    return samples, described


def test_the_dashboard_is_a_grafana_dashboard_on_a_prometheus_datasource_variable() -> None:
    dashboard = load()
    assert dashboard["uid"] == dashboard["title"] == "research-service"
    assert isinstance(dashboard["schemaVersion"], int)
    (datasource,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert (datasource["name"], datasource["query"]) == ("datasource", "prometheus")
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]
            assert target["expr"].strip(), panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= GRID_COLUMNS, panel["title"]


def test_the_dashboard_shows_what_the_issue_asks_for() -> None:
    used = {name for expr in queries(load()) for name in METRIC.findall(expr)}
    for wanted in (
        "research_runs_created_total",
        "research_active_runs",
        "research_open_streams",
        "research_refusals_total",
        "research_phase_seconds_bucket",
        "research_provider_call_seconds_bucket",
        "research_provider_errors_total",
        "research_event_delivery_lag_seconds_bucket",
        "research_event_loop_lag_seconds_bucket",
        "research_queued_runs",
    ):
        assert wanted in used, wanted
    exprs = queries(load())
    assert any("histogram_quantile(0.5," in e and "research_phase_seconds" in e for e in exprs)
    assert any("histogram_quantile(0.95," in e and "research_phase_seconds" in e for e in exprs)


async def test_every_metric_the_dashboard_uses_is_in_a_scrape_after_real_runs(
    service: Service, client: httpx.AsyncClient
) -> None:
    for question in ("What is up?", "And then?"):
        run_id = await service.create(client, question)
        got = await listen(client, service.url(f"/v1/runs/{run_id}/events"), timeout=10)
        assert got.last[0] == "done"
    samples, described = await scraped_names(service, client)
    for expr in queries(load()):
        for name in METRIC.findall(expr):
            assert name in samples | described, f"{name} (in {expr}) is not in the scrape"
        for name in RATED.findall(expr):
            # A rate of a gauge means nothing: only counters and histogram buckets count up.
            assert name.endswith(("_total", "_bucket")), f"rate of {name} in {expr}"
        if "histogram_quantile" in expr:
            assert all(n.endswith("_bucket") for n in METRIC.findall(expr)), expr
