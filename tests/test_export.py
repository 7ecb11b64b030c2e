"""ONNX export: onnxruntime parity with torch, metadata contract, refusal to overwrite."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from autoseg.errors import OutputExistsError
from autoseg.export import (
    ExportDependencyError,
    ProbabilityModel,
    example_inputs,
    export_onnx,
    read_metadata,
)
from autoseg.labels.problem import Problem
from autoseg.models.segmenter import SamSegmenter, build_segmenter
from autoseg.peft.conv_lora import ConvLoRAConfig, ConvLoRALinear, apply_conv_lora
from autoseg.peft.lora import LoRAConfig, LoRALinear, apply_lora

ort = pytest.importorskip("onnxruntime")

BINARY = Problem("binary", classes=(0, 1))
MULTICLASS = Problem("multiclass", classes=(0, 3, 7), class_names=("bg", "road", "roof"))
PARITY = 1e-4


def trained_model(backbone: str, method: str, problem: Problem) -> SamSegmenter:
    """A tiny model whose adapters look trained: B non-zero, gates that route apart."""
    torch.manual_seed(0)
    model, _ = build_segmenter(backbone, num_classes=problem.num_outputs)
    if method == "lora":
        apply_lora(model, LoRAConfig())
    else:
        apply_conv_lora(model, ConvLoRAConfig(num_experts=4))
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, LoRALinear):
            shape = module.lora_B.weight.shape
            module.lora_B.weight.data = torch.randn(shape, generator=generator) * 0.05
        if isinstance(module, ConvLoRALinear):
            shape = module.gate.w_gate.shape
            module.gate.w_gate.data = torch.randn(shape, generator=generator) * 5.0
    return model.eval()


def routed_apart(model: SamSegmenter, images: torch.Tensor, valid_hw: torch.Tensor) -> bool:
    """Whether some Conv-LoRA layer sends the two samples (or their windows) to other experts."""
    chosen: list[torch.Tensor] = []
    hooks = [
        m.gate.register_forward_hook(lambda _m, _i, out: chosen.append(out.expert_index))
        for m in model.modules()
        if isinstance(m, ConvLoRALinear)
    ]
    with torch.no_grad():
        model(images, valid_hw)
    for hook in hooks:
        hook.remove()
    return any(bool((index.view(2, -1)[0] != index.view(2, -1)[1]).any()) for index in chosen)


def max_error(session: object, model: SamSegmenter, images, valid_hw) -> float:
    with torch.no_grad():
        expected, _ = ProbabilityModel(model)(images, valid_hw)
    got = session.run(["probabilities"], {"images": images.numpy(), "valid_hw": valid_hw.numpy()})
    assert got[0].shape == tuple(expected.shape)
    return float(np.abs(got[0] - expected.numpy()).max())


def check_parity(tmp_path: Path, backbone: str, method: str, problem: Problem) -> None:
    model = trained_model(backbone, method, problem)
    path = export_onnx(model, problem, tmp_path / "model.onnx", backbone=backbone)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images, valid_hw = example_inputs(64, batch=2)
    images = torch.cat([images[:1], 255 - images[:1]])  # unlike samples: unlike routing
    if method == "conv_lora":
        assert routed_apart(model, images, valid_hw)
    for batch in (1, 2):
        error = max_error(session, model, images[:batch], valid_hw[:batch])
        assert error <= PARITY, f"batch {batch}: max |onnx - torch| = {error:.2e}"


@pytest.mark.parametrize(
    ("backbone", "method", "problem"),
    [("vit_tiny", "conv_lora", MULTICLASS), ("lite_tiny", "lora", BINARY)],
)
def test_onnxruntime_matches_torch(tmp_path: Path, backbone: str, method: str, problem) -> None:
    check_parity(tmp_path, backbone, method, problem)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("backbone", "method", "problem"),
    [
        ("vit_tiny", "conv_lora", BINARY),
        ("vit_tiny", "lora", BINARY),
        ("vit_tiny", "lora", MULTICLASS),
        ("lite_tiny", "conv_lora", BINARY),
        ("lite_tiny", "conv_lora", MULTICLASS),
        ("lite_tiny", "lora", MULTICLASS),
    ],
)
def test_onnxruntime_matches_torch_everywhere(tmp_path: Path, backbone, method, problem) -> None:
    check_parity(tmp_path, backbone, method, problem)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SamSegmenter]:
    model = trained_model("vit_tiny", "lora", MULTICLASS)
    path = tmp_path_factory.mktemp("export") / "seg.onnx"
    return export_onnx(model, MULTICLASS, path, backbone="vit_tiny"), model


def test_metadata_holds_the_contract(exported: tuple[Path, SamSegmenter]) -> None:
    metadata = read_metadata(exported[0])
    assert metadata["image_size"] == 64
    assert metadata["backbone"] == "vit_tiny"
    assert metadata["peft_method"] == "lora" and metadata["lora_merged"] is True
    assert metadata["problem_type"] == "multiclass" and metadata["activation"] == "softmax"
    assert metadata["classes"] == [0, 3, 7]
    assert metadata["class_names"] == ["bg", "road", "roof"]
    assert metadata["normalization"]["name"] == "sam"
    assert metadata["normalization"]["mean"] == [123.675, 116.28, 103.53]
    assert metadata["autoseg_version"]
    assert "bottom and right" in metadata["padding"] and "crop" in metadata["resize_back"]


def test_merged_graph_has_no_lora_branch(exported: tuple[Path, SamSegmenter]) -> None:
    onnx = pytest.importorskip("onnx")
    names = [init.name for init in onnx.load(str(exported[0])).graph.initializer]
    names += [node.name for node in onnx.load(str(exported[0])).graph.node]
    assert not any("lora_A" in name or "lora_B" in name for name in names)


def test_batch_is_dynamic(exported: tuple[Path, SamSegmenter]) -> None:
    path, model = exported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images, valid_hw = example_inputs(64, batch=3)
    assert max_error(session, model, images, valid_hw) <= PARITY
    probabilities = session.run(
        ["probabilities"], {"images": images[:1].numpy(), "valid_hw": valid_hw[:1].numpy()}
    )[0]
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    target.write_bytes(b"the user's file")
    model = trained_model("vit_tiny", "lora", BINARY)
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        export_onnx(model, BINARY, target)
    assert target.read_bytes() == b"the user's file"
    with pytest.raises(OutputExistsError, match="folder"):
        export_onnx(model, BINARY, tmp_path)
    export_onnx(model, BINARY, target, overwrite=True)
    assert read_metadata(target)["problem_type"] == "binary"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # no temporary left


def test_missing_onnx_names_the_pip_command(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    model = trained_model("vit_tiny", "lora", BINARY)
    with pytest.raises(ExportDependencyError, match=r"autoseg\[export\]"):
        export_onnx(model, BINARY, tmp_path / "model.onnx")
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_benchmark_writes_parity_and_throughput(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_onnx

    out = bench_onnx.main(
        ["--backbone", "lite_tiny", "--method", "conv_lora", "--batch-size", "2"]
        + ["--repeats", "2", "--threads", "1", "--out", str(tmp_path)]
    )
    result = json.loads(out.read_text())["results"]["conv_lora"]
    assert result["max_abs_probability_error"] <= PARITY
    assert result["torch"]["images_per_s"] > 0 and result["onnxruntime"]["images_per_s"] > 0


def test_a_four_band_model_exports_its_band_projection(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, _ = build_segmenter("lite_tiny", num_classes=1, in_channels=4, bands=(4, 3, 2, 1))
    apply_lora(model, LoRAConfig())
    with torch.no_grad():  # a trained projection mixes all four bands
        model.band_projection.conv.weight.add_(0.1)
    path = export_onnx(model, BINARY, tmp_path / "bands.onnx", backbone="lite_tiny")
    meta = read_metadata(path)
    assert meta["in_channels"] == 4 and meta["bands"] == [4, 3, 2, 1]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images, valid_hw = example_inputs(64, batch=2, channels=4)
    assert max_error(session, model, images, valid_hw) <= PARITY
