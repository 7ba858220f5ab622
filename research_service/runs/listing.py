"""Listing runs that wait for something (`GET /v1/runs?awaiting=plan_review`)."""

from __future__ import annotations

from typing import Any, Final

from research_service.runs.manager import RunManager

#: Runs read per step of the scan, and at most in one request (the rest: the `next` cursor).
SCAN_PAGE: Final = 200
MAX_SCAN: Final = 5000


async def awaiting_page(
    manager: RunManager,
    *,
    awaiting: str,
    limit: int,
    before: tuple[float, str] | None,
    owner: str | None,
) -> tuple[list[dict[str, Any]], tuple[float, str] | None]:
    """Up to `limit` entries of runs that await `awaiting`, newest first, and where to go on.

    Only the runs not yet ended are scanned (a run waiting has not ended), newest first from
    `before`, along the store's index of them; a scan stops at `limit` matches or after
    MAX_SCAN runs, and then hands back the position it reached (None: nothing left), so a
    page may hold fewer entries than `limit` while more follow.
    """
    entries: list[dict[str, Any]] = []
    position = before
    scanned = 0
    while scanned < MAX_SCAN:
        records = await manager.log.list_runs(
            limit=SCAN_PAGE, before=position, owner=owner, unfinished=True
        )
        for record, entry in zip(records, await manager.summaries(records), strict=True):
            scanned += 1
            position = record.sort_key
            if entry["awaiting"] == awaiting:
                entries.append(entry)
                if len(entries) == limit:
                    return entries, position
        if len(records) < SCAN_PAGE:
            return entries, None
    return entries, position
