"""Command line: ``autoseg fit | evaluate | predict | export | info | compare | demo``.

Exit codes: 0 done; 2 a problem with your input or settings (any
:class:`~autoseg.errors.AutosegError`, printed as one ``autoseg <command>: error: ...`` line);
1 an internal error (a bug: please report it); 130 interrupted (Ctrl-C). ``--debug`` or
``AUTOSEG_DEBUG=1`` also prints the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from autoseg.cli_info import add_info_parser
from autoseg.errors import AutosegError, PredictorFolderError, SettingsError

EXIT_OK, EXIT_FAILURE, EXIT_USER_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130
DEBUG_HELP = "print the traceback of errors (or set AUTOSEG_DEBUG=1)"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, like autoseg's own errors."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parse_sets(pairs: Sequence[str]) -> dict[str, Any]:
    """``["optim.lr=3e-4", ...]`` -> ``{"optim.lr": "3e-4"}`` (types come from the config).

    Raises:
        SettingsError: an item is not ``key=value`` or has an empty key.

    """
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SettingsError(
                f"--set expects KEY=VALUE such as --set optim.lr=3e-4, got {pair!r}."
            )
        values[key.strip()] = None if value.strip().lower() in {"none", "null"} else value.strip()
    return values


def _predictor_folder(model: str) -> Path:
    """The ``--model`` folder, refused early if it is not there."""
    folder = Path(model)
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise PredictorFolderError(
            f"--model {model!r} {what}; pass the folder a fit saved (it holds config.yaml) "
            f"(current directory: {Path.cwd()})."
        )
    return folder


def _existing_input(path: str, option: str) -> str:
    """An input path, refused before the predictor is loaded if it is not there."""
    if not Path(path).exists():
        raise SettingsError(
            f"{option} {path!r} does not exist (current directory: {Path.cwd()}); pass a CSV, "
            "a folder of images or one image."
        )
    return path


def _check_metric_names(metrics: Sequence[str] | None) -> None:
    """Refuse metric names no problem type has, before the predictor is loaded."""
    from autoseg.arguments import ALL_METRICS

    unknown = [m for m in metrics or [] if m not in ALL_METRICS and not m.startswith("iou/")]
    if unknown or metrics == []:
        raise SettingsError(
            f"--metrics: unknown metric(s) {unknown}; choose from {list(ALL_METRICS)} "
            "(binary problems: iou dice sm em wfm mae ber; multi-class: miou acc iou/<class>), "
            "or leave --metrics out for all."
        )


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
    from autoseg.failsafe import is_ddp_worker

    if not is_ddp_worker():  # DDP's extra processes run this command too
        print(json.dumps(seg.summary(), indent=2, default=str))
    return EXIT_OK


TILE_CHOICES = {"auto": "auto", "on": True, "off": False}  # --tile word -> the API's tile


def _tiling(args: argparse.Namespace) -> dict[str, Any]:
    """The ``tile``/``tile_size``/``overlap`` arguments, checked before the model is loaded."""
    from autoseg.tiling import check_tile_options

    options = dict(tile=TILE_CHOICES[args.tile], tile_size=args.tile_size, overlap=args.overlap)
    try:
        check_tile_options(**options)
    except SettingsError as error:
        raise SettingsError(f"--{str(error).replace('_', '-')}") from None
    return options


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from autoseg.predictor import SemanticSegmentor

    folder, data = _predictor_folder(args.model), _existing_input(args.data, "--data")
    _check_metric_names(args.metrics)
    tiling = _tiling(args)  # before the model loads
    seg = SemanticSegmentor.load(folder, verbosity=args.verbosity)
    print(json.dumps(seg.evaluate(data, metrics=args.metrics, **tiling), indent=2))
    return EXIT_OK


def _cmd_predict(args: argparse.Namespace) -> int:
    from autoseg.predictor import SemanticSegmentor

    folder, data = _predictor_folder(args.model), _existing_input(args.input, "--input")
    tiling = _tiling(args)  # before the model loads
    seg = SemanticSegmentor.load(folder, verbosity=args.verbosity)
    masks = seg.predict(data, save_dir=args.out, overwrite=args.overwrite, **tiling)
    print(f"wrote {len(masks)} masks and overlays to {args.out}")
    return EXIT_OK


def _cmd_export(args: argparse.Namespace) -> int:
    from autoseg.predictor import SemanticSegmentor

    seg = SemanticSegmentor.load(_predictor_folder(args.model), verbosity=args.verbosity)
    print(f"wrote {seg.export(args.out, overwrite=args.overwrite)}")
    return EXIT_OK


def _cmd_compare(args: argparse.Namespace) -> int:
    from autoseg.predictor import SemanticSegmentor

    board = SemanticSegmentor.compare(
        _existing_input(args.train, "--train"),
        _existing_input(args.test, "--test"),
        methods=args.methods,
        seeds=args.seeds,
        budget=args.budget,
        time_limit=args.time_limit,
        out=args.out,
        presets=args.presets,
        hyperparameters=_parse_sets(args.set),
        verbosity=args.verbosity,
    )
    print(board.to_string(index=False))
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from autoseg.arguments import check_time_limit
    from autoseg.demo import run_demo

    check_time_limit(args.time_limit)  # before the demo writes its data
    run_demo(args.out, time_limit=args.time_limit, verbosity=args.verbosity)
    return EXIT_OK


def _add_fit_parser(sub: Any, debug: argparse.ArgumentParser) -> None:
    """``autoseg fit``: its options mirror ``SemanticSegmentor(...).fit(...)``."""
    fit = sub.add_parser("fit", parents=[debug], help="fine-tune on a CSV of image,label paths")
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


def _add_tile_options(command: argparse.ArgumentParser) -> None:
    """``--tile``, ``--tile-size``, ``--overlap``: the API's tiling arguments."""
    command.add_argument(
        "--tile",
        choices=list(TILE_CHOICES),
        default="off",
        help="predict in overlapping windows at the model's scale: on, off (default), or auto "
        "(images whose longest side exceeds twice the window)",
    )
    command.add_argument("--tile-size", type=int, help="window side (default: model input)")
    command.add_argument("--overlap", type=float, default=0.25, help="window overlap fraction")


