"""A settings field outside Python: its variable and flag names, its raw text parsed, its bounds.

Works on the fields of the Settings dataclass and their metadata, so `settings.py` holds the
settings themselves and nothing else.
"""

from __future__ import annotations

import math
import operator
import os
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from research_service.defaults import LOOPBACK_HOSTS, MAX_NICE, MIN_SECRET_CHARS
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
#: The largest integer any setting takes (2**53: every store and JSON holds it exactly).
MAX_INT_SETTING: Final = 2**53
#: The longest a session, a stream token or a plan review may last (a year): their end is
#: written as a date, which a larger value would put past the year 9999.
MAX_LIFETIME_S: Final = 365 * 24 * 3600
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
    ("review_timeout_s", "<=", MAX_LIFETIME_S),
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
    ("stream_token_ttl_s", "<=", MAX_LIFETIME_S),
    ("lease_s", ">=", 1),
    ("drain_s", ">=", 0),
    ("session_ttl_s", ">", 0),
    ("session_ttl_s", "<=", MAX_LIFETIME_S),
    ("webhook_retry_s", ">", 0),
)
#: The URL settings: the schemes each takes, an example, and its other variables. A URL is
#: never echoed back in an error: it may hold a password.
URLS: Final[Mapping[str, tuple[tuple[str, ...], str, str]]] = {
    "database_url": (
        ("postgresql", "postgres"),
        "postgresql://research@db.internal:5432/research",
        " or DATABASE_URL",
    ),
    "redis_url": (("redis", "rediss", "unix"), "redis://redis.internal:6379/0", ""),
    "searxng_url": (("http", "https"), "http://127.0.0.1:8888", " or SEARXNG_URL"),
    "openai_base_url": (("http", "https"), "http://127.0.0.1:11434/v1", " or OPENAI_BASE_URL"),
    "webhook_url": (("http", "https"), "https://hooks.example.com/research", ""),
    "public_url": (("http", "https"), "https://research.example.com/research", ""),
}
#: How much of a value that cannot be parsed an error message quotes.
QUOTED_CHARS: Final = 40


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


def where(name: str) -> str:
    """How an operator sets field `name`: "--heartbeat-s or RESEARCH_HEARTBEAT_S"."""
    return f"--{flag_name(name)} or {env_name(name)}"


def quoted(raw: str) -> str:
    """`raw` for an error message: its repr, cut short (a 10,000-digit value is one line too)."""
    if len(raw) <= QUOTED_CHARS:
        return repr(raw)
    return f"{raw[:QUOTED_CHARS]!r}… ({len(raw)} characters)"


def parse_value(field_: Field[Any], raw: str) -> Any:
    """Parse a raw string (from the environment or argv) into a settings field's type."""
    kind = field_type(field_)
    name = field_.name
    if kind is bool:
        word = raw.strip().lower()
        if word in TRUE_WORDS or word in FALSE_WORDS:
            return word in TRUE_WORDS
        raise ConfigError(
            f"{quoted(raw)} is not true or false for {name}; fix {env_name(name)} (true/false)"
        )
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(
            f"{quoted(raw)} is not a valid {kind.__name__} for {name}; fix {where(name)}"
        ) from None
    if kind is float and not math.isfinite(value):
        # `inf` (or 1e400) would switch a timeout or a limit off; `nan` compares false to all.
        raise ConfigError(f"{quoted(raw)} is not a finite number for {name}; fix {where(name)}")
    return value


def check_choice(field_: Field[Any], value: Any) -> None:
    """Raise ConfigError when a field that has `choices` holds something else."""
    choices = field_.metadata.get("choices")
    if choices and value is not None and value not in choices:
        raise ConfigError(
            f"{field_.name} must be one of {', '.join(choices)}, got {value!r}; "
            f"set --{flag_name(field_.name)} or {env_name(field_.name)}"
        )


def out_of_bounds(values: Mapping[str, Any]) -> str | None:
    """What the first value outside its bound breaks ("heartbeat_s must be > 0; fix …"), or None."""
    port = values["port"]
    if not 0 <= port <= MAX_PORT:
        return f"port must be 0-{MAX_PORT}, got {port}; fix {where('port')}"
    for name, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            return f"{name} must be a finite number, got {value}; fix {where(name)}"
        # SQLite, PostgreSQL and JSON take integers up to here: a larger one would be taken at
        # start and fail later (a retention count of 10**23 broke every prune).
        if type(value) is int and abs(value) > MAX_INT_SETTING:
            return f"{name} must be at most {MAX_INT_SETTING}, got {value}; fix {where(name)}"
    for name, relation, bound in BOUNDS:
        value = values[name]
        if value is not None and not RELATIONS[relation](value, bound):
            return f"{name} must be {relation} {bound}, got {value}; fix {where(name)}"
    secret = values["secret"]
    if secret is not None and len(secret) < MIN_SECRET_CHARS:
        return f"secret must be at least {MIN_SECRET_CHARS} characters; fix {env_name('secret')}"
    return bad_url(values)


def served_hosts(allowed_hosts: str, *, bound: str) -> tuple[str, ...]:
    """The Host names served: `allowed_hosts` (comma-separated), else loopback and `bound`."""
    named = tuple(n.strip().lower() for n in allowed_hosts.split(",") if n.strip())
    if named:
        return named
    host = bound.strip("[]").lower()
    unnamed = host in ("", "0.0.0.0", "::") or host in LOOPBACK_HOSTS
    return (*LOOPBACK_HOSTS, *(() if unnamed else (host,)))


def bad_url(values: Mapping[str, Any]) -> str | None:
    """What is wrong with the first URL setting that cannot be used, or None (never the URL)."""
    for name, (schemes, example, aliases) in URLS.items():
        url = values[name]
        problem = None if url is None else url_problem(url, schemes)
        if not problem and name == "public_url" and url and not _bare(url):
            problem = "links are made by appending paths to it: it takes no query or fragment"
        if problem:
            fix = where(name) + aliases
            return f"{name} is not a usable URL ({problem}); fix {fix}, e.g. {example}"
    return None


def _bare(url: str) -> bool:
    """Whether `url` (one that parses) has no query and no fragment."""
    parts = urlsplit(url)
    return not parts.query and not parts.fragment and "?" not in url and "#" not in url


def url_problem(url: str, schemes: tuple[str, ...]) -> str | None:
    """Why `url` is no URL of one of `schemes`, in words that quote none of it; None if it is."""
    if any(c <= " " or c == "\x7f" for c in url):
        return "it holds a space or a control character"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return f"its host or port cannot be read: a port is 1-{MAX_PORT}, an IPv6 host in [ ]"
    if parts.scheme.lower() not in schemes:
        return "it must start with " + " or ".join(f"{scheme}://" for scheme in schemes)
    # PostgreSQL's may name none: `postgresql:///research?host=/run/postgresql` (a socket).
    if not parts.hostname and parts.scheme.lower() not in ("unix", "postgresql", "postgres"):
        return "it names no host"
    return None if port is None or port > 0 else "its port must be 1-65535"
