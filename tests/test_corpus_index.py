"""The corpus sources and the SQLite FTS5 index: sync, search, ranking, snippets."""

from __future__ import annotations

import ast
import contextlib
import logging
import os
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pypdf import PdfWriter
from pypdf.generic import ContentStream, DictionaryObject, NameObject

from research_service.corpus import pdf, python_source
from research_service.corpus.docstrings import module_title
from research_service.corpus.documents import Document, DocumentRef
from research_service.corpus.facts import stored_snippet
from research_service.corpus.files import folder_documents, html_text
from research_service.corpus.index import CorpusIndex, SyncReport, fts_query
from research_service.corpus.links import LinkBase, base_url, folder_prefix
from research_service.corpus.pdf import page_paragraphs
from research_service.corpus.ranking import name_factor, passage_fit
from research_service.corpus.search import SNIPPET_CHARS
from research_service.corpus.stdlib import PUBLIC_NAMES, stdlib_documents
from research_service.errors import ConfigError
from research_service.providers.local_search import STDLIB_INDEX
from research_service.text import key_terms, passages, snippet, stems, words
from tests.corpus_fixtures import FIXTURE_CORPUS, copy_corpus, stdlib_data_dir

FIXTURE_FILES = 5


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return copy_corpus(tmp_path / "corpus")


@pytest.fixture
def index(tmp_path: Path) -> Iterator[CorpusIndex]:
    with CorpusIndex.open(tmp_path / "index.sqlite3") as opened:
        yield opened


@pytest.fixture(scope="module")
def stdlib_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CorpusIndex]:
    with CorpusIndex.open(stdlib_data_dir(tmp_path_factory) / STDLIB_INDEX) as opened:
        yield opened


