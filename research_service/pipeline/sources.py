"""The run's sources: numbered once per canonical URL, shared fairly between queries and rounds."""

from __future__ import annotations

from urllib.parse import urlsplit

from research_service.providers.base import SearchHit, Source
from research_service.providers.urls import canonical_url


class SourceRegistry:
    """Numbers sources in the order they are found, once per URL, up to a cap.

    With several rounds, round `r` of `R` may fill the sources up to `r/R` of the cap, so
    follow-up rounds find room for what the first one missed. Within a round each finished
    query gets a fair share of the slots still free (free slots divided by queries still to
    come, rounded up), so the first query to finish cannot take them all, and a query that
    found little leaves its share to the later ones.
    """

    def __init__(self, *, limit: int, rounds: int = 1, sources: list[Source]) -> None:
        self.limit = limit
        self.rounds = rounds
        self.round = 0
        self.queries_left = 0
        self.sources = sources
        self._urls: set[str] = {_key(source.url) for source in sources}

    @property
    def round_limit(self) -> int:
        """How many sources the run may hold by the end of the current round."""
        return -(-self.limit * self.round // self.rounds)

    def start_round(self, *, queries: int) -> None:
        """A new round of `queries` queries begins."""
        self.round += 1
        self.queries_left = queries

    def add(self, hits: list[SearchHit]) -> list[Source]:
        """Register a finished query's hits, best first; return the sources they added."""
        free = self.round_limit - len(self.sources)
        share = -(-free // max(self.queries_left, 1))
        self.queries_left -= 1
        added: list[Source] = []
        for hit in hits:
            if len(added) >= share:
                break
            key = _key(hit.url)
            if key in self._urls:
                continue
            self._urls.add(key)
            source = Source(len(self.sources) + 1, hit.title, hit.url, hit.snippet)
            self.sources.append(source)
            added.append(source)
        return added


def _key(url: str) -> str:
    """The identity of a URL for de-duplication (scheme and host case, tracking, slash).

    The fragment stays part of it: a corpus may hold several documents on one page
    (`json.html#module-json`, `json.html#module-json.decoder`).
    """
    fragment = urlsplit(url).fragment
    return canonical_url(url) + (f"#{fragment}" if fragment else "")