def _add_inference_parsers(sub: Any, debug: argparse.ArgumentParser) -> None:
    """``autoseg evaluate``, ``predict`` and ``export`` on a saved predictor folder."""
    evaluate = sub.add_parser(
        "evaluate", parents=[debug], help="score a saved predictor on a labelled CSV"
    )
    evaluate.add_argument("--model", required=True, help="predictor folder")
    evaluate.add_argument("--data", required=True, help="CSV with image and label columns")
    evaluate.add_argument("--metrics", nargs="*", help="subset of metrics")
    _add_tile_options(evaluate)
    evaluate.set_defaults(func=_cmd_evaluate)

    predict = sub.add_parser("predict", parents=[debug], help="write mask PNGs and overlays")
    predict.add_argument("--model", required=True, help="predictor folder")
    predict.add_argument("--input", required=True, help="CSV, folder of images, or one image")
    predict.add_argument("--out", required=True, help="output folder")
    predict.add_argument(
        "--overwrite",
        action="store_true",
        help="write into an --out folder that holds other files (inputs are never replaced)",
    )
    _add_tile_options(predict)
    predict.set_defaults(func=_cmd_predict)

    export = sub.add_parser("export", parents=[debug], help="write the model as ONNX")
    export.add_argument("--model", required=True, help="predictor folder")
    export.add_argument("--out", required=True, help="the .onnx file to write")
    export.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    export.set_defaults(func=_cmd_export)


