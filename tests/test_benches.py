"""Every benchmark runs: `--quick` mode, once, to prove it works (issue 16's rule).

Benchmarks, not timed tests: no figure is checked here, only that each bench finishes, prints
its table and writes its JSON (the scale bench: that every run completed). They run side by
side (smoke runs, so sharing the machine only changes figures nobody reads here).
tests/test_scale_bench.py checks how the scale bench reads the service's loop stall.
"""

from __future__ import annotations

import asyncio
import json
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
    "scale_bench.py": (),
    "store_bench.py": (),
}
QUICK_TIMEOUT_S = 240

pytestmark = pytest.mark.timeout(QUICK_TIMEOUT_S + 30)


async def quick(bench: str, out: Path) -> tuple[int, str, str]:
    """Run one bench in --quick mode; its exit status, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(BENCH / bench),
        "--quick",
        *BENCHES[bench],
        "--json",
        str(out),
        cwd=BENCH.parent,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(QUICK_TIMEOUT_S):
            stdout, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_every_bench_runs_quick_and_prints_its_table(tmp_path: Path) -> None:
    names = sorted(BENCHES)
    outs = [tmp_path / f"{name}.json" for name in names]
    runs = (quick(name, out) for name, out in zip(names, outs, strict=True))
    finished = await asyncio.gather(*runs)
    for name, out, (code, stdout, stderr) in zip(names, outs, finished, strict=True):
        assert code == 0, f"{name}: {stderr[-3000:]}"
        assert any(line.startswith("|") for line in stdout.splitlines()), f"{name}: {stdout}"
        assert json.loads(out.read_text()), name
    scale = json.loads(outs[names.index("scale_bench.py")].read_text())["results"]
    assert sorted(scale, key=int) == ["5", "20"]
    for runs, servers in scale.items():
        assert set(servers) == {"research-service", "bare aiohttp"}
        for figures in servers.values():
            assert figures["completed"] == int(runs)
            assert figures["lag_events"] > 0
