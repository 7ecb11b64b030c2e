"""Rows per second of the pre-training data check, per number of reader threads.

Writes ``--rows`` generated pairs into a temporary folder: RGB images with random sides in
``--min-side``..``--max-side`` (smooth color gradients, shapes and noise, so they compress
like photos), half PNG and half JPEG, each with a 0/255 PNG mask of ellipses. Then times the
check that ``fit`` runs before training (``load_table`` + ``validate_table`` with the
training mask check, which fully decodes every image and mask) for each ``--workers``
count. One unmeasured warm-up pass first (so every count finds the files in the page
cache), then ``--repeats`` rounds, each running every count once in a rotated order so
that load changes on a shared machine hit all counts alike. Rows/s = rows / median time.

Example:
    .venv/bin/python benchmarks/bench_validate.py --rows 1000 --workers 1 2 4 8

"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import _common
import numpy as np


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--min-side", type=int, default=256)
    parser.add_argument("--max-side", type=int, default=512)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--repeats", type=int, default=3, help="measured rounds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=_common.RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.rows < 1 or args.repeats < 1 or min(args.workers) < 1:
        parser.error("--rows, --repeats and every --workers count must be >= 1")
    if not 8 <= args.min_side <= args.max_side:
        parser.error("need 8 <= --min-side <= --max-side")
    return args


def _pair(folder: Path, index: int, seed: int, sides: tuple[int, int]) -> str:
    """Write one image (PNG for even, JPEG for odd rows) and its mask; return the CSV row."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng([seed, index])
    height, width = (int(v) for v in rng.integers(sides[0], sides[1] + 1, 2))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    slope = rng.uniform(-0.3, 0.3, 3) * (xx[..., None] + yy[..., None])
    pixels = rng.uniform(0, 255, 3) + slope + rng.normal(0, 6, (height, width, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    mask = Image.new("L", (width, height), 0)
    xs, ys = sorted(rng.integers(0, width, 2)), sorted(rng.integers(0, height, 2))
    box = [int(xs[0]), int(ys[0]), int(xs[1]), int(ys[1])]
    ImageDraw.Draw(image).ellipse(box, fill=(230, 210, 190))
    ImageDraw.Draw(mask).ellipse(box, fill=255)
    suffix = "png" if index % 2 == 0 else "jpg"
    image.save(folder / "images" / f"{index:05d}.{suffix}", quality=90)
    mask.save(folder / "masks" / f"{index:05d}.png")
    return f"images/{index:05d}.{suffix},masks/{index:05d}.png"


def make_data(folder: Path, rows: int, sides: tuple[int, int], seed: int) -> Path:
    """Generate the pairs and ``train.csv`` (paths relative to it); return the CSV path."""
    (folder / "images").mkdir()
    (folder / "masks").mkdir()
    with ThreadPoolExecutor() as pool:
        lines = list(pool.map(lambda i: _pair(folder, i, seed, sides), range(rows)))
    csv = folder / "train.csv"
    csv.write_text("image,label\n" + "\n".join(lines) + "\n")
    return csv


def check_once(csv: Path, workers: int) -> float:
    """Seconds for the pre-training check of ``csv`` with ``workers`` threads."""
    from autoseg.data.table import load_table, validate_table
    from autoseg.labels.problem import MaskValueCollector

    start = time.perf_counter()
    validate_table(load_table(csv), check_values=MaskValueCollector("auto"), max_workers=workers)
    return time.perf_counter() - start


def measure(csv: Path, rows: int, workers: list[int], repeats: int) -> dict[str, Any]:
    """Warm-up pass, then ``repeats`` rotated rounds over the worker counts."""
    check_once(csv, max(workers))
    times: dict[int, list[float]] = {w: [] for w in workers}
    for round_index in range(repeats):
        shift = round_index % len(workers)
        for count in workers[shift:] + workers[:shift]:
            times[count].append(check_once(csv, count))
            _common.log(f"  {count} worker(s): {rows / times[count][-1]:.0f} rows/s")
    results = {}
    for count, measured in times.items():
        median = statistics.median(measured)
        results[str(count)] = {
            "times_s": measured,
            **_common.summarize_times(measured),
            "rows_per_s": rows / median,
            "seconds_per_1000_rows": 1000 * median / rows,
        }
    return results


def main(argv: list[str] | None = None) -> Path:
    """Run the benchmark; return the path of the JSON result."""
    from autoseg.data.table import default_workers

    args = parse_args(argv)
    settings = {
        "rows": args.rows,
        "sides": [args.min_side, args.max_side],
        "formats": "images half PNG, half JPEG (quality 90); masks PNG 0/255",
        "workers": args.workers,
        "repeats": args.repeats,
        "seed": args.seed,
        "check": "load_table + validate_table(check_values=MaskValueCollector('auto'))",
    }
    command = [Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)]
    result = _common.envelope("validate", settings, command)
    result["default_workers"] = default_workers()
    with tempfile.TemporaryDirectory(prefix="autoseg_bench_validate_") as tmp:
        _common.log(f"bench_validate: writing {args.rows} pairs to a temporary folder")
        csv = make_data(Path(tmp), args.rows, (args.min_side, args.max_side), args.seed)
        result["data_bytes"] = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file())
        result["results"] = measure(csv, args.rows, args.workers, args.repeats)
    best = max(result["results"].items(), key=lambda item: item[1]["rows_per_s"])
    result["best"] = {"workers": int(best[0]), "rows_per_s": best[1]["rows_per_s"]}
    _common.log(f"bench_validate: best {best[1]['rows_per_s']:.0f} rows/s with {best[0]} workers")
    path = _common.write_result(args.out, f"validate_{args.rows}", result)
    print(path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path)
    return path


if __name__ == "__main__":
    main()
