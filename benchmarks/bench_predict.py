"""Batched inference throughput (images/s) and peak memory, through autoseg's predict path.

The model is a saved predictor (``--model DIR``, loaded with ``SemanticSegmentor.load``) or a
random-weight one (``--backbone``, ``--method``). Synthetic images of ``--input-hw`` are
written to a temporary folder once; then, per ``--image-size`` and in a fresh process each,
the images go through ``autoseg.inference.iter_probabilities`` (read, resize, normalise,
batched forward, restore to the original size, sigmoid) ``--repeats`` times after one
warm-up batch. images/s = number of images / median pass time.

Example:
    .venv/bin/python benchmarks/bench_predict.py --backbone lite --image-size 256 512

"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import _common

if TYPE_CHECKING:
    import pandas as pd

    from autoseg.models.segmenter import SamSegmenter

BACKBONE_CHOICES = ("vit_b", "vit_l", "vit_h", "lite", "vit_tiny", "lite_tiny")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", type=Path, help="a saved predictor folder")
    source.add_argument(
        "--backbone",
        choices=BACKBONE_CHOICES,
        help="random-weight model of this backbone (default: lite)",
    )
    parser.add_argument(
        "--method",
        default="conv_lora",
        choices=("conv_lora", "lora", "decoder_only"),
        help="adapter of the random-weight model",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        nargs="+",
        default=None,
        help="model input side(s) (default: the backbone's native size; a "
        "saved predictor runs at its own size only)",
    )
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--num-images", type=int, default=8, help="images per timed pass")
    parser.add_argument(
        "--input-hw",
        type=int,
        nargs=2,
        default=(384, 512),
        metavar=("H", "W"),
        help="size of the synthetic input images",
    )
    parser.add_argument(
        "--image-kind",
        default="synthetic",
        choices=("synthetic", "noise"),
        help="synthetic scenes (sides 16..1024) or uniform noise PNGs",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over the images")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "fp32", "bf16"),
        help="auto = what predict uses for a model trained in mixed precision (the CPU "
        "preset's default): bf16 autocast on CUDA and on CPUs with native bf16, else fp32",
    )
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers")
    _common.add_run_options(parser, "image size")
    args = parser.parse_args(argv)
    if min(args.batch_size, args.num_images, args.repeats) < 1:
        parser.error("--batch-size, --num-images and --repeats must be >= 1")
    if args.model is None and args.backbone is None:
        args.backbone = "lite"
    return args


def write_images(folder: Path, count: int, hw: tuple[int, int], kind: str) -> list[str]:
    """Write ``count`` RGB PNGs of size ``hw`` into ``folder``; return their paths."""
    import numpy as np
    from PIL import Image

    from autoseg.data.synthetic import make_synthetic_binary

    if kind == "synthetic":
        make_synthetic_binary(folder, n_images=count + 1, size=tuple(hw), seed=0, split_test=1)
        return [str(p) for p in sorted((folder / "images").glob("*.png"))[:count]]
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"noise_{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (*hw, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def _load_model(model_dir: str | None, backbone: str, method: str, image_size: int) -> SamSegmenter:
    """The model of a saved predictor, or a random-weight build."""
    from autoseg.builder import build_model
    from autoseg.config import Config

    if model_dir is not None:
        from autoseg import SemanticSegmentor

        seg = SemanticSegmentor.load(model_dir, verbosity=0)
        return seg.model_
    config = Config().with_overrides(
        {"model.backbone": backbone, "peft.method": method, "data.image_size": image_size}
    )
    return build_model(config, 1, pretrained=False)[0]


def measure_predict(
    model_dir: str | None,
    backbone: str,
    method: str,
    image_size: int,
    image_paths: list[str],
    batch_size: int,
    repeats: int,
    device: str,
    precision: str,
    threads: int,
    num_workers: int,
) -> dict[str, Any]:
    """Load or build one model and time passes of batched inference; run in a fresh process."""
    from autoseg.data.prepare import prepare_prediction_table
    from autoseg.inference import iter_probabilities
    from autoseg.runtime import Runtime

    used_threads = _common.set_threads(threads)
    _common.autocast_dtype(precision)  # refuses an unknown precision
    lightning_precision = "bf16-mixed" if precision == "bf16" else "32-true"
    runtime = Runtime("gpu" if device == "cuda" else "cpu", lightning_precision)
    table = prepare_prediction_table(image_paths)

    def one_pass(rows: pd.DataFrame) -> float:
        _common.synchronize(device)
        start = time.perf_counter()
        outputs = iter_probabilities(
            model,
            rows,
            runtime,
            batch_size=batch_size,
            num_workers=num_workers,
        )
        count = sum(1 for _ in outputs)
        _common.synchronize(device)
        if count != len(rows):
            raise RuntimeError(f"predicted {count} images of {len(rows)}")
        return time.perf_counter() - start

    with _common.track_peak_memory(device) as memory:
        start = time.perf_counter()
        model = _load_model(model_dir, backbone, method, image_size)
        load_s = time.perf_counter() - start
        warmup_s = one_pass(table.iloc[:batch_size])
        times = []
        for i in range(repeats):
            times.append(one_pass(table))
            _common.log(f"  {image_size} px: pass {i + 1}/{repeats}: {times[-1]:.3f} s")
    summary = _common.summarize_times(times)
    return {
        "image_size": image_size,
        "threads": used_threads,
        "load_s": load_s,
        "warmup_s": warmup_s,
        "pass_times_s": times,
        **{f"pass_{k}": v for k, v in summary.items()},
        "images_per_s": len(table) / summary["median_s"],
        "memory": memory,
    }


def _model_record(args: argparse.Namespace) -> tuple[str, str, list[int]]:
    """(backbone, method, sizes) of the model under test, checked against ``--image-size``."""
    from autoseg.models.backbones import pretrained_weights

    if args.model is None:
        return (
            args.backbone,
            args.method,
            args.image_size or [pretrained_weights(args.backbone).input_size],
        )
    from autoseg.persistence import read_predictor_files

    config = read_predictor_files(args.model)[0]["config"]
    size = int(config["data"]["image_size"])
    if args.image_size not in (None, [size]):
        raise SystemExit(f"{args.model} was trained at {size} px; it runs at that size only")
    return config["model"]["backbone"], config["peft"]["method"], [size]


def _predict_precision(device: str) -> str:
    """The precision ``predict`` runs a mixed-precision model in on ``device``."""
    from autoseg.runtime import cpu_has_native_bf16

    return "bf16" if device == "cuda" or cpu_has_native_bf16() else "fp32"


def main(argv: list[str] | None = None) -> Path:
    """Run the benchmark and write ``predict_<backbone>_<sizes>_<timestamp>.json``."""
    args = parse_args(argv)
    device = _common.resolve_device(args.device)
    precision = args.precision
    if precision == "auto":
        precision = _predict_precision(device)
    backbone, method, sizes = _model_record(args)
    settings = {
        "model": str(args.model) if args.model else None,
        "backbone": backbone,
        "method": method,
        "weights": "saved predictor" if args.model else "random (pretrained=False)",
        "image_sizes": sizes,
        "batch_size": args.batch_size,
        "num_images": args.num_images,
        "input_hw": list(args.input_hw),
        "image_kind": args.image_kind,
        "repeats": args.repeats,
        "device": device,
        "precision": precision,
        "threads": args.threads,
        "num_workers": args.num_workers,
        "isolated": args.isolate,
    }
    command = [Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)]
    result = _common.envelope("predict", settings, command)
    runs = []
    with tempfile.TemporaryDirectory(prefix="autoseg_bench_predict_") as tmp:
        paths = write_images(Path(tmp), args.num_images, tuple(args.input_hw), args.image_kind)
        for size in sizes:
            _common.log(f"bench_predict: {backbone} {size} px, batch {args.batch_size}, {device}")
            run = _common.run_isolated(
                measure_predict,
                isolate=args.isolate,
                model_dir=str(args.model) if args.model else None,
                backbone=backbone,
                method=method,
                image_size=size,
                image_paths=paths,
                batch_size=args.batch_size,
                repeats=args.repeats,
                device=device,
                precision=precision,
                threads=args.threads,
                num_workers=args.num_workers,
            )
            _common.log(f"  {size} px: {run['images_per_s']:.2f} images/s")
            runs.append(run)
    result["results"] = runs
    stem = f"predict_{backbone}_{'-'.join(str(s) for s in sizes)}"
    path = _common.write_result(args.out, stem, result)
    print(path)
    return path


if __name__ == "__main__":
    main()
