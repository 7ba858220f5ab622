"""A corpus folder with files made to hurt: text that made the extractors backtrack for
minutes, PDFs whose pages draw no text at great cost, links out of the folder, an index
changed beside a running service, and a disk that fills during an index."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from research_service.corpus import pdf
from research_service.corpus.files import folder_documents, html_text, markdown_text
from research_service.corpus.index import CorpusIndex
from research_service.providers import local_search
from research_service.providers.local_search import LocalSearch
from research_service.text import clean_rest
from tests.full_disk import fill, small_disk
from tests.test_corpus_index import PLANTS, write_pdf

# Each of these took seconds to hours to extract (backtracking regular expressions, CPython
# 3.11's HTML parser); they are now read in one pass. The suite's timeout stops a regression.
HOSTILE_MARKDOWN = {
    "# Install notes" + " " * 8000 + "x": "Install notes" + " " * 8000 + "x",
    "[" * 200_000: "[" * 200_000,
    "![" * 100_000: "![" * 100_000,
    "[a](" * 100_000: "[a](" * 100_000,
}


@pytest.mark.parametrize("source", list(HOSTILE_MARKDOWN), ids=["heading", "[", "![", "[a]("])
def test_markdown_made_to_backtrack_is_read_as_text(source: str) -> None:
    title, text = markdown_text(source)
    assert text == HOSTILE_MARKDOWN[source]
    assert title == (text if source.startswith("#") else "")


def test_markdown_headings_and_links_read_as_before() -> None:
    source = "# C# ##\n## Title ###  \ntext [link](http://x/y) and ![a picture](p.png)\n"
    assert markdown_text(source) == ("C#", "C#\nTitle\ntext link and a picture")


def test_html_of_unclosed_angle_brackets_is_text() -> None:
    title, text = html_text("<p>" + "<a" * 40_000 + "</p>")
    assert title == ""
    assert text == "<a" * 40_000
    assert html_text("<h1>Head</h1><p>1 <2 and <b>bold</b></p>") == (
        "Head",
        "Head\n\n1 <2 and bold",
    )


def test_rest_of_colons_is_read_as_text_and_roles_still_as_code() -> None:
    assert clean_rest(":a" * 100_000) == ":a" * 100_000
    assert clean_rest("Use :py:func:`json.loads` here.") == "Use `json.loads` here."


def test_a_pdf_is_read_no_longer_than_its_time_allows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Pages that draw no text from streams of millions of operators pass any text cap."""
    monkeypatch.setattr(pdf, "MAX_PDF_CPU_S", 0.0)  # spent once the first page is read
    write_pdf(tmp_path / "plants.pdf", [*PLANTS, ["A third page, never read."]])
    (ref,) = folder_documents(tmp_path)
    with caplog.at_level(logging.WARNING):
        doc = ref.load()
    assert doc is not None
    assert "reflects green" in doc.text
    assert "Stomata" not in doc.text
    assert any("took more than 0 s to read; indexing its first 1 pages" in r.message
               for r in caplog.records)  # fmt: skip


def test_a_link_out_of_the_folder_is_skipped_and_one_within_it_links_to_its_own_place(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notes, private = tmp_path / "notes", tmp_path / "private"
    notes.mkdir()
    private.mkdir()
    (private / "vault.md").write_text("# Vault\nThe vault code is 4321.\n")
    (notes / "guide.md").write_text("# Guide\nHow to brew tea.\n")
    (notes / "vault-link.md").symlink_to(private / "vault.md")
    (notes / "again.md").symlink_to(notes / "guide.md")
    with caplog.at_level(logging.WARNING):
        docs = {ref.key: ref.load() for ref in folder_documents(notes)}
    assert docs["vault-link.md"] is None
    assert any("a link to" in r.message and "outside the folder" in r.message
               for r in caplog.records)  # fmt: skip
    again = docs["again.md"]
    assert again is not None
    assert again.url == (notes / "again.md").resolve().parent.joinpath("again.md").as_uri()
    assert "tea" in again.text


async def test_a_running_search_sees_an_index_run_beside_it_within_a_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local_search, "VERSION_CHECK_S", 0.0)  # every search asks
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "tea.md").write_text("# Tea\nGreen tea is steeped briefly.\n")
    db = tmp_path / "index.sqlite3"
    with CorpusIndex.open(db) as beside:
        beside.sync(folder_documents(notes))
    search = LocalSearch(CorpusIndex.open(db))
    try:
        before = await search.search("tea steeped", limit=5)
        assert [hit.title for hit in before] == ["Tea"]
        (notes / "oolong.md").write_text("# Oolong\nOolong tea is steeped several times.\n")
        with CorpusIndex.open(db) as beside:  # what `research-service index` does
            beside.sync(folder_documents(notes))
        after = await search.search("tea steeped", limit=5)
    finally:
        search.close()
    assert sorted(hit.title for hit in after) == ["Oolong", "Tea"]


def index_onto(disk: Path, notes: Path) -> subprocess.CompletedProcess[str]:
    """`research-service index NOTES` with its index on `disk`, as a user runs it."""
    command = [sys.executable, "-m", "research_service", "index", str(notes)]
    command += ["--db", str(disk / "index.sqlite3"), "--quiet"]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_an_index_that_fills_the_disk_says_the_disk_is_full(tmp_path: Path) -> None:
    """SQLite rolled back by itself; a second ROLLBACK used to hide why behind its own error."""
    notes = tmp_path / "notes"
    notes.mkdir()
    for n in range(200):
        (notes / f"note{n}.md").write_text(f"# Note {n}\n" + f"word{n} " * 2000 + "\n")
    with small_disk(tmp_path / "disk", size="1m") as disk:
        done = index_onto(disk, notes)
    assert done.returncode == 1, done.stderr
    assert "is full; free some space and try again" in done.stderr
    assert "cannot rollback" not in done.stderr


def test_an_index_on_a_disk_filled_beforehand_says_so_too(tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.md").write_text("# A\ntext\n")
    with small_disk(tmp_path / "disk", size="1m") as disk:
        asyncio.run(fill(disk))
        done = index_onto(disk, notes)
    assert done.returncode == 1, done.stderr
    assert "is full; free some space and try again" in done.stderr


def test_a_dangling_link_is_warned_of_once_and_counted_as_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "tea.md").write_text("# Tea\nGreen tea.\n")
    (notes / "gone.md").symlink_to(tmp_path / "nowhere.md")
    with caplog.at_level(logging.WARNING), CorpusIndex.open(tmp_path / "index.sqlite3") as index:
        report = index.sync(folder_documents(notes))
    assert (report.added, report.skipped) == (1, 1)
    warned = [r.message for r in caplog.records if "gone.md" in r.message]
    assert len(warned) == 1
    assert "No such file or directory" in warned[0]


def test_one_index_given_a_moved_folder_links_every_document_to_its_new_place(
    tmp_path: Path,
) -> None:
    """Unchanged files (same size and time) kept the old folder's `file://` links."""
    first, moved = tmp_path / "first", tmp_path / "moved"
    first.mkdir()
    (first / "a.md").write_text("# Alpha\nokapi alpha text\n")
    (first / "b.md").write_text("# Beta\nokapi beta text\n")
    with CorpusIndex.open(tmp_path / "shared.sqlite3") as index:
        index.sync(folder_documents(first))
        first.rename(moved)
        report = index.sync(folder_documents(moved))
        urls = {hit.url for hit in index.search("okapi", limit=5)}
    assert report.updated == 2
    assert urls == {(moved / "a.md").resolve().as_uri(), (moved / "b.md").resolve().as_uri()}