def touch(path: Path, text: str) -> None:
    """Rewrite a file and move its mtime on, so the change shows even on coarse clocks."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(before + 10**9, before + 10**9))


def counting(refs: list[DocumentRef], loaded: list[str]) -> list[DocumentRef]:
    """The same references, recording the key of every document actually read."""

    def wrap(ref: DocumentRef) -> DocumentRef:
        def load() -> Document | None:
            loaded.append(ref.key)
            return ref.load()

        return DocumentRef(key=ref.key, fingerprint=ref.fingerprint, load=load)

    return [wrap(ref) for ref in refs]


def urls(index: CorpusIndex, query: str, limit: int = 5) -> list[str]:
    return [hit.url for hit in index.search(query, limit=limit)]


# --- sync -------------------------------------------------------------------------------


def test_first_sync_adds_every_file(index: CorpusIndex, corpus: Path) -> None:
    report = index.sync(folder_documents(corpus))
    assert report == SyncReport(added=FIXTURE_FILES)
    assert index.stats().documents == FIXTURE_FILES


def test_second_sync_with_nothing_changed_reads_no_file(index: CorpusIndex, corpus: Path) -> None:
    index.sync(folder_documents(corpus))
    loaded: list[str] = []
    report = index.sync(counting(folder_documents(corpus), loaded))
    assert report == SyncReport(unchanged=FIXTURE_FILES)
    assert loaded == []


def test_changed_file_is_reindexed_and_search_follows(index: CorpusIndex, corpus: Path) -> None:
    index.sync(folder_documents(corpus))
    target = corpus / "http_status_codes.txt"
    assert urls(index, "Teapot") == []
    touch(target, "418 I'm a Teapot was an April Fools' joke in RFC 2324 about coffee pots.")
    loaded: list[str] = []
    report = index.sync(counting(folder_documents(corpus), loaded))
    assert report == SyncReport(updated=1, unchanged=FIXTURE_FILES - 1)
    assert loaded == ["http_status_codes.txt"]
    assert urls(index, "teapot") == [target.resolve().as_uri()]
    assert urls(index, "Gateway Timeout") == []


def test_deleted_file_is_removed_and_new_file_added(index: CorpusIndex, corpus: Path) -> None:
    index.sync(folder_documents(corpus))
    (corpus / "git_basics.rst").unlink()
    touch(corpus / "guides" / "tides.md", "# Tides\n\nTides are caused by the Moon's gravity.")
    report = index.sync(folder_documents(corpus))
    assert report == SyncReport(added=1, removed=1, unchanged=FIXTURE_FILES - 1)
    assert urls(index, "rebase Torvalds") == []
    assert urls(index, "moon gravity") == [(corpus / "guides" / "tides.md").resolve().as_uri()]


def test_emptied_folder_empties_the_index(index: CorpusIndex, corpus: Path) -> None:
    index.sync(folder_documents(corpus))
    assert index.sync([]) == SyncReport(removed=FIXTURE_FILES)
    assert index.stats().documents == 0
    assert index.stats().passages == 0


def test_a_failing_sync_changes_nothing(index: CorpusIndex, corpus: Path) -> None:
    index.sync(folder_documents(corpus))

    def explode() -> Document | None:
        raise OSError("disk vanished")

    refs = [*folder_documents(corpus)[1:], DocumentRef(key="new.md", fingerprint="x", load=explode)]
    with pytest.raises(OSError, match="disk vanished"):
        index.sync(refs)
    assert index.stats().documents == FIXTURE_FILES
    assert index.sync(folder_documents(corpus)) == SyncReport(unchanged=FIXTURE_FILES)


def test_undecodable_file_is_skipped_with_a_warning(
    index: CorpusIndex, corpus: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (corpus / "latin1.txt").write_bytes("Caf\xe9 cr\xe8me br\xfbl\xe9e".encode("latin-1"))
    with caplog.at_level(logging.WARNING):
        report = index.sync(folder_documents(corpus))
    assert report == SyncReport(added=FIXTURE_FILES, skipped=1)
    assert any("latin1.txt" in r.message and "UTF-8" in r.message for r in caplog.records)


def test_a_file_whose_name_is_not_utf8_is_skipped_with_a_warning(
    index: CorpusIndex, corpus: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """It once failed the whole sync, so that `serve` could not start on the folder."""
    (corpus / os.fsdecode(b"caf\xe9.md")).write_text("# Caf\u00e9\n\nA latin-1 name.\n")
    with caplog.at_level(logging.WARNING):
        report = index.sync(folder_documents(corpus))
    assert report == SyncReport(added=FIXTURE_FILES, skipped=1)
    assert any("caf\ufffd.md" in r.message and "not UTF-8" in r.message for r in caplog.records)
    assert index.sync(folder_documents(corpus)) == SyncReport(unchanged=FIXTURE_FILES, skipped=1)


def test_reopening_keeps_the_index(tmp_path: Path, corpus: Path) -> None:
    with CorpusIndex.open(tmp_path / "index.sqlite3") as first:
        first.sync(folder_documents(corpus))
    with CorpusIndex.open(tmp_path / "index.sqlite3") as second:
        assert second.sync(folder_documents(corpus)) == SyncReport(unchanged=FIXTURE_FILES)
        assert urls(second, "chlorophyll")


def test_progress_is_reported_up_to_the_total(index: CorpusIndex, corpus: Path) -> None:
    seen: list[tuple[int, int]] = []
    index.sync(folder_documents(corpus), progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (FIXTURE_FILES, FIXTURE_FILES)


def passage_ids(path: Path) -> tuple[list[int], list[int]]:
    """The rowids in `passages` and the ids in `passage_facts`, each sorted."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        passages = [rowid for (rowid,) in db.execute("SELECT rowid FROM passages ORDER BY 1")]
        facts = [id_ for (id_,) in db.execute("SELECT id FROM passage_facts ORDER BY 1")]
    return passages, facts


def test_every_passage_keeps_its_facts_through_changes(index: CorpusIndex, corpus: Path) -> None:
    index.sync(folder_documents(corpus))
    touch(corpus / "http_status_codes.txt", "418 I'm a Teapot.\n\nAn April Fools' joke.")
    (corpus / "git_basics.rst").unlink()
    index.sync(folder_documents(corpus))
    passages, facts = passage_ids(index.path)
    assert passages
    assert facts == passages


