"""docker-compose.yml as docker-compose reads it: the default services and the `cluster` profile.

Debian's docker-compose (1.29) knows profiles, but its `config` prints every service whatever
profile is asked for; a service's `profiles` in that output says when it runs, exactly as
`up` decides it: a service without profiles always, one with `cluster` only with
`--profile cluster`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest

from tests import compose_file

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
PROFILE = "cluster"
DEFAULT_SERVICES = {"research", "searxng"}
API_NODES = {"api-1", "api-2"}
WORKER = "worker"
CLUSTER_SERVICES = {"nginx", *API_NODES, WORKER, "redis", "postgres"}


def docker_compose() -> str:
    """Debian's docker-compose; a test without it fails under CI=true and is skipped otherwise."""
    binary = shutil.which("docker-compose")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("docker-compose is missing in CI; .ci/run should have installed it")
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    return binary


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """docker-compose with the file, in a clean environment (no variable of the shell's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RESEARCH_", "POSTGRES_"))}
    return subprocess.run(
        [docker_compose(), "-f", str(COMPOSE), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@cache
def resolved() -> dict[str, compose_file.Service]:
    """Every service as `docker-compose --profile cluster config` resolves it."""
    result = run("--profile", PROFILE, "config")
    assert result.returncode == 0, result.stderr
    return compose_file.services(result.stdout)


def started(profiles: tuple[str, ...]) -> set[str]:
    """The services `up` starts with these `--profile`s."""
    return {
        name
        for name, service in resolved().items()
        if not service.items("profiles") or set(service.items("profiles")) & set(profiles)
    }


@pytest.mark.parametrize(
    "args", [pytest.param((), id="default"), pytest.param(("--profile", PROFILE), id=PROFILE)]
)
def test_docker_compose_validates_the_file(args: tuple[str, ...]) -> None:
    result = run(*args, "config", "-q")
    assert result.returncode == 0, result.stderr


def test_the_default_up_starts_only_the_single_service_and_searxng() -> None:
    assert started(()) == DEFAULT_SERVICES


def test_the_cluster_profile_adds_its_services() -> None:
    assert started((PROFILE,)) == DEFAULT_SERVICES | CLUSTER_SERVICES
    assert run("config", "--profiles").stdout.split() == [PROFILE]


def test_the_cluster_has_two_api_nodes_and_two_workers() -> None:
    services = resolved()
    for node in API_NODES:
        assert services[node].items("command") == ["research-service", "serve", "--no-execute"]
        assert services[node].value("scale") in (None, "1")
    assert services[WORKER].items("command")[:2] == ["research-service", "worker"]
    assert services[WORKER].value("scale") == "2"


@pytest.mark.parametrize("name", sorted(CLUSTER_SERVICES | DEFAULT_SERVICES))
def test_every_service_has_a_healthcheck(name: str) -> None:
    test = resolved()[name].child("healthcheck").items("test")
    assert test[:1] in (["CMD"], ["CMD-SHELL"]), f"{name} has no healthcheck command: {test}"


#: What each service of the cluster waits for, healthy, before it starts.
NEEDS = {
    "nginx": API_NODES,
    **{node: {"postgres", "redis"} for node in API_NODES},
    # searxng: with RESEARCH_SEARCH=searxng the workers search through it.
    WORKER: {"postgres", "redis", "searxng"},
    "redis": set(),
    "postgres": set(),
}


@pytest.mark.parametrize("name", sorted(CLUSTER_SERVICES))
def test_cluster_services_wait_for_what_they_need_to_be_healthy(name: str) -> None:
    depends_on = resolved()[name].child("depends_on")
    needs = set(depends_on.keys())
    assert needs == NEEDS[name]
    conditions = {needed: depends_on.child(needed).value("condition") for needed in needs}
    assert conditions == dict.fromkeys(needs, "service_healthy")


def test_the_workers_healthcheck_asks_their_health_port() -> None:
    worker = resolved()[WORKER]
    command = worker.items("command")
    port = command[command.index("--health-port") + 1]
    assert f"http://127.0.0.1:{port}/healthz" in "\n".join(worker.lines)
