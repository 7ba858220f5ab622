"""Schema migrations of the SQL run stores: named, ordered steps, each recorded once it is applied.

Each store keeps its own steps (its own DDL) and a `schema_migrations` table of the steps
applied; this module holds what they share: the step, the checks on a list of steps, the plan
of what is pending, and the refusal of a store that a newer release has migrated.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Final

from research_service.errors import ConfigError

#: The table, in every SQL store, of the steps applied: one row per version.
MIGRATIONS_TABLE: Final = "schema_migrations"

#: A run's last event's name, and its time (ms since the run started): the same SQL in both.
LAST_NAME: Final = "(SELECT name FROM events WHERE run_id = runs.id ORDER BY seq DESC LIMIT 1)"
LAST_T_MS: Final = "(SELECT t_ms FROM events WHERE run_id = runs.id ORDER BY seq DESC LIMIT 1)"
#: Records the end of each run whose `done` is stored but not its `ended_at`: every run, in the
#: step that adds the column (SQLite's 6, PostgreSQL's 5); after it, each start and prune, for
#: the runs a release before that step ended while serving the migrated store (`migrate`
#: beside a running `serve`, a rolling upgrade), along the open runs' index. Those steps apply
#: it as it is: a change to it needs a step of its own.
RECORD_MISSED_ENDS: Final = (
    f"UPDATE runs SET ended_at = created_at + {LAST_T_MS} / 1000.0 "
    f"WHERE ended_at IS NULL AND {LAST_NAME} = 'done'"
)

#: What no step may do: a migration never drops or deletes what a user has stored. (A
#: foreign key's `ON DELETE CASCADE` is no deletion; PostgreSQL's COLUMN word is optional.)
DESTRUCTIVE: Final = (
    re.compile(r"\bDROP\s+(TABLE|COLUMN|SCHEMA|DATABASE)\b"),
    re.compile(r"\bALTER\s+TABLE\s+.*\bDROP\s+(?!DEFAULT|NOT\s+NULL|CONSTRAINT)\w+", re.DOTALL),
    re.compile(r"\bDELETE\s+FROM\b"),
    re.compile(r"\bTRUNCATE\b"),
)


@dataclass(frozen=True, slots=True)
class Migration:
    """One step: the schema version it reaches, its name, and its statements in order."""

    version: int
    name: str
    statements: tuple[str, ...]

    def describe(self) -> str:
        """The step in words: `schema 1 → 2: run owners and API keys`."""
        return f"schema {self.version - 1} → {self.version}: {self.name}"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one migration pass did to a store: the steps it applied and where it ended."""

    store: str
    before: int
    after: int
    applied: tuple[Migration, ...] = ()
    #: Versions applied by an earlier release before the table existed, recorded now.
    adopted: tuple[int, ...] = ()

    def lines(self) -> list[str]:
        """What happened, one line per step, for an operator (`research-service migrate`)."""
        said = []
        if self.adopted:
            versions = ", ".join(map(str, self.adopted))
            said.append(f"{self.store}: recorded schema {versions} (applied by an earlier release)")
        said += [f"{self.store}: {step.describe()}" for step in self.applied]
        if not self.applied:
            said.append(f"{self.store}: already at schema {self.after}, nothing to apply")
        return said


def check(migrations: Sequence[Migration]) -> None:
    """Raise ValueError unless the steps are numbered 1, 2, 3 … in order, named, and additive."""
    for number, step in enumerate(migrations, start=1):
        if step.version != number:
            raise ValueError(f"migration {step.name!r} is number {step.version}, expected {number}")
        if not step.name or not step.statements:
            raise ValueError(f"migration {step.version} needs a name and statements")
        for statement in step.statements:
            if found := destructive(statement):
                raise ValueError(f"migration {step.version} ({step.name}) contains {found}")


def destructive(statement: str) -> str | None:
    """What in `statement` drops or deletes data, if anything (case and spacing ignored)."""
    words = " ".join(statement.upper().split())
    found = (match.group(0) for pattern in DESTRUCTIVE if (match := pattern.search(words)))
    return next(found, None)


def latest(migrations: Sequence[Migration]) -> int:
    """The newest schema version the steps reach."""
    return migrations[-1].version if migrations else 0


def plan(
    migrations: Sequence[Migration], applied: Collection[int], *, store: str, flag: str
) -> list[Migration]:
    """The steps still to apply, in order; ConfigError for a store this release cannot use.

    `store` names the store in messages ("the run store /data/runs.sqlite3"), `flag` the
    setting that points at another one ("--data-dir").
    """
    newest = latest(migrations)
    if not all(type(version) is int for version in applied):
        # Rails and others keep text versions in a table of this name: not research-service's.
        raise ConfigError(
            f"{store} has a schema_migrations table of another tool (its versions are not "
            f"research-service's); give research-service a database of its own with {flag}"
        )
    found = max(applied, default=0)
    if found > newest:
        raise ConfigError(
            f"{store} has schema version {found}, newer than this release's {newest}; "
            f"upgrade research-service or point {flag} elsewhere"
        )
    pending = [step for step in migrations if step.version not in applied]
    if pending and pending[0].version < found:
        raise ConfigError(
            f"{store} records schema {found} but not schema {pending[0].version} "
            f"({pending[0].name}); restore it from the backup taken before the upgrade"
        )
    return pending