def test_an_index_of_the_previous_schema_is_rebuilt_with_progress(
    tmp_path: Path, corpus: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Schema 2 (before the passage facts) is dropped on open; the next sync reads everything."""
    path = tmp_path / "index.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        db.execute("INSERT INTO meta VALUES ('schema', '2')")
        db.execute("CREATE TABLE documents (id INTEGER PRIMARY KEY, key TEXT, name TEXT, "
                   "title TEXT, url TEXT, fingerprint TEXT, passages INTEGER)")  # fmt: skip
        db.execute("CREATE VIRTUAL TABLE passages USING fts5(name, title, body)")
        db.execute("INSERT INTO documents VALUES (1, 'old.md', '', 'Old', 'u:old', 'f', 1)")
        db.execute(
            "INSERT INTO passages (rowid, name, title, body) VALUES (1 << 20, '', 'Old', 'x')"
        )
        db.commit()
    seen: list[tuple[int, int]] = []
    with caplog.at_level(logging.INFO), CorpusIndex.open(path) as index:
        report = index.sync(folder_documents(corpus), progress=lambda d, t: seen.append((d, t)))
        assert report == SyncReport(added=FIXTURE_FILES)
        assert seen[-1] == (FIXTURE_FILES, FIXTURE_FILES)
        assert urls(index, "chlorophyll light energy")
    assert any("has schema 2; rebuilding it" in r.message for r in caplog.records)
    passages, facts = passage_ids(path)
    assert facts == passages


# --- files ------------------------------------------------------------------------------


def test_html_boilerplate_is_dropped() -> None:
    source = (FIXTURE_CORPUS / "photosynthesis.html").read_text(encoding="utf-8")
    title, text = html_text(source)
    assert title == "Photosynthesis"
    assert "chlorophyll absorbs red and blue light" in text
    assert "6 CO2 + 6 H2O + light → C6H12O6 + 6 O2." in text
    for boilerplate in ("analytics", "font-family", "Subscribe", "Genetics", "Login",
                        "Advertisement", "enable JavaScript", "Cookie policy"):  # fmt: skip
        assert boilerplate not in text


def test_html_boilerplate_is_not_searchable(index: CorpusIndex, corpus: Path) -> None:
    index.sync(folder_documents(corpus))
    assert urls(index, "newsletter advertisement cookie") == []


def test_titles_and_urls_come_from_each_format(corpus: Path) -> None:
    documents = {ref.key: ref.load() for ref in folder_documents(corpus)}
    titles = {key: doc.title for key, doc in documents.items() if doc is not None}
    assert titles == {
        "git_basics.rst": "Git basics",
        "guides/sqlite_transactions.md": "SQLite transactions",
        "http_status_codes.txt": "http_status_codes",
        "photosynthesis.html": "Photosynthesis",
        "python_history.md": "A short history of Python",
    }
    doc = documents["guides/sqlite_transactions.md"]
    assert doc is not None
    assert doc.url == (corpus / "guides" / "sqlite_transactions.md").resolve().as_uri()


def test_markdown_and_rst_markup_is_stripped(corpus: Path) -> None:
    documents = {ref.key: ref.load() for ref in folder_documents(corpus)}
    history, git = documents["python_history.md"], documents["git_basics.rst"]
    assert history is not None
    assert git is not None
    assert "author:" not in history.text  # front matter
    assert "Monty Python's Flying Circus," in history.text  # link text kept, target dropped
    assert "](" not in history.text
    assert "## " not in history.text
    assert "=====" not in git.text
    assert "`git switch -c feature`" in git.text
    assert "many projects now use `main`" in git.text  # the note's prose survives


def test_hidden_and_unsupported_files_are_ignored(corpus: Path) -> None:
    (corpus / ".secret.md").write_text("# hidden", encoding="utf-8")
    (corpus / "data.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    (corpus / ".git").mkdir()
    (corpus / ".git" / "notes.md").write_text("# git internals", encoding="utf-8")
    assert len(folder_documents(corpus)) == FIXTURE_FILES


# --- PDF --------------------------------------------------------------------------------


def write_pdf(path: Path, pages: list[list[str]], *, title: str | None = None) -> Path:
    """A real PDF (pypdf's writer, Helvetica text) with one text line per item of each page.

    The mtime moves on a second past any earlier version, so a rewrite always shows.
    """
    before = path.stat().st_mtime_ns if path.exists() else 0
    writer = PdfWriter()
    font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
        }
    )
    for lines in pages:
        page = writer.add_blank_page(612, 792)
        fonts = DictionaryObject({NameObject("/F1"): font})
        page[NameObject("/Resources")] = DictionaryObject({NameObject("/Font"): fonts})
        shown = " 0 -14 Td ".join(f"({_pdf_string(line)}) Tj" for line in lines)
        content = ContentStream(None, writer)
        content.set_data(f"BT /F1 11 Tf 72 720 Td {shown} ET".encode("latin-1"))
        page.replace_contents(content)
    if title is not None:
        writer.add_metadata({"/Title": title})
    with path.open("wb") as out:
        writer.write(out)
    if before:
        os.utime(path, ns=(before + 10**9, before + 10**9))
    return path


def _pdf_string(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


PLANTS = [
    ["Leaf chemistry", "Chlorophyll absorbs red and blue light and reflects green,",
     "which is why leaves look green to us.", ""],
    ["Stomata are small pores on the underside of a leaf; they open to take in",
     "carbon dioxide and close to save water."],
]  # fmt: skip


def test_pdf_text_title_and_pages_are_extracted(corpus: Path) -> None:
    write_pdf(corpus / "plants.pdf", PLANTS, title="Notes on leaves")
    documents = {ref.key: ref.load() for ref in folder_documents(corpus)}
    doc = documents["plants.pdf"]
    assert doc is not None
    assert doc.title == "Notes on leaves"
    assert doc.url == (corpus / "plants.pdf").resolve().as_uri()
    assert "reflects green, which is why leaves look green to us." in doc.text  # lines joined
    assert "open to take in carbon dioxide" in doc.text  # the second page too


def test_pdf_text_stops_at_its_limit_with_a_warning(
    corpus: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A small PDF whose pages all draw one stream of megabytes once took minutes and
    gigabytes to index: pages are read only until the text passes the limit."""
    monkeypatch.setattr(pdf, "MAX_PDF_TEXT_CHARS", 150)  # within page 2
    write_pdf(corpus / "plants.pdf", [*PLANTS, ["A third page, never read."]])
    (ref,) = [r for r in folder_documents(corpus) if r.key == "plants.pdf"]
    with caplog.at_level(logging.WARNING):
        doc = ref.load()
    assert doc is not None
    assert "reflects green" in doc.text
    assert "Stomata" in doc.text  # the page that passed the limit is kept whole
    assert "third page" not in doc.text
    assert any("more than 150 characters" in r.message for r in caplog.records)


def test_pdf_without_a_title_is_named_by_its_first_line(corpus: Path) -> None:
    write_pdf(corpus / "plants.pdf", PLANTS)
    (ref,) = [r for r in folder_documents(corpus) if r.key == "plants.pdf"]
    doc = ref.load()
    assert doc is not None
    assert doc.title == "Leaf chemistry"


def test_pdf_is_searchable_and_follows_changes(index: CorpusIndex, corpus: Path) -> None:
    pdf = write_pdf(corpus / "plants.pdf", PLANTS, title="Notes on leaves")
    assert index.sync(folder_documents(corpus)) == SyncReport(added=FIXTURE_FILES + 1)
    hits = index.search("stomata pores carbon dioxide", limit=3)
    assert hits[0].url == pdf.resolve().as_uri()
    assert hits[0].title == "Notes on leaves"
    assert "Stomata are small pores" in hits[0].snippet
    write_pdf(pdf, [["Xylem carries water up from the roots."]], title="Notes on stems")
    report = index.sync(folder_documents(corpus))
    assert report == SyncReport(updated=1, unchanged=FIXTURE_FILES)
    assert urls(index, "stomata pores") == []
    assert urls(index, "xylem roots") == [pdf.resolve().as_uri()]
    pdf.unlink()
    assert index.sync(folder_documents(corpus)) == SyncReport(removed=1, unchanged=FIXTURE_FILES)
    assert urls(index, "xylem roots") == []


def test_pdf_without_text_or_broken_is_skipped_with_a_warning(
    index: CorpusIndex, corpus: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_pdf(corpus / "scan.pdf", [[]])
    (corpus / "broken.pdf").write_bytes(b"%PDF-1.7\nthis is not really a PDF\n")
    with caplog.at_level(logging.WARNING, logger="research_service"):
        report = index.sync(folder_documents(corpus))
    assert report == SyncReport(added=FIXTURE_FILES, skipped=2)
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("research_service")]
    assert any("scan.pdf" in m and "no text layer" in m for m in messages)
    assert any("broken.pdf" in m and "not a readable PDF" in m for m in messages)


def test_pdf_lines_become_paragraphs() -> None:
    page = (
        "A long first line of a paragraph that runs across the whole width of the page\n"
        "and goes on, with a word hyphen-\nated by the layout.\n"
        "A second paragraph starts after a short line ending a sentence, and runs on\n"
        "\n"
        "after a blank line.\n"
    )
    assert page_paragraphs(page) == [
        "A long first line of a paragraph that runs across the whole width of the page "
        "and goes on, with a word hyphenated by the layout.",
        "A second paragraph starts after a short line ending a sentence, and runs on",
        "after a blank line.",
    ]


# --- links --------------------------------------------------------------------------------


def test_a_link_base_moves_folder_urls_onto_a_site(
    tmp_path: Path, index: CorpusIndex, corpus: Path
) -> None:
    (corpus / "guides" / "two words.md").write_text("# Tides\n\nThe moon pulls the sea.")
    other = Document(key="x", title="Tide tables", url="https://elsewhere.example/t", text="tides",
                     fingerprint="1")  # fmt: skip
    index.sync([*folder_documents(corpus), other.ref()])
    site = LinkBase(prefix=folder_prefix(corpus), base="https://docs.example.org/v2/")
    index.set_link_base(site)
    assert set(urls(index, "tides moon")) == {
        "https://docs.example.org/v2/guides/two%20words.md",
        "https://elsewhere.example/t",  # not under the folder: left alone
    }
    with CorpusIndex.open(index.path) as reopened:  # stored in the index file
        assert reopened.link_base() == site
        reopened.set_link_base(None)
    assert urls(index, "moon") == [(corpus / "guides" / "two words.md").resolve().as_uri()]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("https://docs.example.org", "https://docs.example.org/"),
     ("http://intranet/docs/v2/", "http://intranet/docs/v2/"),
     (" https://x.example/a ", "https://x.example/a/")],
)  # fmt: skip
def test_base_urls_end_in_a_slash(raw: str, expected: str) -> None:
    assert base_url(raw) == expected


