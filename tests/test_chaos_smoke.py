"""The chaos suite runs: ``chaos/run.py --smoke`` on a real 3-node cluster (``make chaos``
runs the full one). Each smoke case must lose and duplicate nothing and converge in 3 s."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SMOKE_CASES = ("node_kill", "redis_kill_2s", "pg_cut_2s")

# Timing-bound (3 s to converge) and heavy (3 nodes, nginx): alone, after the parallel part.
pytestmark = [pytest.mark.integration, pytest.mark.serial]


def test_chaos_smoke_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    database_url = os.environ.get("YIHAO_TEST_DATABASE_URL")
    assert database_url, "the PostgreSQL tier is off (set YIHAO_TEST_DATABASE_URL)"
    figures = tmp_path / "chaos.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "chaos" / "run.py"), "--smoke", "--json", str(figures),
         "--database-url", database_url],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    rows = {line.split("|")[1].strip(): line for line in result.stdout.splitlines()[2:]}
    assert sorted(rows) == sorted(SMOKE_CASES), result.stdout
    cases = {case["case"]: case for case in json.loads(figures.read_text())["cases"]}
    for name in SMOKE_CASES:
        case = cases[name]
        assert case["sent"] > 0 and case["received"] == sum(
            flow["sent"] * flow["sockets"] for flow in (case["chat"], case["prescriptions"])
        ), case
        assert (case["lost"], case["duplicated"]) == (0, 0), case
        assert case["converged_s"] is not None and case["converged_s"] <= 3.0, case
        cells = [cell.strip() for cell in rows[name].split("|")]
        assert cells[5:7] == ["0", "0"], rows[name]  # lost, duplicated as printed
    assert cases["node_kill"]["in_flight"]["prescriptions"] == 1, cases["node_kill"]
