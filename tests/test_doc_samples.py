"""The docs' captured samples are what the service sends today (timings aside).

A failure shows the difference; `python -m tests.samples` captures the samples again and
rewrites them in the docs (review the diff: a change in the service shows up there).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.samples.blocks import SampleError, blocks, normalise, replace
from tests.samples.run import COMMAND, DOCUMENTS, ROOT, capture, differences


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data folder for every capture, so the stdlib corpus is indexed once."""
    return tmp_path_factory.mktemp("samples-data")


@pytest.mark.parametrize("doc", list(DOCUMENTS))
async def test_the_docs_samples_match_a_new_capture(doc: str, data_dir: Path) -> None:
    captured = await capture(doc, data_dir)
    diff = differences(doc, captured)
    assert diff == "", f"{doc}'s samples are out of date; run `{COMMAND}`:\n{diff}"


def test_every_marked_sample_in_the_docs_has_a_capture() -> None:
    marked = {
        path.relative_to(ROOT).as_posix()
        for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
        if blocks(path.read_text(encoding="utf-8"))
    }
    assert marked == set(DOCUMENTS)


def test_blocks_are_found_replaced_and_compared_without_timings() -> None:
    text = "a\n<!-- sample: x/y -->\nold\n<!-- /sample -->\nb\n"
    assert blocks(text) == {"x/y": "old\n"}
    assert replace(text, {"x/y": "new\n"}) == "a\n<!-- sample: x/y -->\nnew\n<!-- /sample -->\nb\n"
    with pytest.raises(SampleError, match="marked but not captured"):
        replace(text, {"z": "new\n"})
    one = 'data: {"elapsed_ms":12,"timings_ms":{"planning":3,"total":9},"created_at":"2026-01-01"}'
    two = 'data: {"elapsed_ms":7,"timings_ms":{"planning":1,"total":4},"created_at":"2027-02-02"}'
    assert normalise(one) == normalise(two)
    assert normalise('{"elapsed_ms":1,"x":1}') != normalise('{"elapsed_ms":1,"x":2}')


def test_stream_tokens_and_session_cookies_compare_without_expiry_and_signature() -> None:
    """Their ids still count: only the expiry and the signature change between captures."""

    def token(expires: int, signature: str) -> str:
        return f'"events_url":"/v1/runs/8a8b/events?token=8a8b.file-2bd8.{expires}.{signature}"'

    assert normalise(token(1796305058, "U" * 42 + "-")) == normalise(token(1796305999, "x" * 43))
    assert normalise(token(1, "a" * 43)) != normalise(token(1, "a" * 43).replace("8a8b.", "9c9d."))

    def cookie(expires: int, signature: str) -> str:
        return f"Set-Cookie: research_session=file-2bd8.{expires}.{signature}; HttpOnly"

    assert normalise(cookie(1796387858, "D" * 43)) == normalise(cookie(1796388000, "_" * 43))
    assert normalise(cookie(1, "D" * 43)) != normalise(cookie(1, "D" * 43) + "; Secure")
