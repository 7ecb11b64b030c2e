"""The validation benchmark on a handful of tiny generated rows (seconds)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH_DIR))

import bench_validate  # noqa: E402


def test_bench_validate_writes_rows_per_second(tmp_path: Path) -> None:
    path = bench_validate.main(
        ["--rows", "6", "--min-side", "16", "--max-side", "24", "--workers", "1", "2"]
        + ["--repeats", "2", "--out", str(tmp_path)]
    )
    assert path.parent == tmp_path and path.name.startswith("validate_6_")
    result = json.loads(path.read_text())
    assert result["kind"] == "validate" and result["settings"]["rows"] == 6
    assert set(result["results"]) == {"1", "2"}
    for run in result["results"].values():
        assert len(run["times_s"]) == 2 and all(t > 0 for t in run["times_s"])
        assert run["rows_per_s"] == 6 / run["median_s"]
    assert result["best"]["workers"] in (1, 2) and result["data_bytes"] > 0
    assert str(tmp_path) not in json.dumps(result["settings"])  # no temporary paths recorded
