"""Corpus helpers shared by the corpus, local-search and builtin-model tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from research_service.corpus.index import CorpusIndex
from research_service.corpus.stdlib import stdlib_documents
from research_service.providers.local_search import STDLIB_INDEX

FIXTURE_CORPUS = Path(__file__).parent / "data" / "corpus"

_stdlib_dirs: list[Path] = []


def copy_corpus(destination: Path) -> Path:
    """A writable copy of the fixture corpus, so a test can change files and re-sync."""
    return Path(shutil.copytree(FIXTURE_CORPUS, destination))


def stdlib_data_dir(factory: pytest.TempPathFactory) -> Path:
    """A data dir holding a built stdlib index: built once per test process, ~3-5 s."""
    if not _stdlib_dirs:
        folder = factory.mktemp("stdlib-index")
        with CorpusIndex.open(folder / STDLIB_INDEX) as index:
            index.sync(stdlib_documents())
        _stdlib_dirs.append(folder)
    return _stdlib_dirs[0]
