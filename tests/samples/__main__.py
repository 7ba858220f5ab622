"""`python -m tests.samples [--check] [DOC...]`: capture the docs' samples and write them in.

With `--check`, write nothing: print how the documents differ from a new capture (timings
aside) and exit 1 if they do. DOC names documents (e.g. docs/protocol.md); default: all.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from tests.samples.run import DOCUMENTS, capture, differences, write


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.samples", description=__doc__)
    parser.add_argument("docs", nargs="*", metavar="DOC", help=", ".join(DOCUMENTS))
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 on a change")
    args = parser.parse_args(argv)
    # The scenarios fail on purpose; their warnings are what the samples show, not news.
    logging.basicConfig(level=logging.ERROR)
    unknown = sorted(set(args.docs) - set(DOCUMENTS))
    if unknown:
        parser.error(f"no samples in {', '.join(unknown)}; choose from {', '.join(DOCUMENTS)}")
    failed = False
    with tempfile.TemporaryDirectory(prefix="samples-") as data:
        for doc in args.docs or DOCUMENTS:
            captured = asyncio.run(capture(doc, Path(data)))
            if args.check:
                diff = differences(doc, captured)
                failed |= bool(diff)
                print(diff or f"{doc}: samples are current")
            else:
                changed = write(doc, captured)
                print(f"{doc}: {len(captured)} samples {'rewritten' if changed else 'unchanged'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
