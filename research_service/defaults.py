"""The default of every setting, and the fixed choices some settings take."""

from __future__ import annotations

from typing import Final

DEFAULT_PORT: Final = 8080
DEFAULT_HEARTBEAT_S: Final = 15.0
DEFAULT_RETRY_MS: Final = 3000
DEFAULT_WRITE_TIMEOUT_S: Final = 30.0
DEFAULT_ABANDON_AFTER_S: Final = 300.0
DEFAULT_MAX_ACTIVE_RUNS: Final = 32
DEFAULT_HEADER_TIMEOUT_S: Final = 10.0
DEFAULT_BODY_TIMEOUT_S: Final = 30.0
DEFAULT_SHUTDOWN_GRACE_S: Final = 5.0
DEFAULT_SEARCH_CONCURRENCY: Final = 4
DEFAULT_SEARCH_TIMEOUT_S: Final = 10.0
DEFAULT_TOKEN_DELAY_MS: Final = 15.0
#: The highest nice value Linux has (the lowest priority short of SCHED_IDLE): --background-nice.
MAX_NICE: Final = 19
#: How many requests, runs and background results go on per event-loop turn (loop_turns.py).
WAKE_UPS_PER_TURN: Final = 16
#: A run stored while other runs are being created waits for them before its pipeline starts,
#: for at most this many seconds, so that their POSTs are answered first (runs/creations.py).
START_AFTER_CREATIONS_S: Final = 0.15
LLM_CHOICES: Final = ("builtin", "openai", "replay")
DEFAULT_MODEL: Final = "gpt-4o-mini"
DEFAULT_LLM_MAX_ATTEMPTS: Final = 4
DEFAULT_LLM_MAX_WAIT_S: Final = 20.0
DEFAULT_LLM_CONNECT_TIMEOUT_S: Final = 10.0
DEFAULT_LLM_FIRST_TOKEN_TIMEOUT_S: Final = 60.0
DEFAULT_LLM_TOKEN_TIMEOUT_S: Final = 30.0
DEFAULT_RUN_DEADLINE_S: Final = 600.0
DEFAULT_MAX_TOKENS_PER_RUN: Final = 16_000
SEARCH_CHOICES: Final = ("local", "searxng", "replay")
TIME_RANGES: Final = ("", "day", "week", "month", "year")
DEFAULT_SEARXNG_URL: Final = "http://127.0.0.1:8888"
DEFAULT_SEARCH_ATTEMPTS: Final = 3
DEFAULT_FETCH_TIMEOUT_S: Final = 10.0
DEFAULT_FETCH_MAX_BYTES: Final = 2 * 1024 * 1024
DEFAULT_FETCH_MAX_REDIRECTS: Final = 5
DEFAULT_PAGES_PER_RUN: Final = 8
DEFAULT_CONTEXT_CHARS: Final = 12_000
DEFAULT_RETENTION_DAYS: Final = 30.0
DEFAULT_RETENTION_RUNS: Final = 1000
#: How often finished runs past the retention limits are deleted (s).
RETENTION_INTERVAL_S: Final = 600.0
#: The shortest --secret / RESEARCH_SECRET accepted (it signs every token).
MIN_SECRET_CHARS: Final = 32
STORE_CHOICES: Final = ("memory", "sqlite", "postgres")
AUTH_CHOICES: Final = ("off", "keys")
DEFAULT_STREAM_TOKEN_TTL_S: Final = 3600.0
DEFAULT_SESSION_TTL_S: Final = 86400.0
#: Host names that always reach this machine itself (plus the bound --host).
LOOPBACK_HOSTS: Final = ("localhost", "127.0.0.1", "::1")
#: How long a run waits for its plan to be reviewed before it goes on with the plan (s).
DEFAULT_REVIEW_TIMEOUT_S: Final = 900.0
