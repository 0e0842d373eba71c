"""Every benchmark still runs: each in its tiny --smoke mode (the figures come from full runs)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import directory_lock

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
INTEGRATION = bool(os.environ.get("YIHAO_TEST_DATABASE_URL"))


def _run(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCH / script), "--smoke"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    "script",
    [
        "records_bench.py",
        "prescription_delivery.py",
        "media_precall.py",
        "consult_join.py",
        "consult_chat.py",
        "media_recording.py",
        "http_fixed.py",
    ],
)
def test_benchmark_runs_in_smoke_mode(script: str) -> None:
    result = _run(script)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "p50" in result.stdout + result.stderr


@pytest.mark.integration
def test_fanout_benchmarks_run_beside_their_peers() -> None:
    peer = BENCH / "node_peer"
    with directory_lock(peer):
        if not (peer / "node_modules").is_dir():
            npm = shutil.which("npm")
            assert npm, "npm is needed for the Node.js Socket.IO peer"
            subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund"], cwd=peer, check=True, timeout=300
            )
    for script in ("consult_fanout.py", "cluster_fanout.py", "connections.py", "workers.py"):
        result = _run(script)
        assert result.returncode == 0, f"{script}: {result.stderr[-3000:]}"
        assert "p50" in result.stdout + result.stderr, script
