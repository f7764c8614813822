"""Every benchmark in --smoke mode, so a benchmark that breaks fails the test suite.

Each runs as the developer runs it (``bench/X.py --smoke --json``) and must exit 0
with every row holding Ferry's figure and its anchor's, all measured in that run:
--smoke fails on a missing anchor tool, so scripts/setup.sh installs them.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from support.requirements import check_lab

BENCH = Path(__file__).resolve().parents[3] / "bench"
# Each takes 15-40 s on the 2-CPU development machine; the margin is for a loaded CI machine.
TIMEOUT_S = 300


def run_smoke(script: str) -> dict:
    try:
        done = subprocess.run([sys.executable, str(BENCH / script), "--smoke", "--json"], cwd=BENCH.parent,
                              capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"{script} --smoke did not finish within {TIMEOUT_S} s; stderr: {(err.stderr or b'')[-2000:]!r}")
    assert done.returncode == 0, f"{script} --smoke exited {done.returncode}:\n{done.stderr[-3000:]}"
    doc = json.loads(done.stdout)
    assert doc["mode"] == "smoke"
    return doc


def real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def check_rows(doc: dict, anchors: tuple[str, ...]) -> None:
    rows = doc["rows"]
    assert rows
    for row in rows:
        name = row["metric"]
        assert real(row["ferry"]), f"{name}: Ferry's figure {row['ferry']!r}"
        assert real(row["anchor"]), f"{name}: anchor {row['anchor_name']!r} figure {row['anchor']!r}"
        for who in ("ferry", "anchor"):
            samples = row["samples"][who]
            assert samples and all(real(v) for v in samples), f"{name}: {who} samples {samples!r}"
    for anchor in anchors:
        assert any(anchor in row["anchor_name"] for row in rows), f"no row against {anchor!r}"


@pytest.mark.kvm
def test_engine_benchmark_smoke():
    check_rows(run_smoke("engine.py"), ("bare KVM_RUN loop", "same loop compiled for the host", "host memset",
                                        "CLI floor"))


@pytest.mark.kvm
def test_snapshot_benchmark_smoke():
    check_rows(run_smoke("snapshot.py"), ("QEMU", "this disk", "page cache"))


@pytest.mark.kvm
@pytest.mark.lab
def test_migration_benchmark_smoke():
    check_lab()
    doc = run_smoke("migration.py")
    check_rows(doc, ("QEMU", "iperf3"))
    assert {row["metric"].split("]")[0] + "]" for row in doc["rows"]} == {"[idle]", "[dirty100]", "[flatout]"}


@pytest.mark.kvm
@pytest.mark.lab
def test_replication_benchmark_smoke():
    check_lab()
    doc = run_smoke("replication.py")
    check_rows(doc, ("iperf3", "the checkpoint's chunks with data", "chunks changed since the full one"))


def test_placement_benchmark_smoke():
    # Pure Python on the controller side: no KVM, under a second or two.
    doc = run_smoke("placement.py")
    check_rows(doc, ("sorted()",))
    assert real(doc["seconds"]) and doc["seconds"] > 0
    assert doc["fleet"]["moves"] > 0 and doc["fleet"]["unplaced"] == 0
