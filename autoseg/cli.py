"""Command line: ``autoseg fit | evaluate | predict | info | demo``, mirroring the API."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

EXIT_OK, EXIT_FAILURE, EXIT_USER_ERROR = 0, 1, 2


def _parse_sets(pairs: Sequence[str]) -> dict[str, Any]:
    """``["optim.lr=3e-4", ...]`` -> ``{"optim.lr": "3e-4"}`` (types come from the config)."""
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        values[key.strip()] = None if value.strip().lower() in {"none", "null"} else value.strip()
    return values


def _cmd_fit(args: argparse.Namespace) -> int:
    from autoseg.predictor import SemanticSegmentor

    seg = SemanticSegmentor(
        problem_type=args.problem_type,
        presets=args.preset,
        path=args.out,
        hyperparameters=_parse_sets(args.set),
        seed=args.seed,
        verbosity=args.verbosity,
        label=args.label_column,
        image=args.image_column,
    )
    seg.fit(args.train, tuning_data=args.tuning, time_limit=args.time_limit, resume=args.resume)
    from autoseg.fitting import is_ddp_worker

    if not is_ddp_worker():  # DDP's extra processes run this command too
        print(json.dumps(seg.summary(), indent=2, default=str))
    return EXIT_OK


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from autoseg.predictor import SemanticSegmentor

    seg = SemanticSegmentor.load(args.model, verbosity=args.verbosity)
    print(json.dumps(seg.evaluate(args.data, metrics=args.metrics), indent=2))
    return EXIT_OK


def _cmd_predict(args: argparse.Namespace) -> int:
    from autoseg.predictor import SemanticSegmentor

    seg = SemanticSegmentor.load(args.model, verbosity=args.verbosity)
    masks = seg.predict(args.input, save_dir=args.out)
    print(f"wrote {len(masks)} masks and overlays to {args.out}")
    return EXIT_OK


def _cmd_info(args: argparse.Namespace) -> int:
    from autoseg.info import parameter_table

    print(parameter_table(args.backbone, args.method, args.num_classes, args.image_size))
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from autoseg.demo import run_demo

    run_demo(args.out, time_limit=args.time_limit, verbosity=args.verbosity)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The ``autoseg`` argument parser with its five sub-commands."""
    parser = argparse.ArgumentParser(
        prog="autoseg", description="Fine-tune SAM with Conv-LoRA for semantic segmentation."
    )
    parser.add_argument("-v", "--verbosity", type=int, default=2, help="0 silent .. 2 progress")
    sub = parser.add_subparsers(dest="command", required=True)

    fit = sub.add_parser("fit", help="fine-tune on a CSV of image,label paths")
    fit.add_argument("--train", required=True, help="training CSV")
    fit.add_argument("--tuning", help="validation CSV (default: a seeded 10%% of --train)")
    fit.add_argument("--out", required=True, help="new folder for the predictor")
    fit.add_argument("--preset", default="auto", help="preset name (default: by hardware)")
    fit.add_argument("--problem-type", default="auto", choices=["auto", "binary", "multiclass"])
    fit.add_argument("--time-limit", type=float, help="seconds")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted fit in --out from its last checkpoint",
    )
    fit.add_argument("--image-column", default="image")
    fit.add_argument("--label-column", default="label")
    fit.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="hyperparameter, e.g. --set optim.lr=3e-4 (repeatable)",
    )
    fit.set_defaults(func=_cmd_fit)

    evaluate = sub.add_parser("evaluate", help="score a saved predictor on a labelled CSV")
    evaluate.add_argument("--model", required=True, help="predictor folder")
    evaluate.add_argument("--data", required=True, help="CSV with image and label columns")
    evaluate.add_argument("--metrics", nargs="*", help="subset of metrics")
    evaluate.set_defaults(func=_cmd_evaluate)

    predict = sub.add_parser("predict", help="write mask PNGs and overlays")
    predict.add_argument("--model", required=True, help="predictor folder")
    predict.add_argument("--input", required=True, help="CSV, folder of images, or one image")
    predict.add_argument("--out", required=True, help="output folder")
    predict.set_defaults(func=_cmd_predict)

    info = sub.add_parser("info", help="trainable-parameter table per backbone and method")
    info.add_argument("--backbone", nargs="*", default=["vit_b", "vit_l", "vit_h"])
    info.add_argument("--method", nargs="*", default=["conv_lora", "lora", "decoder_only"])
    info.add_argument("--num-classes", type=int, default=1, help="1 = binary")
    info.add_argument("--image-size", type=int, help="input size (default: the backbone's)")
    info.set_defaults(func=_cmd_info)

    demo = sub.add_parser("demo", help="offline end-to-end demo on generated data")
    demo.add_argument("--out", default="autoseg_demo", help="new folder for everything")
    demo.add_argument("--time-limit", type=float, default=300.0, help="training seconds")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (2 = a problem with your input)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError) as error:
        print(f"autoseg {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
