"""`research-service keys create|list|revoke`: the API keys a service with --auth keys takes."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from research_service.auth.key_store import KeyListing, SqliteKeys
from research_service.auth.keys import NAME_RULE, check_name
from research_service.auth.secret import load_secret
from research_service.cli.catalogue import help_line
from research_service.cli.flags import say, settings_flags, settings_from
from research_service.errors import ConfigError
from research_service.runs.sqlite_db import RUN_STORE_FILE
from research_service.webhooks.signing import derived_secret, key_scope

#: Exit status when `revoke` names no usable key.
EXIT_NO_SUCH_KEY = 1


def add_parser(commands: Any) -> None:
    """The `keys` sub-command and its three actions."""
    keys = commands.add_parser(
        "keys",
        help=help_line("keys"),
        description="Manage the API keys of a service run with --auth keys. Keys are kept in "
        "the run store (runs.sqlite3) in --data-dir, as salted hashes only; a running service "
        "sees a new key at once and a revoked one is refused at once (its open streams close "
        "within seconds).",
    )
    actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser(
        "create",
        help="make a key and print it (once: it is not kept)",
        description="Make a new key for NAME and print it as the last line of stdout. Only a "
        "salted hash is kept: copy the key now. NAME owns the runs made with the key.",
    )
    create.add_argument("name", metavar="NAME", help=f"who the key is for ({NAME_RULE})")
    create.add_argument(
        "--admin", action="store_true", help="the key sees, cancels and exports every run"
    )
    listing = actions.add_parser("list", help="list keys: names, roles, dates, never secrets")
    revoke = actions.add_parser("revoke", help="revoke NAME's key at once")
    revoke.add_argument("name", metavar="NAME", help="the key's name")
    for parser, run in ((create, _create), (listing, _list), (revoke, _revoke)):
        settings_flags(parser, only={"data_dir"})
        parser.set_defaults(run=run)


def _open(args: argparse.Namespace) -> SqliteKeys:
    return SqliteKeys(settings_from(args).data_dir / RUN_STORE_FILE)


def _create(args: argparse.Namespace) -> int:
    try:
        check_name(args.name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    settings = settings_from(args)
    keys = _open(args)
    try:
        info, key = keys.create(args.name, admin=args.admin)
    finally:
        keys.close()
    role = "admin key" if info.admin else "key"
    webhook = derived_secret(load_secret(settings.secret, settings.data_dir), key_scope(info.name))
    say(
        f"made {role} {info.name!r}; it is shown once, below: keep it secret. The webhooks of "
        "its runs are signed with the secret on the line before it (webhook-secret)"
    )
    print(f"webhook-secret {webhook}", flush=True)
    print(key, flush=True)
    return 0


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _row(key: KeyListing) -> tuple[str, ...]:
    state = "revoked " + _when(key.revoked_at) if key.revoked_at is not None else "active"
    role = "admin" if key.admin else "user"
    return (key.name, role, _when(key.created_at), _when(key.last_used_at), state)


def _list(args: argparse.Namespace) -> int:
    keys = _open(args)
    try:
        listing = keys.listing()
    finally:
        keys.close()
    rows = [("NAME", "ROLE", "CREATED", "LAST USED", "STATE"), *map(_row, listing)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 0


def _revoke(args: argparse.Namespace) -> int:
    keys = _open(args)
    try:
        revoked = keys.revoke(args.name)
    finally:
        keys.close()
    if not revoked:
        say(f"no usable key named {args.name!r}; see `research-service keys list`")
        return EXIT_NO_SUCH_KEY
    say(f"revoked {args.name!r}: its requests are refused now, its open streams close soon")
    return 0
