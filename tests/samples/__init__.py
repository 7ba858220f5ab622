"""The samples shown in the docs, captured from real runs: `python -m tests.samples`.

Each sample sits in its document between `<!-- sample: NAME -->` and `<!-- /sample -->`.
`python -m tests.samples` runs the scenario behind every sample against the real service
(in-process, real HTTP on 127.0.0.1; the builtin model, or the wire-level fakes
`tests.fake_openai` and `tests.fake_searxng`) and rewrites those blocks; `--check` only
compares, as `tests/test_doc_samples.py` does. Run ids and the fakes' ports are replaced by
fixed ones, so a new capture changes nothing but the timings (and the expiry and signature of
stream tokens and session cookies), which the comparison ignores.
"""
