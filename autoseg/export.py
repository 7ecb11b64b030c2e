"""ONNX export of a fine-tuned, prompt-free segmenter, with its input/output contract.

The graph takes what :class:`~autoseg.models.segmenter.SamSegmenter` takes, ``images``
``(B, 3, S, S)`` float pixel values 0..255 zero-padded at the bottom/right and ``valid_hw``
``(B, 2)`` int64, and normalises inside. It returns ``probabilities`` ``(B, K, S, S)``
(sigmoid for binary, K = 1; softmax over K classes otherwise) and the ``logits`` they come
from, at model resolution. The batch is dynamic; ``S`` is fixed (``image_size``). Plain LoRA
adapters are merged into ``qkv`` first (:func:`~autoseg.peft.merge.merge_lora`); Conv-LoRA
keeps its branch, all experts in the graph and the per-sample routing computed inside it.

The pre- and post-processing a caller must do is written into the model's
``metadata_props`` (:func:`read_metadata` reads it back; :data:`CONTRACT` says it in words).

We use the TorchScript exporter (``dynamo=False``): on torch 2.14 it exports the tiny
Conv-LoRA model in 4 s against 38 s for the ``torch.export`` one, with the same
onnxruntime parity, and needs no ``onnxscript``. ``dynamo=True`` is kept as an option for
when the TorchScript exporter is removed.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoseg import __version__
from autoseg.atomic import atomic_write
from autoseg.data.transforms import to_probabilities
from autoseg.errors import AutosegError, OutputExistsError
from autoseg.labels.problem import Problem
from autoseg.models.normalization import MeanStdNormalization, MinMaxNormalization
from autoseg.models.segmenter import SamSegmenter
from autoseg.peft.conv_lora import ConvLoRALinear
from autoseg.peft.lora import LoRALinear
from autoseg.peft.merge import merge_lora

__all__ = [
    "CONTRACT",
    "INSTALL_HINT",
    "ExportDependencyError",
    "ProbabilityModel",
    "export_onnx",
    "read_metadata",
]

INSTALL_HINT = 'pip install "autoseg[export]"  (or: pip install onnx onnxruntime)'
OPSET = 18
INPUT_NAMES = ("images", "valid_hw")
OUTPUT_NAMES = ("probabilities", "logits")

CONTRACT = (
    "Input: resize each RGB image so its longest side is image_size (bilinear, aspect kept; "
    "h = round(H * image_size / max(H, W)), likewise w), keep pixel values 0..255 as float32, "
    "zero-pad at the bottom and right to image_size x image_size, stack to images "
    "(B, C, S, S) (C = in_channels, 3 for RGB), and pass valid_hw (B, 2) int64 = the "
    "resized (h, w). The model normalises "
    "the valid region itself (see 'normalization'). Output: probabilities (B, K, S, S); "
    "crop [:h, :w], resize bilinearly to (H, W). Binary (K = 1): foreground = "
    "probability >= 0.5. Multi-class: class id = argmax over K, mask value = classes[id]. "
    "autoseg itself resizes the logits output before the sigmoid/softmax (smoother borders)."
)


class ExportDependencyError(AutosegError, ImportError):
    """ONNX export needs the optional ``onnx`` (and, to check it, ``onnxruntime``) packages."""


class ProbabilityModel(nn.Module):
    """A segmenter that also returns its probabilities: sigmoid (one output) or softmax.

    Example:
        >>> from autoseg.models.segmenter import build_segmenter
        >>> wrapped = ProbabilityModel(build_segmenter("vit_tiny", num_classes=3)[0])
        >>> probs, logits = wrapped(torch.zeros(1, 3, 64, 64), torch.tensor([[64, 64]]))
        >>> probs.shape, round(probs.sum(dim=1).mean().item(), 4)
        (torch.Size([1, 3, 64, 64]), 1.0)

    """

    def __init__(self, model: SamSegmenter) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, images: torch.Tensor, valid_hw: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(probabilities, logits)``, both ``(B, K, S, S)`` float32."""
        logits = self.model(images, valid_hw).float()
        return to_probabilities(logits), logits


def _require_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ExportDependencyError(
            f"ONNX export needs the 'onnx' package, which is not installed. Run: {INSTALL_HINT}"
        ) from None
    return onnx


def peft_method_of(model: nn.Module) -> str:
    """The adapter family found in ``model``: ``conv_lora``, ``lora`` or ``none``."""
    kinds = {type(m) for m in model.modules()}
    if ConvLoRALinear in kinds:
        return "conv_lora"
    return "lora" if LoRALinear in kinds else "none"


def normalization_of(model: SamSegmenter) -> dict[str, Any]:
    """The normalisation the graph applies, as plain data for the metadata."""
    norm = model.normalize
    if isinstance(norm, MeanStdNormalization):
        return {
            "name": "sam",
            "formula": "(x - mean) / std per channel on the valid region; padding stays 0",
            "mean": [round(v, 4) for v in norm.pixel_mean.flatten().tolist()],
            "std": [round(v, 4) for v in norm.pixel_std.flatten().tolist()],
        }
    if isinstance(norm, MinMaxNormalization):
        return {
            "name": "minmax",
            "formula": "(x - min) / (max - min) per image over its valid region; padding 0",
        }
    return {"name": type(norm).__name__}


