"""What a delivery says: the run's end in brief, with links, never the answer itself."""

from __future__ import annotations

from typing import Any

from research_service.events import Event
from research_service.records import RunRecord, iso_time
from research_service.webhooks.outbox import Delivery


def notification(delivery: Delivery, record: RunRecord, done: Event) -> dict[str, Any]:
    """The JSON body of `delivery`: `type`, `timestamp` and `data`, as Standard Webhooks has.

    `type` is `run.completed`, `run.failed` or `run.cancelled`.
    """
    data = done.data
    status = str(data["status"])
    base = delivery.base_url.rstrip("/")
    url = f"{base}/v1/runs/{record.id}"
    ended = iso_time(record.created_at + done.t_ms / 1000)
    error = data.get("error")
    return {
        "type": f"run.{status}",
        "timestamp": ended,
        "data": {
            "run_id": record.id,
            "status": status,
            "question": record.question,
            "created_at": record.created_iso,
            "finished_at": ended,
            "error": None if not error else {"code": error["code"], "message": error["message"]},
            "timings_ms": data.get("timings_ms") or {},
            "usage": data.get("usage"),
            "source_count": len(data.get("sources") or ()),
            "answer_chars": len(data.get("answer") or ""),
            "truncated": bool(data.get("truncated")),
            "links": {
                "snapshot": url,
                "events": f"{url}/events",
                "recording": f"{url}/recording",
            },
        },
    }
