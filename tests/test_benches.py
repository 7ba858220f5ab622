"""Every benchmark runs: `--quick` mode, once, to prove it works (issue 16's rule).

Benchmarks, not timed tests: no figure is checked here, only that each bench finishes, prints
its table and writes its JSON. bench/scale_bench.py has its own test (tests/test_scale_bench.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
#: Each bench and its flags beside --quick and --json (the ones that pin to cores are told not
#: to: the suite may share the machine).
BENCHES = {
    "stream_bench.py": ("--no-pin",),
    "relay_bench.py": ("--no-pin",),
    "search_bench.py": (),
    "amplification_bench.py": ("--no-pin",),
    "cluster_bench.py": (),
}
QUICK_TIMEOUT_S = 240

pytestmark = pytest.mark.timeout(QUICK_TIMEOUT_S + 30)


@pytest.mark.parametrize("bench", sorted(BENCHES))
def test_the_bench_runs_quick_and_prints_its_table(bench: str, tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, str(BENCH / bench), "--quick", *BENCHES[bench], "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=QUICK_TIMEOUT_S,
        cwd=BENCH.parent,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert any(line.startswith("|") for line in done.stdout.splitlines()), done.stdout
    assert json.loads(out.read_text())
