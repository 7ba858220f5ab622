"""The `builtin` model: deterministic plans and extractive answers streamed word by word."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from research_service.corpus.index import CorpusIndex
from research_service.providers.base import (
    AnswerRequest,
    LLMProvider,
    PlanRequest,
    Source,
    estimate_tokens,
)
from research_service.providers.builtin_llm import NOTHING_FOUND, BuiltinLLM, compose_answer
from research_service.providers.local_search import STDLIB_INDEX, LocalSearch
from tests.corpus_fixtures import stdlib_data_dir
from tests.fakes import RecordingReporter


def planning(question: str, *, breadth: int) -> PlanRequest:
    """A planning request for `question` that records what it is told."""
    return PlanRequest(question=question, breadth=breadth, report=RecordingReporter())


def answering(
    question: str, sources: Sequence[Source], *, report: RecordingReporter | None = None
) -> AnswerRequest:
    """An answer request for `question` from `sources`."""
    return AnswerRequest(question=question, sources=sources, report=report or RecordingReporter())


async def planned(llm: BuiltinLLM, question: str, *, breadth: int) -> list[str]:
    """The builtin model's queries for `question`."""
    return (await llm.plan(planning(question, breadth=breadth))).queries


CITATION = re.compile(r"\[(\d+)\]")

PHOTOSYNTHESIS = Source(
    id=3,
    title="Photosynthesis",
    url="file:///notes/photosynthesis.html",
    snippet=(
        "Photosynthesis is the process by which green plants, algae and some bacteria turn "
        "light energy into chemical energy. It takes place mainly in the chloroplasts of leaf "
        "cells, where the green pigment chlorophyll absorbs red and blue light."
    ),
)
CALVIN = Source(
    id=7,
    title="The Calvin cycle",
    url="file:///notes/calvin.html",
    snippet=(
        "In the stroma, the enzyme RuBisCO fixes carbon dioxide from the air. Using the ATP "
        "and NADPH made in the light, the cycle builds three-carbon sugars that the plant "
        "turns into glucose."
    ),
)
GIT = Source(
    id=9,
    title="Git basics",
    url="file:///notes/git.rst",
    snippet="A branch is a movable name for a commit. Rebasing replays commits on a new base.",
)


@pytest.fixture
def llm() -> BuiltinLLM:
    return BuiltinLLM(token_delay_ms=0)


async def collect(llm: BuiltinLLM, question: str, sources: Sequence[Source]) -> list[str]:
    return [piece async for piece in llm.synthesize(answering(question, sources))]


def test_builtin_llm_satisfies_the_llm_protocol(llm: BuiltinLLM) -> None:
    model: LLMProvider = llm
    assert model.name == "builtin"


# --- plan -------------------------------------------------------------------------------


async def test_plan_starts_with_the_useful_terms_and_what_the_docs_call_them(
    llm: BuiltinLLM,
) -> None:
    queries = (await llm.plan(planning("How do I parse JSON in Python?", breadth=3))).queries
    assert queries == ["parse json decode load", "json parse"]


@pytest.mark.parametrize(
    ("question", "topic"),
    [
        ("How do I read a CSV file?", "csv"),
        ("How do I compress a file with gzip?", "gzip"),
        ("How do I make an HTTP request?", "http"),
        ("How do I sort a list?", "list"),
    ],
)
async def test_every_planned_query_keeps_the_topic(
    llm: BuiltinLLM, question: str, topic: str
) -> None:
    """The verb ("read", "compress") and generic nouns ("file") are never the topic."""
    queries = await planned(llm, question, breadth=3)
    assert all(topic in query.split() for query in queries)


async def test_plan_drops_vague_words_and_adds_no_filler(llm: BuiltinLLM) -> None:
    assert (await llm.plan(planning("What is a dataclass?", breadth=3))).queries == ["dataclass"]
    assert (await llm.plan(planning("How do I make an HTTP request?", breadth=3))).queries == [
        "http request urlopen",
        "http request",
    ]