@pytest.mark.parametrize(
    "raw", ["docs.example.org", "/docs", "ftp://x.example/", "https://x.example/?v=2", "https://"]
)
def test_base_urls_must_be_absolute_http(raw: str) -> None:
    with pytest.raises(ConfigError, match="URL"):
        base_url(raw)


# --- search -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    ['"', 'json"', "*", "pars*", "(", "a) OR (b", "NEAR(git commit)", "-rebase", "git -merge",
     "title:git", "AND OR NOT", "^start", "{x y}", "a + b", "'", "\\", "__", "ÿ", "😀 emoji"],
)  # fmt: skip
def test_fts_syntax_in_queries_does_not_raise(index: CorpusIndex, corpus: Path, query: str) -> None:
    index.sync(folder_documents(corpus))
    assert isinstance(index.search(query, limit=5), list)


@pytest.mark.parametrize("query", ["", "   ", "the of and", "?!", "how do I"])
def test_queries_without_terms_find_nothing(index: CorpusIndex, corpus: Path, query: str) -> None:
    index.sync(folder_documents(corpus))
    assert fts_query(query) == ""
    assert index.search(query, limit=5) == []


def test_fts_query_quotes_terms_and_splits_identifiers() -> None:
    assert fts_query('How does "asyncio.gather" work (NEAR*)?') == (
        '"asyncio.gather" OR "asyncio" OR "gather" OR "work" OR "near"'
    )


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("How does photosynthesis turn light into sugar?", "photosynthesis.html"),
        ("rebase versus merge of a branch", "git_basics.rst"),
        ("what does 429 Too Many Requests mean", "http_status_codes.txt"),
        ("who created Python and why the name", "python_history.md"),
        ("bulk inserts in one transaction", "guides/sqlite_transactions.md"),
    ],
)
def test_the_obviously_relevant_document_ranks_first(
    index: CorpusIndex, corpus: Path, query: str, expected: str
) -> None:
    index.sync(folder_documents(corpus))
    hits = index.search(query, limit=5)
    assert hits[0].url == (corpus / expected).resolve().as_uri()
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_title_matches_weigh_more(index: CorpusIndex) -> None:
    body = "A note that mentions tides once, among many other words about the sea and sky."
    weather = Document(key="a", title="Weather", url="u:a", text=f"{body} Tides.", fingerprint="1")
    tides = Document(key="b", title="Tides", url="u:b", text=body, fingerprint="1")
    index.sync([weather.ref(), tides.ref()])
    assert urls(index, "tides") == ["u:b", "u:a"]