def contract_metadata(
    model: SamSegmenter, problem: Problem, backbone: str | None, peft_method: str
) -> dict[str, str]:
    """The ``metadata_props`` written into the graph (values are text; lists as JSON)."""
    names = problem.class_names or tuple(str(c) for c in problem.classes)
    return {
        "autoseg_version": __version__,
        "backbone": backbone or "unknown",
        "peft_method": peft_method,
        "lora_merged": json.dumps(peft_method == "lora"),
        "image_size": str(model.image_size),
        "normalization": json.dumps(normalization_of(model)),
        "normalized_inside_graph": "true",
        "problem_type": problem.problem_type,
        "num_outputs": str(problem.num_outputs),
        "classes": json.dumps([int(c) for c in problem.classes]),
        "class_names": json.dumps(list(names)),
        "in_channels": str(getattr(model, "in_channels", 3)),
        "bands": json.dumps(getattr(model, "bands", None)),
        "inputs": json.dumps(
            {
                "images": f"(B, {getattr(model, 'in_channels', 3)}, S, S) float32 0..255",
                "valid_hw": "(B, 2) int64 (h, w)",
            }
        ),
        "outputs": json.dumps(
            {"probabilities": "(B, K, S, S) float32", "logits": "(B, K, S, S) float32"}
        ),
        "activation": "sigmoid" if problem.is_binary else "softmax",
        "padding": "zeros at the bottom and right, after resizing the longest side",
        "resize_back": "crop [:h, :w], then bilinear (align_corners=False) to the original",
        "contract": CONTRACT,
    }


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The export's ``metadata_props`` as a dict, JSON values decoded.

    Raises:
        ExportDependencyError: ``onnx`` is not installed.

    """
    onnx = _require_onnx()
    graph = onnx.load(str(path), load_external_data=False)
    values: dict[str, Any] = {}
    for prop in graph.metadata_props:
        try:
            values[prop.key] = json.loads(prop.value)
        except json.JSONDecodeError:
            values[prop.key] = prop.value
    return values


def example_inputs(
    image_size: int, batch: int = 2, channels: int = 3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic padded pixel images and their valid sizes, for tracing and parity."""
    generator = torch.Generator().manual_seed(0)
    shape = (batch, channels, image_size, image_size)
    images = torch.rand(shape, generator=generator) * 255
    valid = [[image_size, image_size]] + [[image_size, image_size * 3 // 4]] * (batch - 1)
    valid_hw = torch.tensor(valid, dtype=torch.int64)
    for b, (h, w) in enumerate(valid):
        images[b, :, h:, :] = 0
        images[b, :, :, w:] = 0
    return images, valid_hw


def _check_target(path: Path, overwrite: bool) -> None:
    if path.is_dir():
        raise OutputExistsError(f"{path} is a folder; give a file path such as model.onnx")
    if path.exists() and not overwrite:
        raise OutputExistsError(
            f"{path} already exists; choose another path, or pass overwrite=True to replace it"
        )


def _trace(wrapped: ProbabilityModel, target: Path, image_size: int, dynamo: bool) -> None:
    """``torch.onnx.export`` to ``target`` with a dynamic batch axis."""
    options: dict[str, Any] = {
        "input_names": list(INPUT_NAMES),
        "output_names": list(OUTPUT_NAMES),
        "opset_version": OPSET,
        "dynamo": dynamo,
    }
    if dynamo:
        batch = torch.export.Dim("batch", min=1, max=4096)
        options["dynamic_shapes"] = {"images": {0: batch}, "valid_hw": {0: batch}}
    else:
        options["dynamic_axes"] = {name: {0: "batch"} for name in INPUT_NAMES + OUTPUT_NAMES}
    with warnings.catch_warnings(), torch.no_grad():
        # The tracer warns about Python bools from shapes; only the batch is dynamic and
        # those come from the fixed image size (the parity tests run several batch sizes).
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*will be removed.*")
        channels = getattr(wrapped.model, "in_channels", 3)
        inputs = example_inputs(image_size, channels=channels)
        torch.onnx.export(wrapped, inputs, str(target), **options)


def export_onnx(
    model: SamSegmenter,
    problem: Problem,
    path: str | Path,
    *,
    backbone: str | None = None,
    peft_method: str | None = None,
    overwrite: bool = False,
    dynamo: bool = False,
) -> Path:
    """Write ``model`` as an ONNX graph with its pre/post-processing contract in metadata.

    Args:
        model: the fitted segmenter (not modified: LoRA is merged into a copy).
        problem: its label space (problem type, classes, class names).
        path: the ``.onnx`` file to write, atomically (a hidden file renamed into place).
        backbone: the backbone name recorded in the metadata.
        peft_method: the PEFT method recorded; by default read off the model's adapters.
        overwrite: replace an existing file.
        dynamo: use the ``torch.export`` exporter (needs ``onnxscript``) instead of the
            TorchScript one.

    Returns:
        ``path``.

    Raises:
        OutputExistsError: ``path`` exists (and ``overwrite`` is False) or is a folder.
        ExportDependencyError: ``onnx`` is not installed; the message gives the pip command.

    """
    onnx = _require_onnx()
    target = Path(path)
    _check_target(target, overwrite)
    if problem.num_outputs != model.num_classes:
        raise AutosegError(
            f"the problem has {problem.num_outputs} outputs but the model {model.num_classes}; "
            "export the problem the model was fitted on"
        )
    method = peft_method or peft_method_of(model)
    wrapped = ProbabilityModel(merge_lora(model).eval().cpu().float())
    metadata = contract_metadata(model, problem, backbone, method)
    target.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        _trace(wrapped, tmp, model.image_size, dynamo)
        graph = onnx.load(str(tmp))
        onnx.helper.set_model_props(graph, metadata)
        onnx.checker.check_model(graph)
        onnx.save(graph, str(tmp))

    atomic_write(target, write)
    return target