async def test_plan_keeps_dotted_identifiers_whole(llm: BuiltinLLM) -> None:
    queries = (await llm.plan(planning("What does asyncio.gather do?", breadth=3))).queries
    assert queries[0] == "asyncio.gather"
    assert all("asyncio.gather" in q for q in queries)


@pytest.mark.parametrize("breadth", [1, 2, 3, 4, 6, 10])
@pytest.mark.parametrize(
    "question",
    [
        "How do I sort a list of dictionaries by a key?",
        "How does photosynthesis work?",
        "What is the difference between os.path.join and pathlib.Path?",
        "json",
    ],
)
async def test_plan_is_deterministic_distinct_and_within_breadth(
    llm: BuiltinLLM, question: str, breadth: int
) -> None:
    queries = await planned(llm, question, breadth=breadth)
    assert queries == await planned(BuiltinLLM(), question, breadth=breadth)
    assert 1 <= len(queries) <= breadth
    assert len(set(queries)) == len(queries)
    assert all(q.strip() == q and q for q in queries)


@pytest.mark.parametrize("question", ["What is it?", "how do I do this", "?!"])
async def test_plan_without_key_terms_falls_back_to_the_question(
    llm: BuiltinLLM, question: str
) -> None:
    assert await planned(llm, question, breadth=3) == [question]


async def test_plan_never_returns_nothing_for_a_zero_breadth(llm: BuiltinLLM) -> None:
    assert len(await planned(llm, "parse json", breadth=0)) == 1


# --- synthesize -------------------------------------------------------------------------


async def test_streamed_pieces_join_to_the_answer(llm: BuiltinLLM) -> None:
    question = "How does photosynthesis turn light into sugar?"
    pieces = await collect(llm, question, [PHOTOSYNTHESIS, CALVIN])
    assert "".join(pieces) == compose_answer(question, [PHOTOSYNTHESIS, CALVIN])
    assert len(pieces) > 10  # word by word, not in one lump
    assert all(piece and not piece[0].isspace() for piece in pieces)


async def test_answer_cites_only_the_given_source_ids(llm: BuiltinLLM) -> None:
    answer = "".join(await collect(llm, "How does photosynthesis use light?", [PHOTOSYNTHESIS]))
    cited = {int(n) for n in CITATION.findall(answer)}
    assert cited == {3}
    assert "chlorophyll" in answer or "light energy" in answer


async def test_answer_prefers_sentences_about_the_question(llm: BuiltinLLM) -> None:
    answer = "".join(await collect(llm, "Which enzyme fixes carbon dioxide?", [GIT, CALVIN]))
    assert answer.startswith("In the stroma, the enzyme RuBisCO fixes carbon dioxide")
    assert "[7]" in answer
    assert "[9]" not in answer


async def test_answer_skips_near_duplicate_sentences(llm: BuiltinLLM) -> None:
    copy = Source(id=4, title="Copy", url="file:///copy", snippet=PHOTOSYNTHESIS.snippet)
    answer = compose_answer("What does chlorophyll absorb?", [PHOTOSYNTHESIS, copy])
    assert answer.count("absorbs red and blue light") == 1


def test_answer_drops_code_and_cut_off_sentences() -> None:
    source = Source(
        id=1,
        title="json",
        url="u",
        snippet=(
            "The json module encodes and decodes JSON documents.\n"
            ">>> json.loads('[1, 2]') == [1, 2] True\n"
            'Usage: $ echo \'{"json":"obj"}\' | python -m json.tool\n'
            "Decoding JSON from a file object is done by json.load and its…"
        ),
    )
    assert compose_answer("decode json", [source]) == (
        "The json module encodes and decodes JSON documents [1]."
    )


def test_numbers_in_brackets_in_a_snippet_are_not_citations() -> None:
    source = Source(
        id=2,
        title="Notes",
        url="u",
        snippet="Photosynthesis was first described by Jan Ingenhousz in 1779 [1].",
    )
    answer = compose_answer("Who described photosynthesis?", [source])
    assert CITATION.findall(answer) == ["2"]
    assert "(1)" in answer