def test_a_query_naming_a_document_ranks_it_above_mentions(index: CorpusIndex) -> None:
    chatty = "Sub-areas such as read CSV files, read XLS files and read CSV file lists. " * 5
    logging = Document(key="l", title="logging", url="u:l", text=chatty, fingerprint="1")
    text = "Classes that assist in reading and writing tabular data."
    title = "csv — CSV file reading and writing"
    csv = Document(key="c", title=title, url="u:c", text=text, fingerprint="1", name="csv")
    twin = Document(key="t", title=title, url="u:t", text=text, fingerprint="1")
    index.sync([logging.ref(), twin.ref(), csv.ref()])
    assert urls(index, "read csv file") == ["u:c", "u:t", "u:l"]  # the name breaks the tie


def test_name_factor_prefers_the_whole_name_then_a_part() -> None:
    assert name_factor("json", ["parse", "json"]) > name_factor("json.scanner", ["json"]) > 1
    assert name_factor("urllib.request", ["http", "request"]) == name_factor(
        "http.client", ["http"]
    )
    assert name_factor("dataclasses", ["dataclass"]) == name_factor("json", ["json"])
    assert name_factor("asyncio", ["asyncio.gather"]) == name_factor("json", ["json"])
    assert name_factor("", ["json"]) == name_factor("logging", ["json"]) == 1


