"""The relay bench's model server: tests/fake_openai streaming bench pieces at a fixed pace.

`python bench/relay_fake.py --tokens N [--interval 0.001]` answers planning requests with a
one-query plan and every other chat request with the N pieces of `workload.token_pieces`,
one delta every `interval` seconds on a fixed schedule. It prints `PORT <n>` once it listens
on 127.0.0.1, then reads commands on stdin, one a line:

- `stamps`: print one JSON line for the latest finished streamed answer: its `pieces` and
  `sent_at`, the `time.monotonic()` just after each piece was written; then forget it.

It stops when stdin closes (the bench is gone, even if it was killed) or on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from workload import token_pieces

# The fake lives in the test package, one level above bench/.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fake_openai import FakeOpenAI, Reply, Usage, wants_json

MODEL: Final = "fake-model"
PLAN: Final = {"queries": ["token relay"]}
DEFAULT_INTERVAL_S: Final = 0.001
STAMPS_TIMEOUT_S: Final = 30.0


async def stamps(fake: FakeOpenAI, pieces: list[str]) -> dict[str, object]:
    """The latest streamed answer's pieces and write times, once it has finished."""
    streamed = [r for r in fake.chat_requests if r.stream]
    if not streamed:
        return {"error": "no streamed answer yet"}
    record = streamed[-1]
    async with asyncio.timeout(STAMPS_TIMEOUT_S):
        await record.completed.wait()
    fake.state.requests.clear()  # keeps memory flat across runs
    return {"pieces": pieces, "sent_at": record.sent_at}


async def serve(tokens: int, interval: float) -> None:
    """Serve until stdin closes or a signal arrives, answering commands on stdin."""
    pieces = token_pieces(tokens)
    fake = FakeOpenAI(models=[MODEL], strict=False)
    fake.script.always(Reply.json(PLAN, when=wants_json, usage=Usage(50, 10)))
    # Usage is scripted so the fake does not count the prompt's words on every request.
    fake.script.always(Reply(pieces=pieces, interval=interval, usage=Usage(100, tokens)))
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    async def commands() -> None:
        while line := await reader.readline():
            if line.strip() == b"stamps":
                answer = await stamps(fake, pieces)
            else:
                answer = {"error": f"unknown command {line.strip()!r}"}
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()
        stop.set()  # EOF: the bench is gone

    async with fake:
        # The fake is the stimulus and should keep its schedule: a full collection over the
        # start-up heap (tens of ms) would pause it and then send a burst of late chunks.
        gc.collect()
        gc.freeze()
        print(f"PORT {fake.port}", flush=True)
        task = asyncio.create_task(commands())
        try:
            await stop.wait()
        finally:
            task.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: serve the paced fake."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tokens", type=int, required=True, help="pieces per streamed answer")
    parser.add_argument(
        "--interval", type=float, default=DEFAULT_INTERVAL_S, help="seconds between pieces"
    )
    args = parser.parse_args(argv)
    asyncio.run(serve(args.tokens, args.interval))
    return 0


if __name__ == "__main__":
    sys.exit(main())
