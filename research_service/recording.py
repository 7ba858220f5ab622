"""The recording format: a finished run as JSON Lines, written and read back.

Shared by the service (GET /v1/runs/{id}/recording), the export and the terminal client.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Final, NoReturn

from research_service import __version__, strict_json
from research_service.errors import ResearchError
from research_service.event_shapes import payload_problem
from research_service.events import EVENT_NAMES, FINAL_STATUSES, Event, dumps, is_run_id
from research_service.records import (
    BREADTH_RANGE,
    DEPTH_RANGE,
    MAX_SOURCES_RANGE,
    MAX_TOKENS_RANGE,
    RunOptions,
    RunRecord,
)
from research_service.text import encodable

FORMAT_NAME: Final = "research-service-recording"
#: The version this release writes.
FORMAT_VERSION: Final = 1
#: The versions this release reads.
SUPPORTED_VERSIONS: Final = frozenset({1})
#: The years a recording's `created_at` may name, and the longest a run may last in it: what
#: the service adds to a run's start (timings, its end) must stay a date Python can write.
EARLIEST: Final = 1970
LATEST: Final = 9000
MAX_T_MS: Final = 365 * 24 * 3600 * 1000
#: The longest line read: a `done` holds a whole answer, far less than this.
MAX_LINE_BYTES: Final = 64 << 20
#: RFC 3339's date-time (`datetime.fromisoformat` takes week dates and more besides).
_RFC3339: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})"
)
HEADER_FIELDS: Final = (
    "format",
    "version",
    "run_id",
    "question",
    "options",
    "created_at",
    "service_version",
)
#: Options that are true or false (the rest are bounded integers).
_OPTION_FLAGS: Final = frozenset({"review_plan"})
_OPTION_RANGES: Final = {
    "breadth": BREADTH_RANGE,
    "max_sources": MAX_SOURCES_RANGE,
    "depth": DEPTH_RANGE,
    "max_tokens": MAX_TOKENS_RANGE,
}


class RecordingError(ResearchError):
    """A recording cannot be read: `line` (1-based, None for the whole file) says where."""

    code = "recording"

    def __init__(self, reason: str, *, source: str, line: int | None) -> None:
        where = source if line is None else f"{source}, line {line}"
        super().__init__(f"{where}: {reason}")
        self.source = source
        self.line = line
        self.reason = reason


@dataclass(frozen=True)
class RecordedEvent:
    """One event of a recording, as its line states it."""

    seq: int
    event: str
    data: dict[str, Any]
    t_ms: int


@dataclass(frozen=True)
class Recording:
    """A parsed recording: its header line and its events in seq order, the last one `done`."""

    header: dict[str, Any]
    events: list[RecordedEvent]

    @property
    def run_id(self) -> str:
        """The recorded run's id."""
        run_id: str = self.header["run_id"]
        return run_id

    @property
    def question(self) -> str:
        """The recorded run's question."""
        question: str = self.header["question"]
        return question

    @property
    def options(self) -> RunOptions:
        """The recorded run's options."""
        return RunOptions(**self.header["options"])

    def record(self) -> RunRecord:
        """The run record the recording was made from (created_at to the millisecond)."""
        created = datetime.fromisoformat(self.header["created_at"]).timestamp()
        return RunRecord(self.run_id, self.question, self.options, created)


# --- writing ---------------------------------------------------------------------------------


def header(record: RunRecord) -> dict[str, Any]:
    """The header line's object for `record`."""
    return header_fields(
        run_id=record.id,
        question=record.question,
        options=record.options.to_dict(),
        created_at=record.created_iso,
    )


def header_fields(
    *, run_id: str, question: str, options: dict[str, Any], created_at: str
) -> dict[str, Any]:
    """The header line's object from a run's fields as the API shows them."""
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "run_id": run_id,
        "question": question,
        "options": options,
        "created_at": created_at,
        "service_version": __version__,
    }


def event_line(*, seq: int, name: str, data: Any, t_ms: int) -> str:
    """One event's newline-terminated line."""
    return dumps({"seq": seq, "event": name, "data": data, "t_ms": t_ms}) + "\n"


def header_line(record: RunRecord) -> bytes:
    """The header line of `record`'s recording, as UTF-8."""
    return (dumps(header(record)) + "\n").encode()


def event_line_parts(event: Event) -> tuple[bytes, memoryview, bytes]:
    """`event_line` of a stored event as three parts, spliced from its wire bytes.

    The wire's `data:` payload is the same compact JSON `dumps` writes, so prefix, payload
    and suffix together are the bytes decoding and encoding the payload again would give;
    the payload is a view of the stored bytes, never a copy.
    """
    wire = event.wire
    start = wire.index(b"\ndata: ") + 7
    prefix = b'{"seq":%d,"event":"%s","data":' % (event.seq, event.name.encode())
    return prefix, memoryview(wire)[start:-2], b',"t_ms":%d}\n' % event.t_ms