def test_no_sources_says_nothing_was_found() -> None:
    assert compose_answer("What is a monad?", []) == NOTHING_FOUND
    assert "nothing relevant" in NOTHING_FOUND


def test_unrelated_sources_are_named_not_quoted() -> None:
    answer = compose_answer("What is a monad?", [GIT, CALVIN])
    assert answer.startswith("None of the sources found answers this directly.")
    assert {int(n) for n in CITATION.findall(answer)} == {9, 7}


async def test_answer_is_the_same_every_time(llm: BuiltinLLM) -> None:
    question = "How does photosynthesis work?"
    first = await collect(llm, question, [PHOTOSYNTHESIS, CALVIN, GIT])
    assert first == await collect(llm, question, [PHOTOSYNTHESIS, CALVIN, GIT])


def test_sources_about_the_topic_outweigh_passing_mentions() -> None:
    """A source whose title names the topic beats an earlier one that only mentions it."""
    logging = Source(
        id=1,
        title="logging — Logging package for Python",
        url="u:logging",
        snippet='Areas can be nested, such as "read CSV files" and "read XLS files".',
    )
    csv = Source(
        id=2,
        title="csv — CSV file reading and writing",
        url="u:csv",
        snippet="This module provides classes that assist in the reading and writing of CSV files.",
    )
    answer = compose_answer("How do I read a CSV file?", [logging, csv])
    assert answer == (
        "This module provides classes that assist in the reading and writing of CSV files [2]."
    )


def test_off_topic_sentences_that_miss_the_topic_are_dropped() -> None:
    json_source = Source(
        id=1,
        title="json — JSON encoder and decoder",
        url="u:json",
        snippet="`json.loads(s)`: Deserialize `s` (a `str` holding a JSON document) to an object.",
    )
    pyclbr = Source(
        id=2,
        title="pyclbr — Parse a Python module",
        url="u:pyclbr",
        snippet="Parse a Python module and describe its classes and functions.",
    )
    answer = compose_answer("How do I parse JSON?", [json_source, pyclbr])
    assert answer.startswith("`json.loads(s)`: Deserialize")
    assert "[2]" not in answer


def test_the_definition_of_the_asked_name_comes_first() -> None:
    """`gzip.compress` answers "compress" better than an earlier `rewind` that says "file"."""
    gzip = Source(
        id=1,
        title="gzip — Functions that read and write gzipped files",
        url="u:gzip",
        snippet=(
            "`gzip.GzipFile.rewind()`: Return the stream position to the beginning of the file.\n"
            "`gzip.compress(data, compresslevel=_COMPRESS_LEVEL_BEST, *, mtime=None)`: "
            "Compress data in one shot and return the compressed bytes."
        ),
    )
    answer = compose_answer("How do I compress a file with gzip?", [gzip])
    assert answer.startswith(
        "`gzip.compress(…)`: Compress data in one shot and return the compressed bytes [1]."
    )


def test_the_best_sentence_brings_the_one_explaining_it_further() -> None:
    tasks = Source(
        id=4,
        title="asyncio.tasks — Support for tasks, coroutines and the scheduler",
        url="u:tasks",
        snippet=(
            "`asyncio.gather(*coros_or_futures, return_exceptions=False)`: Return a future "
            "aggregating results from the given coroutines/futures.\n"
            "Coroutines will be wrapped in a future and scheduled in the event loop."
        ),
    )
    answer = compose_answer("What does asyncio.gather do?", [tasks])
    assert answer == (
        "`asyncio.gather(…)`: Return a future aggregating results from the given "
        "coroutines/futures [4]. Coroutines will be wrapped in a future and scheduled in the "
        "event loop [4]."
    )


# --- a newcomer's first questions against the standard library --------------------------

BREADTH = 3
MAX_SOURCES = 8
DOCS = "https://docs.python.org/3/library/"


@pytest.fixture(scope="module")
def stdlib_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return stdlib_data_dir(tmp_path_factory) / STDLIB_INDEX


