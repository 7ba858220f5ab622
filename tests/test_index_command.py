"""`research-service index DIR`: incremental indexing, progress, summary, exit codes, links."""

from __future__ import annotations

import io
import logging
import os
import re
import tracemalloc
from pathlib import Path

import pytest

from research_service.cli import main
from research_service.corpus.files import MAX_FILE_BYTES, folder_documents
from research_service.corpus.index import CorpusIndex
from research_service.corpus.progress import ProgressLine
from research_service.providers.local_search import corpus_index_path, open_local_search
from research_service.settings import Settings
from tests import cli_process
from tests.test_corpus_index import PLANTS, touch, write_pdf


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    (docs / "guides").mkdir(parents=True)
    (docs / "tides.md").write_text("# Tides\n\nThe moon pulls the oceans into two bulges.\n")
    (docs / "guides" / "knots.txt").write_text("A bowline makes a fixed loop at a rope's end.\n")
    (docs / "birds.html").write_text(
        "<html><nav>Home | Login</nav><h1>Swifts</h1><p>Swifts sleep on the wing.</p></html>"
    )
    return docs.resolve()


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path / "data"


def index(folder: Path, data: Path, *flags: str) -> int:
    return main(["index", str(folder), "--data-dir", str(data), *flags])


def search(folder: Path, data: Path, query: str) -> list[tuple[str, str]]:
    """(title, url) of the hits, read from the index file without syncing it."""
    path = corpus_index_path(Settings(data_dir=data, corpus=folder))
    with CorpusIndex.open(path) as opened:
        return [(hit.title, hit.url) for hit in opened.search(query, limit=5)]


def counts(summary: str) -> str:
    (line,) = [line for line in summary.splitlines() if line.strip().startswith("files:")]
    return line.split(":", 1)[1].strip()