def _add_compare_parser(sub: Any, debug: argparse.ArgumentParser) -> None:
    """``autoseg compare``: ``SemanticSegmentor.compare`` (paired seeds, one budget)."""
    compare = sub.add_parser(
        "compare", parents=[debug], help="rank PEFT methods on your data, paired over seeds"
    )
    compare.add_argument("--train", required=True, help="training CSV (image,label)")
    compare.add_argument("--test", required=True, help="test CSV (image,label)")
    compare.add_argument("--methods", nargs="+", default=["conv_lora", "lora", "decoder_only"])
    compare.add_argument("--seeds", type=int, default=3, help="number of paired seeds")
    compare.add_argument("--budget", type=int, help="optimiser steps per fit")
    compare.add_argument("--time-limit", type=float, help="seconds per fit")
    compare.add_argument("--out", default="autoseg_compare", help="new folder for the results")
    compare.add_argument("--presets", default="auto")
    compare.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    compare.set_defaults(func=_cmd_compare)


def build_parser() -> argparse.ArgumentParser:
    """The ``autoseg`` argument parser with its sub-commands."""
    parser = _Parser(
        prog="autoseg", description="Fine-tune SAM with Conv-LoRA for semantic segmentation."
    )
    parser.add_argument("-v", "--verbosity", type=int, default=2, help="0 silent .. 2 progress")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    debug = _Parser(add_help=False)  # --debug also after the command, as users type it
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)

    _add_fit_parser(sub, debug)
    _add_inference_parsers(sub, debug)
    add_info_parser(sub, debug)
    _add_compare_parser(sub, debug)
    demo = sub.add_parser("demo", parents=[debug], help="offline end-to-end demo on generated data")
    demo.add_argument("--out", default="autoseg_demo", help="new folder for everything")
    demo.add_argument(
        "--time-limit",
        type=float,
        default=900.0,
        help="cap on training seconds; the demo trains a fixed 30 steps and warns if the cap "
        "ends it sooner",
    )
    demo.set_defaults(func=_cmd_demo)
    return parser


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _user_message(error: AutosegError) -> str:
    """The error's message: one line, but a data report keeps one line per problem."""
    problems = getattr(error, "problems", None)
    if isinstance(problems, list) and len(problems) > 1:
        return str(error).strip() + _notes(error)
    return (_one_line(str(error)) or type(error).__name__) + _notes(error)


def _notes(error: BaseException) -> str:
    """What autoseg added on the way out (e.g. whether a failed fit can be resumed)."""
    notes = [_one_line(note) for note in getattr(error, "__notes__", ())]
    return "".join(f" ({note})" for note in notes if note)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (2 = a problem with your input).

    Example:
        >>> main(["info", "--backbone", "vit_tiny", "--method", "lora"])
        ... # doctest: +NORMALIZE_WHITESPACE
        backbone  method      lora   moe_conv   decoder   trainable   total   share
        -----------------------------------------------------------------------------------------------------
        vit_tiny  lora       1,536          0    31,536      33,072 195,699  16.90%
        0
        >>> main(["info", "--memory", "--backbone", "vit_tiny", "--image-size", "64",
        ...       "--batch-size", "1"])  # doctest: +NORMALIZE_WHITESPACE +ELLIPSIS
        conv_lora, 1 logit map(s), GPU; a card fits with >= 10% of it free
        ...
        vit_tiny 64 1 bf16-mixed yes 0.00 0.00 0.50 yes yes yes yes yes yes
        0

    """
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("AUTOSEG_DEBUG", "") not in {"", "0"}
    where = f"autoseg {args.command}"
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"\n{where}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except AutosegError as error:
        if debug:
            traceback.print_exc()
        print(f"{where}: error: {_user_message(error)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as error:
        if debug:
            traceback.print_exc()
            hint = "please report it"
        else:
            hint = "rerun with --debug for the traceback, and please report it"
        name = type(error).__name__
        message = _one_line(str(error)) + _notes(error)
        print(f"{where}: internal error: {name}: {message} ({hint})", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
