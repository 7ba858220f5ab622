"""`docker compose up` runs the service's own defaults, as the README says it does.

So does the `cluster` profile's every node (docs/cluster.md), but for what makes it a cluster:
the shared PostgreSQL store and Redis.
"""

from __future__ import annotations

from dataclasses import MISSING, fields
from pathlib import Path

import pytest

from research_service.settings import Settings
from research_service.settings_fields import env_name
from tests import compose_file

COMPOSE = Path(__file__).resolve().parent.parent / "docker-compose.yml"
# What a container needs that `serve` on a host does not: all interfaces, the volume, and auth
# off as on a host's loopback (the port is published on 127.0.0.1 only; inside the container
# the derived default would be `keys`, since it listens on 0.0.0.0).
CONTAINER_ONLY = {"RESEARCH_HOST": "0.0.0.0", "RESEARCH_DATA_DIR": "/data", "RESEARCH_AUTH": "off"}
# What makes a node of the cluster profile one: the store every node shares, and Redis.
CLUSTER_ONLY = {
    "RESEARCH_STORE": "postgres",
    "RESEARCH_DATABASE_URL": "postgresql://research:research@postgres:5432/research",
    "RESEARCH_REDIS_URL": "redis://redis:6379/0",
}
SINGLE = "research"
CLUSTER_NODES = ("api-1", "api-2", "worker")


def compose_settings(service: str = SINGLE) -> dict[str, str]:
    """A service's RESEARCH_* settings, as the compose file sets them by default."""
    environment = compose_file.services(COMPOSE.read_text(encoding="utf-8"))[service].mapping(
        "environment"
    )
    values: dict[str, str] = {}
    for name, value in environment.items():
        if not name.startswith("RESEARCH_"):
            continue
        whole = compose_file.DEFAULTED.fullmatch(value)
        if whole is not None:
            assert whole["name"] == name, f"{service}: {name} reads another variable"
        values[name] = compose_file.with_defaults(value)
    return values


def service_defaults() -> dict[str, str]:
    """Each settings field's default as an environment variable would spell it."""
    return {
        env_name(f.name): str(f.default)
        for f in fields(Settings)
        if f.default is not MISSING and f.default is not None
    }


@pytest.mark.parametrize("service", [SINGLE, *CLUSTER_NODES])
def test_the_compose_file_sets_only_the_services_own_defaults(service: str) -> None:
    compose = compose_settings(service)
    assert compose, f"no RESEARCH_* settings found for {service} in docker-compose.yml"
    allowed = CONTAINER_ONLY if service == SINGLE else {**CONTAINER_ONLY, **CLUSTER_ONLY}
    defaults = service_defaults()
    differing = {
        name: (value, defaults.get(name))
        for name, value in compose.items()
        # An empty variable is unset (Settings.from_env), like a field whose default is None.
        if allowed.get(name) != value and defaults.get(name, "") != value
    }
    assert differing == {}, "compose default differs from the service's (compose, service)"


def test_the_container_keeps_runs_across_restarts_on_its_volume() -> None:
    compose = compose_settings()
    assert compose["RESEARCH_STORE"] == "sqlite"
    assert compose["RESEARCH_DATA_DIR"] == "/data"
    assert "research-data:/data" in COMPOSE.read_text(encoding="utf-8")


def test_the_port_is_published_on_loopback_unless_keys_are_on() -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    assert '"${RESEARCH_PUBLISH_ADDRESS:-127.0.0.1}:8080:8080"' in text
    assert compose_settings()["RESEARCH_AUTH"] == "off"
    # The comment that says how to publish wider turns keys on in the same breath.
    assert "RESEARCH_PUBLISH_ADDRESS=0.0.0.0 RESEARCH_AUTH=keys" in text


def test_every_cluster_node_has_the_same_settings() -> None:
    """API nodes and workers differ by their command only, never by a setting."""
    first, *others = (compose_settings(node) for node in CLUSTER_NODES)
    assert all(other == first for other in others)
    assert {name: first[name] for name in CLUSTER_ONLY} == CLUSTER_ONLY


def test_the_cluster_nodes_follow_the_single_services_variables() -> None:
    """A variable that changes the single service (RESEARCH_LLM=openai …) changes the cluster."""
    single = compose_settings()
    node = compose_settings(CLUSTER_NODES[0])
    assert {name: node.get(name) for name in single if name not in CLUSTER_ONLY} == {
        name: value for name, value in single.items() if name not in CLUSTER_ONLY
    }
    # One secret for every node: a stream token one node signs, another checks.
    assert "RESEARCH_SECRET" in node


def test_only_nginx_is_published_in_the_cluster_on_loopback_with_auth_off() -> None:
    services = compose_file.services(COMPOSE.read_text(encoding="utf-8"))
    cluster = {name for name, service in services.items() if service.items("profiles")}
    published = {name: services[name].items("ports") for name in cluster}
    assert published.pop("nginx") == ["${RESEARCH_PUBLISH_ADDRESS:-127.0.0.1}:8443:443"]
    assert all(ports == [] for ports in published.values()), published
    assert all(compose_settings(node)["RESEARCH_AUTH"] == "off" for node in CLUSTER_NODES)
