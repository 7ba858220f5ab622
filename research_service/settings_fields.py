"""A settings field outside Python: its variable and flag names, its raw text parsed, its bounds.

Works on the fields of the Settings dataclass and their metadata, so `settings.py` holds the
settings themselves and nothing else.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field
from pathlib import Path
from typing import Any, Final

from research_service.defaults import MAX_NICE
from research_service.errors import ConfigError

ENV_PREFIX: Final = "RESEARCH_"
MAX_PORT: Final = 65535
TRUE_WORDS: Final = ("1", "true", "yes", "on")
FALSE_WORDS: Final = ("0", "false", "no", "off")
RELATIONS: Final[Mapping[str, Callable[[Any, Any], bool]]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<=": operator.le,
}
#: The bound each numeric field keeps, in the order they are checked: (field, relation, bound).
#: An unset (None) value is not checked: its default is decided elsewhere.
BOUNDS: Final[tuple[tuple[str, str, int], ...]] = (
    ("heartbeat_s", ">", 0),
    ("retry_ms", ">=", 0),
    ("write_timeout_s", ">", 0),
    ("abandon_after_s", ">", 0),
    ("max_active_runs", ">=", 1),
    ("max_active_runs_per_owner", ">=", 1),
    ("max_connections", ">=", 1),
    ("header_timeout_s", ">", 0),
    ("body_timeout_s", ">", 0),
    ("shutdown_grace_s", ">=", 0),
    ("search_concurrency", ">=", 1),
    ("search_timeout_s", ">", 0),
    ("token_delay_ms", ">=", 0),
    ("background_nice", ">=", 0),
    ("background_nice", "<=", MAX_NICE),
    ("llm_max_attempts", ">=", 1),
    ("llm_max_wait_s", ">=", 0),
    ("llm_connect_timeout_s", ">", 0),
    ("llm_first_token_timeout_s", ">", 0),
    ("llm_token_timeout_s", ">", 0),
    ("run_deadline_s", ">", 0),
    ("review_timeout_s", ">", 0),
    ("max_tokens_per_run", ">=", 1),
    ("search_attempts", ">=", 1),
    ("retention_days", ">", 0),
    ("retention_runs", ">=", 1),
    ("pages_per_run", ">=", 0),
    ("fetch_timeout_s", ">", 0),
    ("fetch_max_bytes", ">=", 1024),
    ("fetch_max_redirects", ">=", 0),
    ("context_chars", ">=", 500),
    ("stream_token_ttl_s", ">", 0),
    ("lease_s", ">=", 1),
    ("drain_s", ">=", 0),
    ("session_ttl_s", ">", 0),
)


def option(
    help: str,
    *,
    choices: tuple[str, ...] | None = None,
    kind: type | None = None,
    aliases: tuple[str, ...] = (),
    secret: bool = False,
) -> dict[str, Any]:
    """The metadata of a settings field: its --help text and how it is read and shown.

    `kind`: the type to parse to when the default (None) does not tell; `aliases`: other
    environment variables read when RESEARCH_* is unset (the SDK's own names); `secret`: no
    CLI flag (argv is visible to every user of the machine) and hidden in repr.
    """
    return {"help": help, "choices": choices, "kind": kind, "aliases": aliases, "secret": secret}


def env_name(name: str) -> str:
    """The environment variable for a settings field."""
    return ENV_PREFIX + name.upper()


def flag_name(name: str) -> str:
    """The CLI flag (without dashes) for a settings field."""
    return name.replace("_", "-")


def variables(field_: Field[Any]) -> tuple[str, ...]:
    """The variables a field is read from, first found wins: RESEARCH_*, then its aliases."""
    return (env_name(field_.name), *field_.metadata.get("aliases", ()))


def is_set(variable: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether the environment variable `variable` is set to something."""
    env = os.environ if environ is None else environ
    return bool(env.get(variable))


def field_type(field_: Field[Any]) -> type:
    """The Python type a settings field is parsed to."""
    if field_.metadata.get("kind") is not None:
        kind: type = field_.metadata["kind"]
        return kind
    if field_.default is not MISSING and field_.default is not None:
        return type(field_.default)
    return Path


def parse_value(field_: Field[Any], raw: str) -> Any:
    """Parse a raw string (from the environment or argv) into a settings field's type."""
    kind = field_type(field_)
    if kind is bool:
        word = raw.strip().lower()
        if word in TRUE_WORDS or word in FALSE_WORDS:
            return word in TRUE_WORDS
        name = field_.name
        raise ConfigError(
            f"{raw!r} is not true or false for {name}; fix {env_name(name)} (true/false)"
        )
    try:
        return kind(raw)
    except ValueError:
        name = field_.name
        raise ConfigError(
            f"{raw!r} is not a valid {kind.__name__} for {name}; "
            f"fix --{flag_name(name)} or {env_name(name)}"
        ) from None


def check_choice(field_: Field[Any], value: Any) -> None:
    """Raise ConfigError when a field that has `choices` holds something else."""
    choices = field_.metadata.get("choices")
    if choices and value is not None and value not in choices:
        raise ConfigError(
            f"{field_.name} must be one of {', '.join(choices)}, got {value!r}; "
            f"set --{flag_name(field_.name)} or {env_name(field_.name)}"
        )


def out_of_bounds(values: Mapping[str, Any]) -> str | None:
    """What the first value outside its bound breaks ("heartbeat_s must be > 0"), or None."""
    port = values["port"]
    if not 0 <= port <= MAX_PORT:
        return f"port must be 0-{MAX_PORT}, got {port}"
    for name, relation, bound in BOUNDS:
        value = values[name]
        if value is not None and not RELATIONS[relation](value, bound):
            return f"{name} must be {relation} {bound}"
    return None
