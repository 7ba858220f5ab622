"""Recorded runs shipped with the tests; regenerate with `python -m tests.recordings.regenerate`."""
