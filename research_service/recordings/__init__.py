"""Recordings: finished runs as versioned JSON Lines files, written, read back and exported."""

from research_service.recordings.export import RunNotFinished, finished_recording
from research_service.recordings.format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    SUPPORTED_VERSIONS,
    RecordedEvent,
    Recording,
    RecordingError,
    dump_recording,
    load_recording,
    parse_recording,
    recording_lines,
)

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "SUPPORTED_VERSIONS",
    "RecordedEvent",
    "Recording",
    "RecordingError",
    "RunNotFinished",
    "dump_recording",
    "finished_recording",
    "load_recording",
    "parse_recording",
    "recording_lines",
]
