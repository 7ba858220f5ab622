"""Search quality on the default corpus: fixed questions, the documents they should find.

Each rank was recorded against the ranking of 36f0c67 (before issue 16's faster search), so a
change to the search may lift a document but never drop it. Questions that ranking missed are
kept too: they count in the mean reciprocal rank, and a better ranking may raise them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import pytest

from research_service.corpus.index import CorpusIndex
from research_service.providers.local_search import STDLIB_INDEX
from research_service.runs.models import DEFAULT_MAX_SOURCES
from tests.corpus_fixtures import stdlib_data_dir

DOCS: Final = "https://docs.python.org/3/"


@dataclass(frozen=True, slots=True)
class Case:
    """A question, the document that answers it, and its rank in 36f0c67 (None: not found)."""

    question: str
    expected: str
    rank: int | None = 1


CASES: Final = (
    Case("json", "library/json.html#module-json"),
    Case("parse json", "library/json.html#module-json"),
    Case("How do I parse JSON in Python?", "library/json.html#module-json"),
    Case("What does asyncio.gather do?", "library/asyncio.html#module-asyncio.tasks"),
    Case("asyncio.gather", "library/asyncio.html#module-asyncio.tasks"),
    Case("How do I read a CSV file?", "library/csv.html#module-csv"),
    Case("read csv file", "library/csv.html#module-csv"),
    Case("How do I compress a file with gzip?", "library/gzip.html#module-gzip"),
    Case("How do I make an HTTP request?", "library/urllib.html#module-urllib.request", 3),
    Case("http request urlopen", "library/urllib.html#module-urllib.request"),
    Case("What is a dataclass?", "library/dataclasses.html#module-dataclasses"),
    Case("How do I sort a list?", "library/stdtypes.html#typesseq"),
    Case("with statement context manager", "reference/datamodel.html#context-managers"),
    Case("run a shell command and capture its output", "library/subprocess.html#module-subprocess"),
    Case("parse command line arguments", "library/argparse.html#module-argparse"),
    Case("current date and time in UTC", "library/datetime.html#module-datetime", 2),
    Case("regular expression match groups", "library/re.html#module-re"),
    Case("copy a directory tree", "library/shutil.html#module-shutil"),
    Case("join path components", "library/os.html#module-os.path"),
    Case("os.path.join", "library/os.html#module-os.path"),
    Case("generate a random number", "library/random.html#module-random"),
    Case("hash a password sha256", "library/hashlib.html#module-hashlib"),
    Case("pickle an object to a file", "library/pickle.html#module-pickle"),
    Case("write a log message to a file", "library/logging.html#module-logging"),
    Case("create a temporary file", "library/tempfile.html#module-tempfile"),
    Case("encode base64", "library/base64.html#module-base64"),
    Case("zip archive extract", "library/zipfile.html#module-zipfile"),
    Case("thread pool executor", "library/concurrent.html#module-concurrent.futures.thread", 3),
    Case("decimal rounding", "library/decimal.html#module-decimal"),
    Case("unit test assertions", "library/unittest.html#module-unittest.case", 2),
    Case("send an email smtp", "library/smtplib.html#module-smtplib"),
    Case("sqlite3 database query", "library/sqlite3.html#module-sqlite3"),
    Case("time a function call", "library/timeit.html#module-timeit", 2),
    Case("deep copy an object", "library/copy.html#module-copy"),
    Case("named tuple", "library/collections.html#module-collections", None),
    Case("abstract base class", "library/abc.html#module-abc"),
    Case("iterate over combinations of a list", "library/itertools.html#module-itertools"),
    Case("urllib.parse.urlparse", "library/urllib.html#module-urllib.parse"),
    Case("collections.Counter", "library/collections.html#module-collections"),
    Case("functools.lru_cache", "library/functools.html#module-functools"),
    Case("subprocess.run", "library/subprocess.html#module-subprocess"),
    Case("wait for several coroutines with a timeout", "library/asyncio.html#module-asyncio.tasks"),
    Case("serialize python objects to bytes", "library/pickle.html#module-pickle"),
    Case("read a zip file", "library/zipfile.html#module-zipfile"),
    Case("sleep for a number of seconds", "library/time.html#module-time"),
    Case("check if a file exists", "library/os.html#module-os.path", None),
    Case("list files in a directory", "library/os.html#module-os", None),
    Case("environment variables", "library/os.html#module-os", None),
    Case("exit the program with a status code", "library/sys.html#module-sys", None),
    Case("URL encode query string parameters", "library/urllib.html#module-urllib.parse"),
    Case("parse XML document", "library/xml.html#module-xml.etree.ElementTree", 3),
    Case("format a date as a string strftime", "library/datetime.html#module-datetime"),
    Case("open a socket and connect to a server", "library/socket.html#module-socket"),
    Case("start a new thread", "library/threading.html#module-threading"),
    Case("lock shared state between threads", "library/threading.html#module-threading", 2),
    Case("priority queue heap", "library/heapq.html#module-heapq", 2),
    Case("count word frequencies", "library/collections.html#module-collections", None),
    Case("type hints for a function", "library/typing.html#module-typing"),
    Case("what is a generator", "reference/expressions.html#yieldexpr", None),
    Case("try except finally", "reference/compound_stmts.html#try"),
    Case("lambda expressions", "reference/expressions.html#lambda"),
)
# The mean over CASES of 1 / rank (0 when not in the top DEFAULT_MAX_SOURCES) in 36f0c67.
RECORDED_MRR: Final = 0.8114

# The top hit's snippet should show the definition the question is about.
DEFINITIONS: Final = {
    "subprocess.run": "`subprocess.run(",
    "run a shell command and capture its output": "`subprocess.run(",
    "urllib.parse.urlparse": "`urllib.parse.urlparse(",
    "functools.lru_cache": "`functools.lru_cache(",
    "collections.Counter": "class `collections.Counter`",
    "join path components": "`os.path.join(",
    "How do I compress a file with gzip?": "`gzip.open(",
    "zip archive extract": "`zipfile.ZipFile.extract(",
    "iterate over combinations of a list": "class `itertools.combinations`",
    "hash a password sha256": "`hashlib.pbkdf2_hmac(",
}


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CorpusIndex]:
    with CorpusIndex.open(stdlib_data_dir(tmp_path_factory) / STDLIB_INDEX) as opened:
        yield opened


def rank_of(index: CorpusIndex, case: Case) -> int | None:
    """Where the expected document comes among the pipeline's default number of hits."""
    hits = index.search(case.question, limit=DEFAULT_MAX_SOURCES)
    urls = [hit.url.removeprefix(DOCS) for hit in hits]
    return urls.index(case.expected) + 1 if case.expected in urls else None


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.rank is not None], ids=lambda c: str(c.question)
)
def test_the_expected_document_ranks_no_lower_than_recorded(index: CorpusIndex, case: Case) -> None:
    rank = rank_of(index, case)
    assert rank is not None, f"{case.expected} is no longer found"
    assert case.rank is not None
    assert rank <= case.rank


def test_mean_reciprocal_rank_does_not_drop(index: CorpusIndex) -> None:
    ranks = [rank_of(index, case) for case in CASES]
    mrr = sum(1 / rank for rank in ranks if rank is not None) / len(CASES)
    assert mrr >= RECORDED_MRR


@pytest.mark.parametrize(("question", "opening"), sorted(DEFINITIONS.items()))
def test_the_top_snippet_shows_the_definition(
    index: CorpusIndex, question: str, opening: str
) -> None:
    top = index.search(question, limit=DEFAULT_MAX_SOURCES)[0]
    assert top.snippet.startswith(opening)
