"""The project's own files stay true: compose file, CI script, README and the style gates."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CI_RUN = ROOT / ".ci" / "run"
COMPOSE = ROOT / "docker-compose.yml"

# A fenced block in the README: ```lang ... ```.
_FENCE = re.compile(r"^```[a-z]*\n(?P<body>.*?)^```$", re.MULTILINE | re.DOTALL)
_FLAG = re.compile(r"--[a-z][a-z0-9-]*")


def _run(*args: str, timeout: float = 100) -> subprocess.CompletedProcess[str]:
    # A wide terminal keeps argparse from wrapping a flag's help across lines.
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _readme_test_command() -> str:
    blocks = [m["body"].strip() for m in _FENCE.finditer(README.read_text(encoding="utf-8"))]
    commands = [b for b in blocks if "\n" not in b and "-m pytest" in b]
    assert len(commands) == 1, f"expected one one-line test command in the README, got {commands}"
    return commands[0]


def _serve_help_flags() -> dict[str, str]:
    """Each `serve` flag with its help text (whitespace squashed)."""
    result = _run(sys.executable, "-m", "research_service", "serve", "--help")
    assert result.returncode == 0, result.stderr
    options = result.stdout.split("options:", 1)[1]
    flags: dict[str, str] = {}
    current = None
    for line in options.splitlines():
        match = re.match(r"\s{2}(--[a-z][a-z0-9-]*)", line)
        if match:
            current = match[1]
            flags[current] = line[match.end() :]
        elif current is not None:
            flags[current] += " " + line
    flags.pop("--help", None)
    return {flag: " ".join(text.split()) for flag, text in flags.items()}


def _readme_config_rows() -> dict[str, str]:
    """The README configuration table: each row keyed by the flag in its first cell."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells and (match := _FLAG.search(cells[0])):
            rows[match[0]] = line
    return rows


def _env_name(flag: str) -> str:
    return "RESEARCH_" + flag.removeprefix("--").replace("-", "_").upper()


def test_compose_file_passes_docker_compose_config() -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("docker-compose is missing in CI; .ci/run should have installed it")
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    result = _run(binary, "-f", str(COMPOSE), "config", "-q")
    assert result.returncode == 0, result.stderr


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    command = _readme_test_command()
    assert command in CI_RUN.read_text(encoding="utf-8").splitlines()
    assert os.access(CI_RUN, os.X_OK), ".ci/run must be executable"


@pytest.fixture(scope="module")
def help_flags() -> dict[str, str]:
    return _serve_help_flags()


@pytest.fixture(scope="module")
def readme_rows() -> dict[str, str]:
    return _readme_config_rows()


def test_every_serve_flag_is_in_the_readme_table_and_back(
    help_flags: dict[str, str], readme_rows: dict[str, str]
) -> None:
    assert help_flags, "no flags found in `research-service serve --help`"
    assert sorted(help_flags) == sorted(readme_rows)


def test_each_flag_names_its_environment_variable(
    help_flags: dict[str, str], readme_rows: dict[str, str]
) -> None:
    missing_in_help = [f for f, text in help_flags.items() if f"env {_env_name(f)}" not in text]
    missing_in_readme = [f for f, row in readme_rows.items() if f"`{_env_name(f)}`" not in row]
    assert missing_in_help == [], "these flags' --help does not name their RESEARCH_* variable"
    assert missing_in_readme == [], "these README rows do not name their RESEARCH_* variable"


def test_each_flag_states_its_default_in_words(help_flags: dict[str, str]) -> None:
    """As the README's table does: `none`, never Python's `None`."""
    defaults = {flag: re.search(r"default: ([^)]*)\)", text) for flag, text in help_flags.items()}
    assert [flag for flag, found in defaults.items() if found is None] == []
    assert [flag for flag, found in defaults.items() if found and found[1] == "None"] == []


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(("ruff", "check", "."), id="ruff-check"),
        pytest.param(("ruff", "format", "--check", "."), id="ruff-format"),
        pytest.param(("mypy",), id="mypy"),
    ],
)
def test_code_is_clean(command: tuple[str, ...]) -> None:
    result = _run(sys.executable, "-m", *command)
    assert result.returncode == 0, result.stdout + result.stderr


def _documented_commands() -> list[tuple[str, str]]:
    """Every `research-service …` command in the README's and docs' shell examples."""
    found = []
    for path in (README, *sorted((ROOT / "docs").glob("*.md"))):
        for block in re.finditer(r"^```sh\n(.*?)^```$", path.read_text(), re.MULTILINE | re.DOTALL):
            for line in block[1].replace("\\\n", " ").splitlines():
                command = line.split("#", 1)[0].split("|", 1)[0].split("&", 1)[0].strip()
                command = command.removeprefix(".venv/bin/")
                if command.startswith("research-service "):
                    found.append((path.name, command))
    return found


@pytest.mark.parametrize(("doc", "command"), _documented_commands())
def test_documented_commands_are_valid_arguments(doc: str, command: str) -> None:
    """Each example's arguments are accepted by the console script's parser as written."""
    from research_service.cli import build_parser

    args = shlex.split(command)[1:]
    build_parser().parse_args(args)


def test_the_docs_show_the_client_commands() -> None:
    commands = {command.split()[1] for _, command in _documented_commands()}
    assert {"serve", "ask", "listen", "index", "export", "replay"} <= commands