def test_a_passage_defining_a_query_term_fits_better() -> None:
    wanted = stems(["compress", "gzip"])
    rewind = "`gzip.GzipFile.rewind()`:\nReturn the stream to the start; see compress."
    compress = "`gzip.compress(data)`:\nCompress data in one shot."
    opening = "Functions that compress and write gzip files."
    terms = ["compress", "gzip"]
    assert passage_fit(compress, terms, wanted, opening=False) > passage_fit(
        rewind, terms, wanted, opening=False
    )
    assert passage_fit(opening, terms, wanted, opening=True) > passage_fit(
        opening, terms, wanted, opening=False
    )
    # A heading is not an opening that says what the document is for.
    assert passage_fit(compress, terms, wanted, opening=True) == passage_fit(
        compress, terms, wanted, opening=False
    )


def test_one_hit_per_document_and_at_most_limit(index: CorpusIndex, corpus: Path) -> None:
    index.sync(folder_documents(corpus))
    hits = index.search("the light of the server commit python transaction", limit=3)
    assert len(hits) == 3
    assert len({h.url for h in hits}) == 3
    assert index.search("python", limit=0) == []


def test_snippet_is_the_matching_passage_trimmed_at_a_word(index: CorpusIndex) -> None:
    filler = " ".join(f"Sentence number {n} talks about nothing in particular." for n in range(40))
    text = f"{filler}\n\nThe albatross has the largest wingspan of any living bird. {filler}"
    index.sync([Document(key="k", title="Birds", url="u", text=text, fingerprint="1").ref()])
    (hit,) = index.search("albatross wingspan", limit=5)
    assert hit.snippet.startswith("The albatross has the largest wingspan")
    assert len(hit.snippet) <= 400
    assert hit.snippet.endswith("…")
    assert hit.snippet[:-1] == hit.snippet[:-1].rstrip()
    assert text.find(hit.snippet[:-1]) >= 0  # cut at a word boundary, not mid-word


def test_passages_are_paragraph_sized() -> None:
    text = (FIXTURE_CORPUS / "http_status_codes.txt").read_text(encoding="utf-8") * 6
    chunks = passages(text)
    assert all(len(c) <= 800 for c in chunks)
    assert all(len(c) >= 300 for c in chunks[:-1])
    assert "".join(text.split()) == "".join("".join(chunks).split())  # nothing lost


def test_a_sentence_longer_than_a_passage_is_cut_at_words() -> None:
    text = " ".join(["word"] * 500)
    chunks = passages(text)
    assert len(chunks) > 1
    assert all(len(c) <= 800 and not c.startswith(" ") for c in chunks)
    assert " ".join(chunks).split() == text.split()


# --- the standard library corpus --------------------------------------------------------