def recording_chunks(events: Iterable[Event], *, size: int) -> Iterator[bytes]:
    """The event lines of a recording in chunks of about `size` bytes (never much more)."""
    pending: list[bytes | memoryview] = []
    pending_bytes = 0
    for event in events:
        for part in event_line_parts(event):
            for offset in range(0, len(part), size):
                piece = part[offset : offset + size]
                pending.append(piece)
                pending_bytes += len(piece)
                if pending_bytes >= size:
                    yield b"".join(pending)
                    pending, pending_bytes = [], 0
    if pending:
        yield b"".join(pending)


def recording_lines(record: RunRecord, events: Sequence[Event]) -> Iterator[str]:
    """The recording of `record` and its `events`, one newline-terminated line at a time."""
    yield dumps(header(record)) + "\n"
    for event in events:
        yield event_line(seq=event.seq, name=event.name, data=event.data, t_ms=event.t_ms)


def dump_recording(record: RunRecord, events: Sequence[Event]) -> str:
    """The whole recording of `record` and its `events` as text."""
    return "".join(recording_lines(record, events))


# --- reading ---------------------------------------------------------------------------------


def load_recording(path: str | os.PathLike[str]) -> Recording:
    """Read and check the recording file at `path` (a `str` or a path object), line by line."""
    source = os.fspath(path)
    try:
        with Path(path).open("rb") as file:
            return _parse_lines(_file_lines(file, source), source=source)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise RecordingError(
            f"cannot read the file ({reason}); pass a recording made by `research-service "
            "export` or GET /v1/runs/{id}/recording",
            source=source,
            line=None,
        ) from None


def _file_lines(file: BinaryIO, source: str) -> Iterator[str]:
    r"""The file's lines as text, each without its "\n": never more than one held at a time."""
    for number in itertools.count(1):
        raw = file.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        if len(raw) > MAX_LINE_BYTES:
            _fail(source, number, f"longer than {MAX_LINE_BYTES >> 20} MiB; no service writes such")
        try:
            yield raw.decode("utf-8").removesuffix("\n")
        except UnicodeDecodeError as exc:
            _fail(source, number, f"not UTF-8 (byte {raw[exc.start]:#04x}); recordings are UTF-8")


def parse_recording(text: str, *, source: str = "<recording>") -> Recording:
    """Parse and check a recording's text; RecordingError names the line and what is wrong."""
    # Split on "\n" only: str.splitlines() would also split on U+2028 and friends, which
    # compact JSON written with ensure_ascii=False leaves raw inside strings.
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    return _parse_lines(iter(lines), source=source)


def _parse_lines(lines: Iterator[str], *, source: str) -> Recording:
    first = next(lines, None)
    if first is None:
        _fail(source, 1, "the file is empty; a recording starts with its header line")
    head = check_header(_object(first, source=source, line=1), source=source)
    events: list[RecordedEvent] = []
    last = 1
    for last, raw in enumerate(lines, start=2):
        obj = _object(raw, source=source, line=last)
        events.append(_event(obj, previous=events[-1] if events else None, at=(source, last)))
    if not events or events[-1].event != "done":
        why = "a recording holds a finished run, export it again once the run has ended"
        _fail(source, last, f"the recording ends at line {last} without a done event; {why}")
    return Recording(head, events)


def _fail(source: str, line: int, reason: str) -> NoReturn:
    raise RecordingError(reason, source=source, line=line)


def _object(raw: str, *, source: str, line: int) -> dict[str, Any]:
    if not raw.strip():
        _fail(source, line, "blank line; every line is one JSON object")
    try:
        value = strict_json.loads(raw)
    except json.JSONDecodeError as exc:
        _fail(source, line, f"not JSON ({exc.msg} at column {exc.colno})")
    except RecursionError:
        _fail(source, line, "nested too deeply to read")
    except ValueError as exc:  # NaN or Infinity, an integer of over 4300 digits
        _fail(source, line, f"not JSON a service writes ({exc})")
    if ("\\ud" in raw or "\\uD" in raw) and not encodable(json.dumps(value, ensure_ascii=False)):
        _fail(source, line, "a string holds a lone surrogate (\\ud800-\\udfff); no UTF-8 text can")
    if not isinstance(value, dict):
        _fail(source, line, f"a JSON {_kind(value)}, not an object; every line is one object")
    return value


