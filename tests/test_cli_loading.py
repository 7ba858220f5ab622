"""A sub-command loads only what it needs: the console script starts in a fraction of the
time when `keys`, `migrate`, `webhook-secret` or `--help` do not load the service, the HTTP
client and the terminal display (about 1.7 s of imports on this machine, before)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from research_service.cli.catalogue import COMMANDS
from research_service.cli.commands import build_parser

#: The libraries behind the service, the clients and the display: none is needed here.
HEAVY = ("aiohttp", "rich", "openai", "trafilatura", "lxml", "asyncpg", "redis", "mcp")

PROBE = f"""
import json, sys
from research_service.cli import main
try:
    status = main(sys.argv[1:])
except SystemExit as exc:
    status = exc.code
print(json.dumps({{"status": status, "loaded": sorted(m for m in {HEAVY!r} if m in sys.modules)}}))
"""


def run_probe(*args: str) -> dict[str, object]:
    """Run the console script in a new interpreter; its exit status and the libraries loaded."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    outcome: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return outcome


@pytest.mark.parametrize(
    "args",
    [
        ("--help",),
        ("keys", "list"),
        ("keys", "create", "alice"),
        ("migrate",),
        ("webhook-secret",),
        ("index", "--help"),
    ],
)
def test_a_light_sub_command_loads_no_client_service_or_display(
    args: tuple[str, ...], tmp_path: Path
) -> None:
    flags = () if "--help" in args else ("--data-dir", str(tmp_path / "data"))
    outcome = run_probe(*args, *flags)
    assert outcome["status"] == 0
    assert outcome["loaded"] == []


def test_the_sub_command_that_runs_is_loaded_whole_and_the_others_are_listed() -> None:
    parser = build_parser(["keys", "list"])
    text = " ".join(parser.format_help().split())  # unwrapped
    for name, (_, line) in COMMANDS.items():
        assert name in text
        assert line in text
    args = parser.parse_args(["keys", "list", "--data-dir", "/nowhere"])
    assert (args.command, args.action, callable(args.run)) == ("keys", "list", True)


def test_every_sub_command_s_help_line_is_the_catalogue_s() -> None:
    """Loaded whole (no command line), each sub-command says what the catalogue says."""
    parser = build_parser()
    (subparsers,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: choice.help for choice in subparsers._choices_actions}
    assert helps == {name: line for name, (_, line) in COMMANDS.items()}
