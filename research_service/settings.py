"""All configuration in one frozen dataclass, read from the environment or CLI flags."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import platformdirs

from research_service import defaults
from research_service.addresses import is_loopback
from research_service.errors import ConfigError
from research_service.settings_fields import (
    check_choice,
    option,
    out_of_bounds,
    parse_value,
    served_hosts,
    variables,
)


def default_data_dir() -> Path:
    """The per-user data folder (e.g. ~/.local/share/research-service on Linux)."""
    return Path(platformdirs.user_data_dir("research-service", appauthor=False))


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of the service; each field is a `--flag` and a `RESEARCH_*` variable."""

    host: str = field(default="127.0.0.1", metadata=option("interface to listen on"))
    port: int = field(default=defaults.DEFAULT_PORT, metadata=option("TCP port to listen on"))
    data_dir: Path = field(
        default_factory=default_data_dir,
        metadata=option("folder for everything the service writes (corpus index, run store)"),
    )
    llm: str = field(
        default="builtin", metadata=option("language model provider", choices=defaults.LLM_CHOICES)
    )
    search: str = field(
        default="local", metadata=option("search provider", choices=defaults.SEARCH_CHOICES)
    )
    store: str = field(
        default="sqlite",
        metadata=option(
            "where runs are kept (sqlite, postgres: durable)", choices=defaults.STORE_CHOICES
        ),
    )
    # Hidden in repr (a URL may hold a password), yet a flag: a variable keeps it off argv.
    database_url: str | None = field(
        default=None,
        repr=False,
        metadata=option("PostgreSQL URL for --store postgres", kind=str, aliases=("DATABASE_URL",)),
    )
    # Cluster mode (docs/cluster.md); the URL hidden in repr, as the database's.
    redis_url: str | None = field(
        default=None, repr=False, metadata=option("Redis URL: cluster mode", kind=str)
    )
    redis_prefix: str = field(default="research:", metadata=option("prefix of its Redis keys"))
    execute: bool = field(default=True, metadata=option("execute runs here (cluster mode)"))
    lease_s: float = field(
        default=15.0, metadata=option("seconds a silent node's runs wait to end as worker_lost")
    )
    drain_s: float = field(
        default=300.0, metadata=option("seconds a stopping executor lets its runs finish")
    )
    retention_days: float = field(
        default=defaults.DEFAULT_RETENTION_DAYS,
        metadata=option("finished runs older than this are deleted"),
    )
    retention_runs: int = field(
        default=defaults.DEFAULT_RETENTION_RUNS,
        metadata=option("only this many newest runs are kept"),
    )
    corpus: Path | None = field(
        default=None,
        metadata=option("folder of .md/.txt/.rst/.html/.pdf files to search instead"),
    )
    record_providers: Path | None = field(
        default=None,
        metadata=option(
            "folder to save every model and search exchange of each run to (cassettes)", kind=Path
        ),
    )
    cassettes: Path | None = field(
        default=None,
        metadata=option(
            "folder of cassettes that --llm replay / --search replay answer from", kind=Path
        ),
    )
    searxng_url: str = field(
        default=defaults.DEFAULT_SEARXNG_URL,
        metadata=option("SearXNG instance for --search searxng", aliases=("SEARXNG_URL",)),
    )
    searxng_engines: str = field(
        default="", metadata=option("SearXNG engines to ask, comma-separated (empty: its defaults)")
    )
    searxng_language: str = field(
        default="", metadata=option("SearXNG search language, e.g. en (empty: its default)")
    )
    searxng_time_range: str = field(
        default="",
        metadata=option(
            "only results from the last day/week/month/year", choices=defaults.TIME_RANGES
        ),
    )
    search_attempts: int = field(
        default=defaults.DEFAULT_SEARCH_ATTEMPTS,
        metadata=option("attempts per search query (retries + 1)"),
    )
    pages_per_run: int = field(
        default=defaults.DEFAULT_PAGES_PER_RUN,
        metadata=option("web pages a run reads for its passages (0: snippets only)"),
    )
    fetch_timeout_s: float = field(
        default=defaults.DEFAULT_FETCH_TIMEOUT_S,
        metadata=option("timeout for reading one web page (s)"),
    )
    fetch_max_bytes: int = field(
        default=defaults.DEFAULT_FETCH_MAX_BYTES, metadata=option("largest web page read (bytes)")
    )
    fetch_max_redirects: int = field(
        default=defaults.DEFAULT_FETCH_MAX_REDIRECTS,
        metadata=option("redirects followed per web page"),
    )
    fetch_allow: str = field(
        default="",
        metadata=option(
            "hosts or networks (comma-separated, e.g. 127.0.0.1,10.0.0.0/8,intranet.example) "
            "that page reading may reach although they are not public"
        ),
    )
    context_chars: int = field(
        default=defaults.DEFAULT_CONTEXT_CHARS,
        metadata=option("characters of source passages handed to the answer"),
    )
    heartbeat_s: float = field(
        default=defaults.DEFAULT_HEARTBEAT_S,
        metadata=option("seconds of silence before a `: ping` comment is sent"),
    )
    retry_ms: int = field(
        default=defaults.DEFAULT_RETRY_MS,
        metadata=option("reconnect delay advertised to clients (ms)"),
    )
    write_timeout_s: float = field(
        default=defaults.DEFAULT_WRITE_TIMEOUT_S,
        metadata=option(
            "seconds a listener's socket may take no data before it is cut (any other "
            "answer's: twice that)"
        ),
    )
    abandon_after_s: float = field(
        default=defaults.DEFAULT_ABANDON_AFTER_S,
        metadata=option("seconds a run may have no listener before it is cancelled"),
    )
    max_active_runs: int = field(
        default=defaults.DEFAULT_MAX_ACTIVE_RUNS,
        metadata=option("runs allowed at once; more get 429 Too Many Requests"),
    )
    max_active_runs_per_owner: int | None = field(
        default=None, metadata=option("runs one API key name may have at once", kind=int)
    )
    max_connections: int | None = field(
        default=None,
        metadata=option(
            "HTTP connections served at once; beyond it idle ones are closed, then new ones "
            "refused",
            kind=int,
        ),
    )
    header_timeout_s: float = field(
        default=defaults.DEFAULT_HEADER_TIMEOUT_S,
        metadata=option(
            "seconds a connection may take to send a request's headers (also how long an "
            "idle keep-alive connection stays open)"
        ),
    )
    body_timeout_s: float = field(
        default=defaults.DEFAULT_BODY_TIMEOUT_S,
        metadata=option("seconds a client may take to send a request body"),
    )
    shutdown_grace_s: float = field(
        default=defaults.DEFAULT_SHUTDOWN_GRACE_S,
        metadata=option(
            "seconds a stopping service gives runs and listeners to finish before it closes "
            "every connection"
        ),
    )
    search_concurrency: int = field(
        default=defaults.DEFAULT_SEARCH_CONCURRENCY,
        metadata=option("search queries run at once per run"),
    )
    search_timeout_s: float = field(
        default=defaults.DEFAULT_SEARCH_TIMEOUT_S,
        metadata=option("timeout of each attempt of a search query (s)"),
    )
    token_delay_ms: float = field(
        default=defaults.DEFAULT_TOKEN_DELAY_MS,
        metadata=option("pause between the builtin model's words, so answers stream visibly"),
    )
    background_nice: int = field(
        default=defaults.MAX_NICE,
        metadata=option("the search and model threads' nice steps below the event loop"),
    )
    openai_base_url: str | None = field(
        default=None,
        metadata=option(
            "OpenAI-compatible server, e.g. http://127.0.0.1:11434/v1",
            kind=str,
            aliases=("OPENAI_BASE_URL",),
        ),
    )
    openai_api_key: str | None = field(
        default=None,
        repr=False,
        metadata=option(
            "API key for --llm openai", kind=str, aliases=("OPENAI_API_KEY",), secret=True
        ),
    )
    model: str | None = field(
        default=None,
        metadata=option("model for both stages (planning and answer)", kind=str),
    )
    planner_model: str | None = field(
        default=None, metadata=option("model that plans the queries", kind=str)
    )
    synth_model: str | None = field(
        default=None, metadata=option("model that writes the answer", kind=str)
    )
    llm_max_attempts: int = field(
        default=defaults.DEFAULT_LLM_MAX_ATTEMPTS,
        metadata=option("attempts per model call (retries + 1)"),
    )
    llm_max_wait_s: float = field(
        default=defaults.DEFAULT_LLM_MAX_WAIT_S,
        metadata=option("longest wait between two attempts (s)"),
    )
    llm_connect_timeout_s: float = field(
        default=defaults.DEFAULT_LLM_CONNECT_TIMEOUT_S,
        metadata=option("model server connect timeout (s)"),
    )
    llm_first_token_timeout_s: float = field(
        default=defaults.DEFAULT_LLM_FIRST_TOKEN_TIMEOUT_S,
        metadata=option("longest wait for the answer's first token (s)"),
    )
    llm_token_timeout_s: float = field(
        default=defaults.DEFAULT_LLM_TOKEN_TIMEOUT_S,
        metadata=option("longest pause between two tokens of the answer (s)"),
    )
    run_deadline_s: float = field(
        default=defaults.DEFAULT_RUN_DEADLINE_S, metadata=option("longest a whole run may take (s)")
    )
    review_timeout_s: float = field(
        default=defaults.DEFAULT_REVIEW_TIMEOUT_S,
        metadata=option(
            "seconds a run with review_plan waits for a decision on its plan before it goes on "
            "with the plan as proposed (not counted against --run-deadline-s)"
        ),
    )
    max_tokens_per_run: int = field(
        default=defaults.DEFAULT_MAX_TOKENS_PER_RUN,
        metadata=option("ceiling on the tokens a run's model calls may generate"),
    )
    auth: str | None = field(
        default=None,
        metadata=option(
            "who may use the API: off (anyone who reaches the port) or keys (Authorization: "
            "Bearer with a key from `research-service keys`)",
            choices=defaults.AUTH_CHOICES,
            kind=str,
        ),
    )
    api_keys_file: Path | None = field(
        default=None,
        metadata=option(
            "file of API keys, one NAME:SECRET[:admin] per line, at least one (for containers; "
            "with or instead of `research-service keys`)",
            kind=Path,
        ),
    )
    secret: str | None = field(
        default=None,
        repr=False,
        metadata=option(
            "secret that signs stream tokens and sessions (default: generated once into "
            "--data-dir)",
            kind=str,
            secret=True,
        ),
    )
    stream_token_ttl_s: float = field(
        default=defaults.DEFAULT_STREAM_TOKEN_TTL_S,
        metadata=option("seconds a run's stream token (events_url ?token=) stays valid"),
    )
    session_ttl_s: float = field(
        default=defaults.DEFAULT_SESSION_TTL_S,
        metadata=option("seconds a web panel sign-in (session cookie) stays valid"),
    )
    allowed_hosts: str = field(
        default="",
        metadata=option(
            "Host header values served, comma-separated (.example.com: it and its "
            "subdomains; *: any); other hosts get 421"
        ),
    )
    cors_origins: str = field(
        default="",
        metadata=option(
            "origins (e.g. https://app.example.com) whose pages may call the API, comma-separated"
        ),
    )
    metrics_token: str | None = field(
        default=None,
        repr=False,
        metadata=option("bearer token that may read GET /metrics", kind=str, secret=True),
    )
    webhook_url: str | None = field(
        default=None, metadata=option("URL told of every run's end (Standard Webhooks)", kind=str)
    )
    public_url: str | None = field(
        default=None,
        metadata=option(
            "the address clients use (scheme, host, port, prefix): webhook links", kind=str
        ),
    )
    webhook_secret: str | None = field(
        default=None,
        repr=False,
        metadata=option("whsec_ secret that signs every webhook", kind=str, secret=True),
    )
    webhook_retry_s: float = field(default=5.0, metadata=option("first webhook retry after (s)"))
    log_level: str = field(
        default="INFO",
        metadata=option("logging level", choices=("DEBUG", "INFO", "WARNING", "ERROR")),
    )
    log_format: str = field(
        default="text", metadata=option("log line format", choices=("text", "json"))
    )

    def __post_init__(self) -> None:
        message = out_of_bounds({f.name: getattr(self, f.name) for f in fields(self)})
        if message:
            raise ConfigError(message)
        for f in fields(self):
            check_choice(f, getattr(self, f.name))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from `RESEARCH_*` variables, then explicit overrides on top."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = next((env[name] for name in variables(f) if env.get(name)), None)
            if raw is not None:  # the first of its variables set and not empty
                values[f.name] = parse_value(f, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def planner(self) -> str:
        """The model that plans."""
        return self.planner_model or self.model or defaults.DEFAULT_MODEL

    @property
    def synthesizer(self) -> str:
        """The model that writes the answer."""
        return self.synth_model or self.model or defaults.DEFAULT_MODEL

    @property
    def auth_mode(self) -> str:
        """`--auth` as given, else off on a loopback --host and keys on any other."""
        if self.auth is not None:
            return self.auth
        return "off" if is_loopback(self.host) else "keys"

    @property
    def host_names(self) -> tuple[str, ...]:
        """The Host header names served: --allowed-hosts, else loopback and the bound host."""
        return served_hosts(self.allowed_hosts, bound=self.host)

    @property
    def origins(self) -> tuple[str, ...]:
        """The --cors-origins, without trailing slashes."""
        return tuple(o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip())

    def with_changes(self, **changes: Any) -> Settings:
        """A copy with some fields changed."""
        return replace(self, **changes)


def source_of(name: str, environ: Mapping[str, str] | None = None) -> str:
    """Where `from_env` takes field `name` from: its first variable set, else RESEARCH_*."""
    env = os.environ if environ is None else environ
    names = variables(next(f for f in fields(Settings) if f.name == name))
    return next((candidate for candidate in names if env.get(candidate)), names[0])