def _clip(number: int) -> str:
    """An integer as a message quotes it: a few thousand digits are cut."""
    text = str(number)
    return text if len(text) <= 16 else f"{text[:16]}…"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return {list: "array", str: "string", int: "number", float: "number"}.get(
        type(value), type(value).__name__
    )


def _require(obj: Mapping[str, Any], name: str, kind: type, *, source: str, line: int) -> Any:
    """`obj[name]`, which must be there and be a `kind` (never a bool for int)."""
    if name not in obj:
        _fail(source, line, f"missing field {name!r}")
    value = obj[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        expected = {int: "an integer", str: "a string", dict: "an object"}[kind]
        _fail(source, line, f"field {name!r} must be {expected}, not a {_kind(value)}")
    return value


def check_header(obj: dict[str, Any], *, source: str) -> dict[str, Any]:
    def need(name: str, kind: type) -> Any:
        return _require(obj, name, kind, source=source, line=1)

    name = obj.get("format")
    if name != FORMAT_NAME:
        shown = "missing" if name is None else repr(name)
        _fail(
            source,
            1,
            f"field 'format' is {shown}, not {FORMAT_NAME!r}; the first line must be a "
            "recording header",
        )
    version = need("version", int)
    if version not in SUPPORTED_VERSIONS:
        supported = ", ".join(map(str, sorted(SUPPORTED_VERSIONS)))
        _fail(
            source,
            1,
            f"unsupported version {_clip(version)}; this release ({__version__}) reads "
            f"version {supported}",
        )
    if not is_run_id(need("run_id", str)):
        _fail(source, 1, "field 'run_id' must be 16 lowercase hex characters")
    if not need("question", str).strip():
        _fail(source, 1, "field 'question' is blank")
    _options(need("options", dict), source=source)
    created = need("created_at", str)
    try:
        moment = datetime.fromisoformat(created) if _RFC3339.fullmatch(created) else None
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        _fail(
            source, 1, f"field 'created_at' is {created[:40]!r}, not an RFC 3339 time with offset"
        )
    try:
        year = moment.astimezone(UTC).year
    except OverflowError:  # year 1 at +14:00, year 9999 at -14:00
        year = 0
    if not EARLIEST <= year <= LATEST:
        # Timings, listings and answers add to it: they must stay within what a date holds.
        _fail(source, 1, f"field 'created_at' is {created!r}, not from {EARLIEST} to {LATEST}")
    need("service_version", str)
    return obj


def _options(options: dict[str, Any], *, source: str) -> None:
    known = {f.name for f in fields(RunOptions)}
    for key, value in options.items():
        if key not in known:
            _fail(source, 1, f"field 'options' has unknown option {key!r}; known: {sorted(known)}")
        if key in _OPTION_FLAGS:
            if type(value) is not bool:
                _fail(source, 1, f"field 'options.{key}' must be true or false")
            continue
        low, high = _OPTION_RANGES[key]
        if type(value) is not int or not low <= value <= high:
            _fail(source, 1, f"field 'options.{key}' must be an integer from {low} to {high}")


def _event(
    obj: dict[str, Any], *, previous: RecordedEvent | None, at: tuple[str, int]
) -> RecordedEvent:
    source, line = at

    def need(name: str, kind: type) -> Any:
        return _require(obj, name, kind, source=source, line=line)

    if previous is not None and previous.event == "done":
        _fail(source, line, f"an event after done (line {line - 1}); done is always the last")
    seq = need("seq", int)
    expected = 1 if previous is None else previous.seq + 1
    if seq != expected:
        _fail(source, line, f"seq is {seq}, expected {expected}; seq counts up from 1 without gaps")
    name = need("event", str)
    if name not in EVENT_NAMES:
        _fail(source, line, f"unknown event {name!r}; events are {', '.join(sorted(EVENT_NAMES))}")
    data = need("data", dict)
    t_ms = need("t_ms", int)
    if not 0 <= t_ms <= MAX_T_MS:
        why = f"it counts milliseconds since the run started, at most {MAX_T_MS} (a year)"
        _fail(source, line, f"t_ms is {_clip(t_ms)}; {why}")
    if previous is not None and t_ms < previous.t_ms:
        _fail(source, line, f"t_ms goes back from {previous.t_ms} to {t_ms}; it never decreases")
    if name == "done" and data.get("status") not in FINAL_STATUSES:
        statuses = ", ".join(sorted(FINAL_STATUSES))
        _fail(source, line, f"field 'data.status' of done must be one of {statuses}")
    problem = payload_problem(name, data)
    if problem is not None:
        _fail(source, line, f"field {problem.field!r} of {name} {problem.complaint}")
    return RecordedEvent(seq, name, data, t_ms)