def test_indexing_follows_created_changed_and_deleted_files(
    folder: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert index(folder, data) == 0
    assert counts(capsys.readouterr().out) == (
        "3 added, 0 updated, 0 removed, 0 unchanged, 0 skipped"
    )
    assert search(folder, data, "moon oceans") == [("Tides", (folder / "tides.md").as_uri())]

    touch(folder / "tides.md", "# Tides\n\nSpring tides follow the full and new moon.\n")
    (folder / "guides" / "knots.txt").unlink()
    write_pdf(folder / "guides" / "plants.pdf", PLANTS, title="Notes on leaves")
    assert index(folder, data) == 0
    out = capsys.readouterr().out
    assert counts(out) == "1 added, 1 updated, 1 removed, 1 unchanged, 0 skipped"
    assert "3 documents" in out
    assert search(folder, data, "oceans bulges") == []
    assert search(folder, data, "spring tides") == [("Tides", (folder / "tides.md").as_uri())]
    assert search(folder, data, "bowline loop") == []
    pdf = (folder / "guides" / "plants.pdf").as_uri()
    assert search(folder, data, "chlorophyll stomata") == [("Notes on leaves", pdf)]

    assert index(folder, data) == 0
    assert counts(capsys.readouterr().out) == (
        "0 added, 0 updated, 0 removed, 3 unchanged, 0 skipped"
    )


async def test_serve_uses_the_index_without_reading_the_folder_again(
    folder: Path, data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert index(folder, data, "--quiet") == 0
    settings = Settings(data_dir=data, corpus=folder)
    with caplog.at_level(logging.INFO, logger="research_service.providers.local_search"):
        provider = await open_local_search(settings)
    try:
        assert "(0 added, 0 updated, 0 removed)" in caplog.text
        hits = await provider.search("swifts sleep", limit=3)
        assert [(h.title, h.url) for h in hits] == [("Swifts", (folder / "birds.html").as_uri())]
        assert "Login" not in hits[0].snippet
    finally:
        provider.close()


async def test_base_url_is_stored_and_used_by_serve(
    folder: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (folder / "guides" / "two words.md").write_text("# Reef knot\n\nA reef knot ties a bandage.")
    assert index(folder, data, "--base-url", "https://docs.example.org/v2") == 0
    assert "links:   https://docs.example.org/v2/<path>" in capsys.readouterr().out
    expected = ("Reef knot", "https://docs.example.org/v2/guides/two%20words.md")
    assert search(folder, data, "reef knot bandage")[:1] == [expected]

    provider = await open_local_search(Settings(data_dir=data, corpus=folder))
    try:
        hits = await provider.search("reef knot bandage", limit=1)
        assert [(h.title, h.url) for h in hits] == [expected]
    finally:
        provider.close()

    assert index(folder, data) == 0  # a plain re-index keeps the stored base URL
    assert search(folder, data, "reef knot bandage")[:1] == [expected]
    assert index(folder, data, "--file-urls") == 0
    assert "links:   file://" in capsys.readouterr().out
    file_url = (folder / "guides" / "two words.md").as_uri()
    assert search(folder, data, "reef knot bandage")[:1] == [("Reef knot", file_url)]


def test_db_flag_picks_the_index_file(folder: Path, tmp_path: Path) -> None:
    db = tmp_path / "elsewhere" / "my.sqlite3"
    assert main(["index", str(folder), "--db", str(db), "--quiet"]) == 0
    with CorpusIndex.open(db) as opened:
        assert opened.stats().documents == 3


def test_progress_goes_to_stderr_and_the_summary_to_stdout(
    folder: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert index(folder, data) == 0
    captured = capsys.readouterr()
    assert captured.err == f"indexing {folder}: 3/3 files (100%)\n"
    lines = captured.out.splitlines()
    assert re.fullmatch(rf"indexed {re.escape(str(folder))} in \d+\.\d\d s", lines[0])
    db = corpus_index_path(Settings(data_dir=data, corpus=folder))
    assert lines[2] == f"  index:   3 documents, 3 passages in {db}"
    assert lines[3] == f"  links:   {folder.as_uri()}/<path> (set --base-url to link to a site)"


def test_quiet_shows_no_progress_but_still_warns(
    folder: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (folder / "broken.pdf").write_bytes(b"%PDF-1.7\nnot really\n")
    assert index(folder, data, "--quiet") == 0
    captured = capsys.readouterr()
    assert "1 skipped (see the warnings above)" in captured.out
    assert "files (" not in captured.err
    assert re.fullmatch(r"WARNING: skipping .*broken\.pdf: not a readable PDF .*\n", captured.err)


def test_a_missing_folder_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope"
    assert main(["index", str(missing), "--data-dir", str(tmp_path / "data")]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"research-service: {missing} does not exist; pass the folder to index\n"
    assert captured.out == ""
    assert not (tmp_path / "data").exists()


def test_a_file_instead_of_a_folder_is_exit_2(
    folder: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert index(folder / "tides.md", data) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags",
    [["--base-url", "docs.example.org"], ["--base-url", "https://x.example/", "--file-urls"]],
)
def test_bad_link_flags_are_usage_errors(
    folder: Path, data: Path, flags: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        index(folder, data, *flags)
    assert exited.value.code == 2
    assert "usage: research-service index" in capsys.readouterr().err


# --- the progress line ----------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_terminal_gets_one_line_redrawn_at_most_every_tenth_of_a_second() -> None:
    stream, clock = io.StringIO(), Clock()
    progress = ProgressLine(stream, label="indexing docs", tty=True, clock=clock)
    clock.now = 0.05
    progress(1, 4)  # too soon after the start: not drawn
    clock.now = 0.2
    progress(2, 4)
    clock.now = 0.25
    progress(3, 4)  # too soon after the last redraw
    progress(4, 4)  # the end is always drawn
    progress.clear()
    assert stream.getvalue() == (
        "\r\x1b[Kindexing docs: 2/4 files (50%)\r\x1b[Kindexing docs: 4/4 files (100%)\r\x1b[K"
    )


def test_a_log_gets_a_plain_line_every_few_seconds_and_at_the_end() -> None:
    stream, clock = io.StringIO(), Clock()
    progress = ProgressLine(stream, label="indexing docs", tty=False, clock=clock)
    for done in range(1, 301):
        clock.now = done * 0.05  # 15 s in all
        progress(done, 300)
    progress.clear()  # nothing to erase in a log
    assert stream.getvalue().splitlines() == [
        "indexing docs: 100/300 files (33%)",
        "indexing docs: 200/300 files (66%)",
        "indexing docs: 300/300 files (100%)",
    ]


def test_a_warning_erases_the_terminal_line_first() -> None:
    stream, clock = io.StringIO(), Clock()
    progress = ProgressLine(stream, label="indexing docs", tty=True, clock=clock)
    log = logging.getLogger("tests.progress")
    handler = progress.log_handler()
    log.addHandler(handler)
    try:
        clock.now = 1.0
        progress(1, 2)
        log.warning("skipping %s", "a.pdf")
        progress(2, 2)
    finally:
        log.removeHandler(handler)
    assert stream.getvalue() == (
        "\r\x1b[Kindexing docs: 1/2 files (50%)\r\x1b[KWARNING: skipping a.pdf\n"
        "\r\x1b[Kindexing docs: 2/2 files (100%)"
    )


async def test_fifos_and_devices_are_skipped_never_read(folder: Path, data: Path) -> None:
    # Opening a FIFO blocks until someone writes to it; /dev/zero never ends.
    os.mkfifo(folder / "pipe.md")
    (folder / "zero.txt").symlink_to("/dev/zero")
    done = await cli_process.run("index", str(folder), "--data-dir", str(data), timeout=60)
    assert done.returncode == 0, done.stderr
    assert counts(done.stdout).startswith("3 added, 0 updated, 0 removed, 0 unchanged, 2 skipped")
    for name in ("pipe.md", "zero.txt"):
        assert f"skipping {folder / name}: not a regular file" in done.stderr


def test_a_file_swapped_for_a_fifo_after_listing_is_skipped(folder: Path) -> None:
    refs = {ref.key: ref for ref in folder_documents(folder)}
    (folder / "tides.md").unlink()
    os.mkfifo(folder / "tides.md")  # listed as a file, a FIFO by the time it is read
    assert refs["tides.md"].load() is None
    assert refs["guides/knots.txt"].load() is not None


def test_a_file_over_the_limit_is_skipped_without_being_read(folder: Path) -> None:
    big = folder / "dump.txt"
    with big.open("wb") as file:
        file.truncate(MAX_FILE_BYTES * 2)  # sparse: no disk used
    (ref,) = [ref for ref in folder_documents(folder) if ref.key == "dump.txt"]
    tracemalloc.start()
    try:
        assert ref.load() is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, f"{peak} bytes held to skip it"