async def research(question: str, index_path: Path) -> tuple[str, list[Source]]:
    """Plan, search and synthesize as the pipeline does, without the web layer.

    Each query asks for `MAX_SOURCES` hits and keeps a fair share of the slots still free.
    """
    llm = BuiltinLLM(token_delay_ms=0)
    search = LocalSearch(CorpusIndex.open(index_path))
    sources: list[Source] = []
    try:
        queries = await planned(llm, question, breadth=BREADTH)
        for n, query in enumerate(queries):
            share = -(-(MAX_SOURCES - len(sources)) // (len(queries) - n))
            hits = await search.search(query, limit=MAX_SOURCES)
            fresh = [h for h in hits if h.url not in {s.url for s in sources}][:share]
            sources += [
                Source(len(sources) + i, h.title, h.url, h.snippet) for i, h in enumerate(fresh, 1)
            ]
    finally:
        search.close()
    return "".join(await collect(llm, question, sources)), sources


@pytest.mark.parametrize(
    ("question", "pages", "term"),
    [
        ("How do I parse JSON in Python?", {"json.html#module-json"}, "JSON"),
        ("What does asyncio.gather do?", {"asyncio.html#module-asyncio.tasks"}, "gather"),
        ("How do I read a CSV file?", {"csv.html#module-csv"}, "CSV"),
        ("How do I compress a file with gzip?", {"gzip.html#module-gzip"}, "gzip"),
        ("How do I make an HTTP request?", {"urllib.html#module-urllib.request"}, "URL"),
        ("What is a dataclass?", {"dataclasses.html#module-dataclasses"}, "dataclass"),
        ("How do I sort a list?", {"stdtypes.html#typesseq", "functions.html"}, "sort"),
    ],
)
async def test_newcomer_question_gets_a_sensible_cited_answer(
    stdlib_path: Path, question: str, pages: set[str], term: str
) -> None:
    """The right module is the top source and the first one cited, named in the answer."""
    answer, sources = await research(question, stdlib_path)
    right = {f"{DOCS}{page}" for page in pages}
    cited = [int(n) for n in CITATION.findall(answer)]
    assert sources[0].url in right
    assert sources[cited[0] - 1].url in right
    assert set(cited) <= {s.id for s in sources}
    assert term in answer
    assert 1 <= len(cited) <= 5
    assert not answer.startswith("None of the sources")


async def test_parse_json_question_opens_with_a_json_definition(stdlib_path: Path) -> None:
    answer, _ = await research("How do I parse JSON in Python?", stdlib_path)
    assert answer.startswith("`json.load")


async def test_asyncio_gather_question_gets_gathers_definition(stdlib_path: Path) -> None:
    answer, sources = await research("What does asyncio.gather do?", stdlib_path)
    assert answer.startswith("`asyncio.gather(…)`: Return a future aggregating results")
    assert "curses" not in " ".join(s.title for s in sources)


async def test_gzip_question_is_answered_by_opening_or_compressing(stdlib_path: Path) -> None:
    answer, _ = await research("How do I compress a file with gzip?", stdlib_path)
    assert answer.startswith(("`gzip.open(", "`gzip.compress("))
    assert "rewind" not in answer


async def test_csv_question_is_not_answered_from_the_logging_docs(stdlib_path: Path) -> None:
    answer, sources = await research("How do I read a CSV file?", stdlib_path)
    logging = {s.id for s in sources if s.title.startswith("logging")}
    assert not logging & {int(n) for n in CITATION.findall(answer)}
    assert "reading and writing of Comma Separated Value (CSV) files" in answer


async def test_usage_counts_every_piece_handed_over_when_stopped_early(llm: BuiltinLLM) -> None:
    report = RecordingReporter()
    stream = llm.synthesize(
        answering("How does photosynthesis work?", [PHOTOSYNTHESIS], report=report)
    )
    taken = [await anext(stream) for _ in range(3)]
    await stream.aclose()  # type: ignore[attr-defined]  # an async generator
    ((usage, estimated),) = report.usages
    assert estimated
    assert usage.completion_tokens == estimate_tokens("".join(taken))
