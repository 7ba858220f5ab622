"""`docker compose up` runs the service's own defaults, as the README says it does."""

from __future__ import annotations

import re
from dataclasses import MISSING, fields
from pathlib import Path

from research_service.settings import Settings
from research_service.settings_fields import env_name

COMPOSE = Path(__file__).resolve().parent.parent / "docker-compose.yml"
# `NAME: value` lines of the research service's environment (quotes dropped).
_SETTING = re.compile(r"^\s+(?P<name>RESEARCH_[A-Z_]+):\s*\"?(?P<value>[^\"\n]*)\"?$", re.MULTILINE)
# `${NAME:-default}`: the default a variable takes when the shell does not set it.
_DEFAULTED = re.compile(r"^\$\{(?P<name>[A-Z_]+):-(?P<default>[^}]*)\}$")
# What a container needs that `serve` on a host does not: all interfaces, the volume, and auth
# off as on a host's loopback (the port is published on 127.0.0.1 only; inside the container
# the derived default would be `keys`, since it listens on 0.0.0.0).
CONTAINER_ONLY = {"RESEARCH_HOST": "0.0.0.0", "RESEARCH_DATA_DIR": "/data", "RESEARCH_AUTH": "off"}


def compose_settings() -> dict[str, str]:
    """The research service's RESEARCH_* settings, as the compose file sets them by default."""
    values: dict[str, str] = {}
    for match in _SETTING.finditer(COMPOSE.read_text(encoding="utf-8")):
        value = match["value"]
        defaulted = _DEFAULTED.match(value)
        if defaulted is not None:
            assert defaulted["name"] == match["name"], f"{match['name']} reads another variable"
            value = defaulted["default"]
        values[match["name"]] = value
    return values


def service_defaults() -> dict[str, str]:
    """Each settings field's default as an environment variable would spell it."""
    return {
        env_name(f.name): str(f.default)
        for f in fields(Settings)
        if f.default is not MISSING and f.default is not None
    }


def test_the_compose_file_sets_only_the_services_own_defaults() -> None:
    compose = compose_settings()
    assert compose, "no RESEARCH_* settings found in docker-compose.yml"
    defaults = service_defaults()
    differing = {
        name: (value, defaults.get(name))
        for name, value in compose.items()
        # An empty variable is unset (Settings.from_env), like a field whose default is None.
        if CONTAINER_ONLY.get(name) != value and defaults.get(name, "") != value
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