def test_stdlib_corpus_lists_modules_and_topics_without_tests() -> None:
    keys = {ref.key for ref in stdlib_documents()}
    assert {"stdlib:json", "stdlib:asyncio.tasks", "stdlib:builtins", "topic:with"} <= keys
    assert not any(".test" in key or key.startswith("stdlib:test") for key in keys)
    private = {key for key in keys if any(p.startswith("_") for p in key[7:].split("."))}
    assert private == {f"stdlib:{name}" for name in PUBLIC_NAMES} - {"stdlib:posixpath"}


def test_stdlib_modules_are_parsed_never_imported() -> None:
    refs = {ref.key: ref for ref in stdlib_documents()}
    assert "stdlib:idlelib" not in refs
    assert "turtle" not in sys.modules  # importing it would pull in tkinter
    turtle = refs["stdlib:turtle"].load()
    assert turtle is not None
    assert "turtle" not in sys.modules
    assert "`turtle.Turtle" in turtle.text or "class `turtle." in turtle.text


def stdlib_document(key: str) -> Document:
    document = next(ref for ref in stdlib_documents() if ref.key == key).load()
    assert document is not None
    return document


def test_stdlib_document_has_title_url_and_signatures() -> None:
    json_doc = stdlib_document("stdlib:json")
    assert json_doc.title == "json — JSON encoder and decoder"
    assert json_doc.name == "json"
    assert json_doc.url == "https://docs.python.org/3/library/json.html#module-json"
    assert "`json.dumps(obj, *, skipkeys=False" in json_doc.text


@pytest.mark.parametrize(
    ("key", "title"),
    [
        ("stdlib:csv", "csv — CSV file reading and writing"),
        ("stdlib:gzip", "gzip — Functions that read and write gzipped files"),
        ("stdlib:doctest", "doctest — A framework for running examples in docstrings"),
        ("stdlib:codecs", "codecs — Python Codec Registry, API and helpers"),
        ("stdlib:functools", "functools — Tools for working with functions and callable objects"),
        ("stdlib:cmath", "cmath — Mathematical functions for complex numbers"),
    ],
)
def test_stdlib_titles_are_the_name_and_a_clean_summary(key: str, title: str) -> None:
    assert stdlib_document(key).title == title


@pytest.mark.parametrize(
    ("name", "doc", "title"),
    [
        (
            "jsonish",
            "JSON (JavaScript Object Notation) <https://json.org> is a subset of JavaScript "
            "syntax (ECMA-262 3rd edition) used as a lightweight data interchange format.",
            "jsonish — JSON is a subset of JavaScript syntax used as a lightweight data…",
        ),
        (
            "plistlib",
            "plistlib.py -- a tool to generate and parse MacOSX .plist files.",
            "plistlib — A tool to generate and parse MacOSX .plist files",
        ),
        ("tool", "Module tool -- the `loads` helper.\n\nMore text.", "tool — The loads helper"),
        ("tool", "This module provides access to `sys.argv`.", "tool — Access to sys.argv"),
        ("urllib.robotparser", "robotparser.py\n\nCopyright (C) 2000", "urllib.robotparser"),
        ("tool", "", "tool"),
    ],
)
def test_titles_drop_urls_markup_and_name_prefixes(name: str, doc: str, title: str) -> None:
    made = module_title(name, doc)
    assert made == title
    assert len(made) <= 80


def test_a_package_s_star_imports_are_documented_under_its_name() -> None:
    tasks = stdlib_document("stdlib:asyncio.tasks")
    assert "`asyncio.gather(*coros_or_futures" in tasks.text
    assert "asyncio.tasks.gather" not in tasks.text
    assert tasks.title == "asyncio.tasks — Support for tasks, coroutines and the scheduler"


def test_names_a_module_reexports_from_c_are_documented() -> None:
    csv = stdlib_document("stdlib:csv")
    assert "`csv.reader`:" in csv.text
    assert "`csv.writer`:" in csv.text
    # csv.py's own docstring is one line; the C module's says what the module is for.
    assert "This module provides classes that assist in the reading and writing" in csv.text


@pytest.mark.parametrize(
    ("query", "module"),
    [
        ("json", "json"),
        ("read csv file", "csv"),
        ("compress file gzip", "gzip"),
        ("parse json", "json"),
        ("os.path.join", "os.path"),
        ("asyncio.gather", "asyncio.tasks"),
        ("dataclass", "dataclasses"),
    ],
)
def test_a_query_naming_a_module_finds_its_main_docs_first(
    stdlib_index: CorpusIndex, query: str, module: str
) -> None:
    top = stdlib_index.search(query, limit=3)[0]
    assert top.url.endswith(f"#module-{module}")


