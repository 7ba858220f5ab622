"""What every sub-command shares: settings as flags, argument parsers, messages."""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import os
import stat
import sys
from collections.abc import Collection
from dataclasses import Field, fields
from pathlib import Path
from typing import Any, Protocol

from research_service.client.output import printable
from research_service.errors import ConfigError
from research_service.settings import Settings
from research_service.settings_fields import field_type, flag_name, parse_value, variables

# Defaults that are not a plain value, described in words for --help.
_DEFAULT_TEXT = {
    "data_dir": "the per-user data folder",
    "corpus": "the Python standard library's docs",
    "openai_base_url": "OpenAI's API, or $OPENAI_BASE_URL",
    "model": "gpt-4o-mini",
    "planner_model": "--model",
    "synth_model": "--model",
    "max_connections": "3/4 of the open-files limit",
    "auth": "off on a loopback --host, keys otherwise",
    "api_keys_file": "none",
    "allowed_hosts": "localhost, 127.0.0.1, ::1 and --host",
    "cors_origins": "none",
    "database_url": "none",
    "redis_url": "none: one process, no cluster",
    "execute": "yes",
}


class _Arguments(Protocol):
    """A parser or an argument group: what takes `add_argument`."""

    def add_argument(self, *names: str, **options: Any) -> Any: ...


def _parse_flag(field_: Field[Any], raw: str) -> Any:
    """Parse a flag for argparse: a bad value is a usage error (exit 2), not a traceback."""
    try:
        return parse_value(field_, raw)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def settings_flags(parser: _Arguments, *, only: Collection[str] | None = None) -> None:
    """One `--flag` per Settings field (or per field named in `only`), naming its variable."""
    defaults = Settings()
    for f in fields(Settings):
        if f.metadata.get("secret") or (only is not None and f.name not in only):
            continue  # secrets come from the environment only: argv is visible to all
        kind = field_type(f)
        shown = _DEFAULT_TEXT.get(f.name, getattr(defaults, f.name))
        shown = "none" if shown is None else shown
        read_from = " or ".join(variables(f))
        if kind is bool:
            parser.add_argument(
                f"--{flag_name(f.name)}",
                dest=f.name,
                default=None,
                action=argparse.BooleanOptionalAction,
                help=f"{f.metadata['help']} (env {read_from}; default: {shown})",
            )
            continue
        parser.add_argument(
            f"--{flag_name(f.name)}",
            dest=f.name,
            default=None,
            metavar=kind.__name__.upper() if kind is not str else None,
            choices=f.metadata.get("choices"),
            type=functools.partial(_parse_flag, f),
            help=f"{f.metadata['help']} (env {read_from}; default: {shown})",
        )


def positive_number(raw: str, *, what: str, example: str) -> float:
    """Parse a finite number > 0 for argparse; anything else is a usage error naming `what`."""
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(
            f"{raw!r} is not {what}; pass a number > 0, e.g. {example}"
        )
    return value


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from the environment, with the flags given on the command line winning."""
    overrides = {f.name: getattr(args, f.name) for f in fields(Settings) if hasattr(args, f.name)}
    return Settings.from_env(**overrides)


def make_data_dir(path: Path) -> None:
    """Create the data folder (mode 700) unless it is there; ConfigError saying why it cannot."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:
        raise _no_folder(path) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot make the data folder {path} ({exc.strerror}); point --data-dir "
            "(RESEARCH_DATA_DIR) at a folder the service may write"
        ) from None


def existing_data_dir(path: Path) -> bool:
    """Whether the data folder is there (False: not made yet); ConfigError if it is no folder.

    For the commands that only read it: a file or a broken link is a mistake to say, not a
    folder still to make.
    """
    try:
        is_folder = stat.S_ISDIR(path.stat().st_mode)
    except FileNotFoundError:
        if os.path.islink(path):
            raise _no_folder(path) from None
        return False
    except NotADirectoryError:
        raise _no_folder(path) from None
    except OSError as exc:
        if os.path.islink(path):
            raise _no_folder(path) from None  # a loop of links
        raise ConfigError(
            f"cannot use the data folder {path} ({exc.strerror}); point --data-dir "
            "(RESEARCH_DATA_DIR) at a folder this user may read"
        ) from None
    if not is_folder:
        raise _no_folder(path)
    return True


def _no_folder(path: Path) -> ConfigError:
    """Why `path`, which is there, cannot be the data folder."""
    if os.path.islink(path) and not os.path.exists(path):
        return ConfigError(
            f"the data folder {path} is a symbolic link to {os.readlink(path)}, which leads to "
            "no folder; mount or make its target, or point --data-dir (RESEARCH_DATA_DIR) at "
            "a folder"
        )
    return ConfigError(
        f"the data folder {path} is a file, or under one; point --data-dir "
        "(RESEARCH_DATA_DIR) at a folder"
    )


def say(message: str) -> None:
    """A message for the person at the terminal, on stderr, named after the program.

    It is made `printable` (it may quote the service or a URL); with stderr closed or
    failing, it is dropped: nothing else could say it.
    """
    if sys.stderr is None:
        return  # print(file=None) would write it to stdout, among the command's output
    with contextlib.suppress(OSError, ValueError):
        print(f"research-service: {printable(message)}", file=sys.stderr, flush=True)
