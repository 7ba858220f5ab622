"""What the docs list is what the code does: error codes, choices, parameters, usage stages."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import research_service
from research_service.defaults import LLM_CHOICES, SEARCH_CHOICES
from research_service.errors import ProviderError
from research_service.events import PHASES
from research_service.reading.errors import PageError
from research_service.web.validation import research_query

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "research_service"
DOCS = ROOT / "docs"
README = ROOT / "README.md"


def _subclasses(cls: type) -> Iterator[type]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def _import_everything() -> None:
    """Import every module of the package, so every error class the service has is defined."""
    for module in pkgutil.walk_packages(research_service.__path__, "research_service."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)


def _code_literals(tree: ast.AST) -> Iterator[str]:
    """Codes written in the source: `code="x"` arguments and defaults, `{"code": "x"}` dicts."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            for keyword in node.keywords:
                if keyword.arg == "code" and isinstance(keyword.value, ast.Constant):
                    yield str(keyword.value.value)
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if (
                    isinstance(key, ast.Constant)
                    and key.value == "code"
                    and isinstance(value, ast.Constant)
                ):
                    yield str(value.value)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            arguments = [*node.args.args, *node.args.kwonlyargs]
            defaults = [*node.args.defaults, *node.args.kw_defaults]
            for argument, default in zip(arguments[::-1], defaults[::-1], strict=False):
                if argument.arg == "code" and isinstance(default, ast.Constant):
                    yield str(default.value)


def run_error_codes() -> set[str]:
    """Every `code` a run's `error` event or `done.error` can carry, read from the source.

    Provider failures carry their class's `code`; the pipeline, the run manager (cancel,
    abandon, shutdown, interrupted, internal) and the deadline write theirs as literals.
    """
    _import_everything()
    codes = {ProviderError.code} | {str(cls.code) for cls in _subclasses(ProviderError)}
    for path in sorted(PACKAGE.rglob("*.py")):
        codes |= set(_code_literals(ast.parse(path.read_text(encoding="utf-8"))))
    return codes


def page_error_codes() -> set[str]:
    _import_everything()
    return {str(cls.code) for cls in _subclasses(PageError)} - {PageError.code}


def section(text: str, start: str, end: str = "") -> str:
    """The lines from the one `start` begins to the next one `end` begins (blank if no `end`)."""
    lines = text.split("\n")
    first = next(n for n, line in enumerate(lines) if line.startswith(start))
    rest = lines[first + 1 :]
    ends = (lambda line: line.startswith(end)) if end else (lambda line: not line.strip())
    last = next((n for n, line in enumerate(rest) if ends(line)), len(rest))
    return "\n".join(lines[first : first + 1 + last])


def backticked(text: str) -> set[str]:
    """The `code spans` of Markdown text, fenced blocks left out."""
    prose = re.sub(r"^```.*?^```$", "", text, flags=re.MULTILINE | re.DOTALL)
    return set(re.findall(r"`([^`\n]+)`", prose))


def documented_run_codes(doc: str) -> set[str]:
    """The codes a document lists: protocol.md's `error` section, README's `done.error` bullet."""
    if doc == "protocol.md":
        text = (DOCS / doc).read_text(encoding="utf-8")
        return backticked(section(text, "### `error`", "## Resuming"))
    text = README.read_text(encoding="utf-8")
    return backticked(section(text, "- `done.error` is `null`", "- "))


def test_the_source_scan_finds_the_codes_it_must() -> None:
    """The scan itself works: one code of each kind it reads."""
    codes = run_error_codes()
    for code in ("llm_rate_limited", "search_failed", "run_deadline", "interrupted", "abandoned"):
        assert code in codes
    assert {"cancelled", "shutdown", "internal", "llm_error", "search_error"} <= codes
    assert not {"page_timeout", "config", "client"} & codes


@pytest.mark.parametrize("doc", ["protocol.md", "README.md"])
def test_every_code_a_run_can_end_with_is_documented(doc: str) -> None:
    missing = run_error_codes() - documented_run_codes(doc)
    assert missing == set(), f"{doc} does not list these codes"


def test_every_page_error_code_is_in_search_md() -> None:
    text = (DOCS / "search.md").read_text(encoding="utf-8")
    table = section(text, "| `page.error.code` |")
    assert page_error_codes() - backticked(table) == set()


def _setting_row(doc: str, flag: str) -> str:
    text = (ROOT / doc).read_text(encoding="utf-8")
    return next(line for line in text.splitlines() if line.startswith(f"| `{flag}` |"))


@pytest.mark.parametrize(
    ("doc", "flag", "choices"),
    [
        ("docs/search.md", "--search", SEARCH_CHOICES),
        ("README.md", "--search", SEARCH_CHOICES),
        ("README.md", "--llm", LLM_CHOICES),
    ],
)
def test_documented_provider_choices_are_the_settings_choices(
    doc: str, flag: str, choices: tuple[str, ...]
) -> None:
    row = _setting_row(doc, flag)
    assert {c for c in choices if f"`{c}`" not in row} == set(), row


def test_the_search_choice_error_in_search_md_is_the_real_one() -> None:
    from research_service.errors import ConfigError
    from research_service.settings import Settings

    with pytest.raises(ConfigError) as caught:
        Settings(search="mysearch")
    assert f"`{caught.value}`" in (DOCS / "search.md").read_text(encoding="utf-8")


def test_the_research_endpoints_parameters_are_documented() -> None:
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    table = section(section(text, "## `GET /v1/research`", "## "), "| Parameter |")
    documented = {name for row in table.splitlines()[2:] for name in backticked(row.split("|")[1])}
    with pytest.raises(Exception, match=r"allowed: (?P<names>[a-z_, ]+)") as caught:
        research_query({"not_a_parameter": "1"})
    allowed = set(str(caught.value).split("allowed: ", 1)[1].split(", "))
    assert documented == allowed


@pytest.mark.parametrize(
    ("doc", "row"), [("docs/protocol.md", "| `usage` |"), ("docs/models.md", "| `by_stage` |")]
)
def test_every_usage_stage_is_documented(doc: str, row: str) -> None:
    text = (ROOT / doc).read_text(encoding="utf-8")
    line = next(line for line in text.splitlines() if line.startswith(row))
    assert {phase for phase in PHASES if f'"{phase}"' not in line} == set(), line