def test_stdlib_index_finds_the_json_module_for_parse_json(stdlib_index: CorpusIndex) -> None:
    hits = stdlib_index.search("parse JSON", limit=5)
    assert hits[0].url == "https://docs.python.org/3/library/json.html#module-json"
    assert "JSON" in hits[0].snippet


def test_stdlib_index_finds_asyncio_gather(stdlib_index: CorpusIndex) -> None:
    hits = stdlib_index.search("What does asyncio.gather do?", limit=5)
    assert hits[0].url.startswith("https://docs.python.org/3/library/asyncio.html")
    assert hits[0].snippet.startswith("`asyncio.gather(")
    assert all(h.url.startswith("https://docs.python.org/3/library/asyncio.html") for h in hits)


def test_the_snippet_of_a_named_module_is_its_opening_or_a_definition(
    stdlib_index: CorpusIndex,
) -> None:
    """Not a passage that merely says the words most often (`GzipFile.rewind`)."""
    (gzip,) = stdlib_index.search("compress file gzip", limit=1)
    assert gzip.snippet.startswith("`gzip.open(")
    (request,) = stdlib_index.search("http request urlopen", limit=1)
    assert request.snippet.startswith("`urllib.request.urlopen(")


def test_stdlib_index_finds_language_reference_topics(stdlib_index: CorpusIndex) -> None:
    hits = stdlib_index.search("with statement context manager", limit=5)
    assert any(h.url.startswith("https://docs.python.org/3/reference/") for h in hits)


def test_stdlib_index_is_up_to_date_on_a_second_sync(stdlib_index: CorpusIndex) -> None:
    loaded: list[str] = []
    report = stdlib_index.sync(counting(stdlib_documents(), loaded))
    assert report.changed == 0
    assert loaded == []


def test_a_corrupt_schema_is_rebuilt(tmp_path: Path, corpus: Path) -> None:
    path = tmp_path / "index.sqlite3"
    with CorpusIndex.open(path) as index:
        index.sync(folder_documents(corpus))
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = 'old' WHERE key = 'schema'")
    db.close()
    with CorpusIndex.open(path) as index:
        assert index.stats().documents == 0
        assert index.sync(folder_documents(corpus)) == SyncReport(added=FIXTURE_FILES)


def test_stored_facts_match_the_text_of_every_stdlib_passage(stdlib_index: CorpusIndex) -> None:
    """A search reads stems and sentences noted at index time: they are what
    research_service.text makes of the passage's text, snippets included."""
    with contextlib.closing(sqlite3.connect(stdlib_index.path)) as db:
        rows = db.execute(
            "SELECT p.body, f.stems, f.sentences "
            "FROM passages AS p JOIN passage_facts AS f ON f.id = p.rowid"
        ).fetchall()
    assert len(rows) == stdlib_index.stats().passages
    queries = [key_terms(q) for q in ("How do I parse JSON in Python?", "gather tasks timeout")]
    for body, noted, sentences in rows:
        assert noted.split() == sorted(stems(set(words(body))))
        for terms in queries:
            wanted = frozenset(stems(terms))
            expected = snippet(body, terms, limit=SNIPPET_CHARS)
            assert stored_snippet(sentences, wanted, limit=SNIPPET_CHARS) == expected


def test_a_parse_the_interpreter_fails_once_is_made_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """CPython 3.11's parser failed once in a thread with a SystemError (no way to provoke it
    here), and the whole sync with it: the parse is made once more."""
    tried: list[str] = []
    parse = ast.parse

    def fails_once(source: bytes, filename: str) -> ast.Module:
        tried.append(filename)
        if len(tried) == 1:
            raise SystemError("AST constructor recursion depth mismatch (before=33, after=87)")
        return parse(source, filename=filename)

    monkeypatch.setattr(python_source.ast, "parse", fails_once)
    tree = python_source.parse_python(b'"""Streams."""\n', "streams.py")
    assert ast.get_docstring(tree) == "Streams."
    assert tried == ["streams.py", "streams.py"]
