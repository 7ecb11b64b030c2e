"""autoseg against the reference Conv-LoRA (AutoGluon 1.6.3), side by side, in one run.

Alternates, ``--rounds`` times: the AutoGluon harness (``../shared/anchors/
autogluon_conv_lora/run_ag.py``, run with the interpreter of its own venv, ``--ag-python``)
and ``bench_train.py`` once per autoseg precision (``--precision``), each in a fresh
process, on the same configuration: SAM ViT-B with random weights, 1024 px, batch 1, two
threads, rank 3, alpha 32, 8 experts, structure loss, AdamW, gradient clip 1. AutoGluon is
never imported here: it lives in its own venv and is not a dependency of autoseg.

Reports per run the median step time and the process's peak RSS, and the ratios of
autoseg's medians to AutoGluon's (pooled over rounds). See ``bench_anchor.md``.

Example:
    .venv/bin/python benchmarks/bench_anchor.py --ag-python ../agvenv/bin/python --rounds 2

"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import _common

HARNESS = _common.REPO_ROOT.parent / "shared" / "anchors" / "autogluon_conv_lora" / "run_ag.py"
RESULT_LINE = re.compile(r"^\[ag_anchor\] RESULT (\{.*\})$", re.MULTILINE)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ag-python", type=Path, required=True, help="python of AutoGluon's venv")
    parser.add_argument("--harness", type=Path, default=HARNESS)
    parser.add_argument("--method", default="conv_lora", choices=("conv_lora", "lora"))
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=_common.RESULTS_DIR)
    return parser.parse_args(argv)


def run_autogluon(args: argparse.Namespace, scratch: Path, index: int) -> dict[str, Any]:
    """One AutoGluon fit (6 steps at 1024 px); its median step excludes the first step."""
    out_json = scratch / f"ag_{index}.json"
    command = [
        str(args.ag_python), str(args.harness), "--method", args.method,
        "--threads", str(args.threads), "--out-json", str(out_json),
        "--save-path", str(scratch / f"ag_run_{index}"),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    match = RESULT_LINE.search(done.stdout)
    if done.returncode != 0 or match is None:
        tail = (done.stdout + done.stderr)[-2000:]
        raise SystemExit(f"the AutoGluon harness failed (exit {done.returncode}):\n{tail}")
    full = json.loads(out_json.read_text())
    return {
        "library": "autogluon",
        "precision": "fp32",
        "step_times_s": full["step_s"],
        "steady_times_s": full["step_s"][1:],
        "median_step_s": full["median_step_s_excl_first"],
        "peak_rss_mib": full["peak_rss_mib"],
        "trainable_parameters": full["trainable_params_ag"],
        "versions": full["versions"],
    }


def run_autoseg(args: argparse.Namespace, precision: str, scratch: Path) -> dict[str, Any]:
    """One ``bench_train`` process: 1 warm-up step, then 5 measured (AutoGluon: 1 + 5)."""
    out = scratch / f"autoseg_{precision}"
    command = [
        sys.executable, str(_common.BENCH_DIR / "bench_train.py"), "--backbone", "vit_b",
        "--image-size", "1024", "--method", args.method, "--precision", precision,
        "--threads", str(args.threads), "--warmup", "1", "--steps", "5", "--device", "cpu",
        "--out", str(out),
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, text=True)
    result = json.loads(next(out.glob("*.json")).read_text())
    for stale in out.glob("*.json"):
        stale.unlink()
    run = result["results"][args.method]
    return {
        "library": "autoseg",
        "precision": precision,
        "step_times_s": run["warmup_times_s"] + run["step_times_s"],
        "steady_times_s": run["step_times_s"],
        "median_step_s": run["step_median_s"],
        "peak_rss_mib": run["memory"]["peak_rss_bytes"] / 2**20,
        "trainable_parameters": run["parameters"]["trainable"],
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Pooled medians per (library, precision) and autoseg's ratios to AutoGluon."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(f"{run['library']}_{run['precision']}", []).append(run)
    pooled = {
        name: {
            "median_step_s": statistics.median(t for r in group for t in r["steady_times_s"]),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in group),
            "runs": len(group),
        }
        for name, group in groups.items()
    }
    reference = pooled.get("autogluon_fp32")
    if reference:
        for name, entry in pooled.items():
            if name.startswith("autoseg"):
                entry["speedup_vs_autogluon"] = reference["median_step_s"] / entry["median_step_s"]
                entry["rss_vs_autogluon"] = entry["peak_rss_mib"] / reference["peak_rss_mib"]
    return pooled


def _relative_if_path(part: str) -> str:
    """A command-line word as the results record it: absolute paths relative to the repository."""
    return _common.repo_relative(part) if Path(part).is_absolute() else part


def main(argv: list[str] | None = None) -> Path:
    """Alternate the runs and write ``anchor_<method>_<timestamp>.json``."""
    args = parse_args(argv)
    command = [Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)]
    command = [_relative_if_path(part) for part in command]
    settings = {
        "method": args.method,
        "backbone": "vit_b (random weights)",
        "image_size": 1024,
        "batch_size": 1,
        "threads": args.threads,
        "precisions": args.precision,
        "rounds": args.rounds,
        "harness": _common.repo_relative(args.harness),
        "median": "steps 2-6 of each process, pooled over rounds",
    }
    result = _common.envelope("anchor", settings, command)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="autoseg-anchor-") as scratch:
        for index in range(args.rounds):
            _common.log(f"bench_anchor: round {index + 1}/{args.rounds}: AutoGluon")
            runs.append({"round": index, **run_autogluon(args, Path(scratch), index)})
            for precision in args.precision:
                _common.log(f"bench_anchor: round {index + 1}: autoseg {precision}")
                runs.append({"round": index, **run_autoseg(args, precision, Path(scratch))})
            _common.log(f"  {json.dumps(summarize(runs))}")
    result["runs"] = runs
    result["summary"] = summarize(runs)
    path = _common.write_result(args.out, f"anchor_{args.method}", result)
    print(path)
    return path


if __name__ == "__main__":
    main()
