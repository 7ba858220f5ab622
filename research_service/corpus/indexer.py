"""The `index` command's job: bring a folder's index up to date and say what changed."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from research_service.corpus.files import SUFFIXES, folder_documents
from research_service.corpus.index import CorpusIndex, IndexStats, ProgressCallback, SyncReport
from research_service.corpus.links import LinkBase, folder_prefix

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class IndexResult:
    """What one indexing of a folder did, and the index it left."""

    folder: Path
    db: Path
    report: SyncReport
    stats: IndexStats
    link: LinkBase | None
    seconds: float


def index_folder(
    folder: Path,
    *,
    db: Path,
    base_url: str | None = None,
    progress: ProgressCallback | None = None,
) -> IndexResult:
    """Sync the index `db` with the files under `folder`, re-reading only changed ones.

    `base_url` makes results link to the files' paths under it; "" goes back to `file://`
    URLs; None keeps what the index has stored. The link is kept in the index itself, so
    `serve --corpus` over the same index links the same way.
    """
    started = time.perf_counter()
    folder = folder.expanduser().resolve()
    refs = folder_documents(folder)
    if not refs:
        kinds = ", ".join(sorted(SUFFIXES))
        log.warning("%s holds no file to index (looked for %s)", folder, kinds)
    db.parent.mkdir(parents=True, exist_ok=True)
    prefix = folder_prefix(folder)
    with CorpusIndex.open(db) as index:
        report = index.sync(refs, progress=progress)
        stored = index.link_base()
        if base_url is not None:
            index.set_link_base(LinkBase(prefix, base_url) if base_url else None)
        elif stored is not None and stored.prefix != prefix:
            # The same index file now holds another folder: its files go under the same site.
            index.set_link_base(LinkBase(prefix, stored.base))
        link = index.link_base()
        stats = index.stats()
    seconds = time.perf_counter() - started
    return IndexResult(folder, db, report, stats, link, seconds)


def summary(result: IndexResult) -> str:
    """A few lines saying what changed, what the index holds, and where results link to."""
    r, stats = result.report, result.stats
    skipped = f", {r.skipped} skipped (see the warnings above)" if r.skipped else ", 0 skipped"
    links = (
        f"{result.link.base}<path>"
        if result.link is not None
        else f"{folder_prefix(result.folder)}<path> (set --base-url to link to a site)"
    )
    return "\n".join(
        (
            f"indexed {result.folder} in {result.seconds:.2f} s",
            f"  files:   {r.added} added, {r.updated} updated, {r.removed} removed, "
            f"{r.unchanged} unchanged{skipped}",
            f"  index:   {stats.documents} documents, {stats.passages} passages in {result.db}",
            f"  links:   {links}",
        )
    )
