"""What every benchmark entry point shares: its flags, core pinning, the machine line, JSON."""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
from pathlib import Path
from typing import Any, Final

from report import machine

#: With pinning, servers run on the first core and the measuring client on the second.
SERVER_CPU: Final = 0
CLIENT_CPU: Final = 1


def parse_flags(
    doc: str | None,
    argv: list[str] | None,
    *,
    pinning: bool,
    store: bool = False,
    store_default: str = "memory",
    steps: bool = False,
    spread: bool = False,
) -> argparse.Namespace:
    """`--quick` and `--json FILE`; `--no-pin` for benches that pin processes to cores, and
    `--store` (default `store_default`) for those that run research-service; `--steps N,N`
    for those measured at several sizes; `--spread S` for those that post runs in a burst."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also save results as JSON")
    if pinning:
        parser.add_argument("--no-pin", action="store_true", help="do not pin server and client")
    if store:
        parser.add_argument(
            "--store",
            choices=("memory", "sqlite"),
            default=store_default,
            help="research-service's run store (memory: the stream's own cost)",
        )
    if steps:
        parser.add_argument(
            "--steps",
            type=lambda text: tuple(int(part) for part in text.split(",")),
            metavar="N,N",
            help="measure only these sizes (default: every size of the full or --quick run)",
        )
    if spread:
        parser.add_argument(
            "--spread",
            type=float,
            default=0.0,
            metavar="SECONDS",
            help="send each step's POSTs evenly over this long instead of all at once",
        )
    return parser.parse_args(argv)


def raise_fd_limit() -> None:
    """Lift the soft open-files limit to the hard one (the servers inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def can_pin() -> bool:
    """True when this process may use both of the first two cores."""
    return {SERVER_CPU, CLIENT_CPU} <= os.sched_getaffinity(0)


def prepare(*, pin: bool) -> None:
    """Raise the open-files limit; with `pin`, keep this (client) process on CLIENT_CPU."""
    raise_fd_limit()
    if pin:
        os.sched_setaffinity(0, {CLIENT_CPU})


def announce_machine() -> dict[str, Any]:
    """The machine's description, also printed to stderr as one line."""
    info = machine()
    print(", ".join(f"{key} {value}" for key, value in info.items()), file=sys.stderr)
    return info


def save_json(path: Path | None, document: dict[str, Any]) -> None:
    """Write the results document to `path`, when one was given."""
    if path is not None:
        path.write_text(json.dumps(document, indent=2) + "\n")
