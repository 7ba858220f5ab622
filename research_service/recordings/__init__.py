"""A finished run's recording taken from a store or a service; the replay server's stand-ins.

The format itself (writing and reading a recording) is `research_service.recording`.
"""

from research_service.recordings.export import RunNotFinished, finished_recording

__all__ = ["RunNotFinished", "finished_recording"]
