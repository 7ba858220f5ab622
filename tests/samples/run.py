"""Capture the samples of each document, and write them into it or compare them with it."""

from __future__ import annotations

import difflib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

import aiohttp

from tests.samples import (
    api,
    auth,
    cassettes,
    mcp,
    model_failures,
    models,
    protocol,
    recordings,
    review,
    search,
)
from tests.samples.blocks import blocks, normalise, replace
from tests.samples.format import Ids
from tests.samples.service import Env

ROOT: Final = Path(__file__).resolve().parent.parent.parent
Capture = Callable[[Env], Awaitable[dict[str, str]]]


async def _models(env: Env) -> dict[str, str]:
    ids = Ids(seed=models.DOC)
    return await models.capture(env, ids) | await model_failures.capture(env, ids)


async def _protocol(env: Env) -> dict[str, str]:
    return await protocol.capture(env) | await review.capture_protocol(env)


async def _api(env: Env) -> dict[str, str]:
    return await api.capture(env) | await auth.capture(env) | await review.capture_api(env)


#: Each document with samples, and the scenarios that capture them.
DOCUMENTS: Final[dict[str, Capture]] = {
    protocol.DOC: _protocol,
    api.DOC: _api,
    models.DOC: _models,
    search.DOC: search.capture,
    recordings.DOC: recordings.capture,
    cassettes.DOC: cassettes.capture,
    mcp.DOC: mcp.capture,
}
COMMAND: Final = "python -m tests.samples"


async def capture(doc: str, data_dir: Path) -> dict[str, str]:
    """Run the scenarios of `doc` on a fresh service; name -> the block's new text."""
    async with aiohttp.ClientSession() as http:
        return await DOCUMENTS[doc](Env(data_dir, http))


def write(doc: str, captured: dict[str, str]) -> bool:
    """Put the captures into `doc`; whether anything changed."""
    path = ROOT / doc
    text = path.read_text(encoding="utf-8")
    new = replace(text, captured)
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


def differences(doc: str, captured: dict[str, str]) -> str:
    """How `doc`'s samples differ from `captured`, timings aside ("" when they do not)."""
    text = (ROOT / doc).read_text(encoding="utf-8")
    replace(text, captured)  # raises when the two do not name the same samples
    shown = blocks(text)
    diff: list[str] = []
    for name in sorted(captured):
        old, new = normalise(shown[name]), normalise(captured[name])
        if old != new:
            diff += difflib.unified_diff(
                old.splitlines(), new.splitlines(), f"{doc} {name}", "captured now", lineterm=""
            )
    return "\n".join(diff)
