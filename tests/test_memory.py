"""The GPU memory model: every GPU preset fits its smallest card, and the estimator's counts."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
from torch.multiprocessing.reductions import StorageWeakRef

from autoseg.builder import build_model
from autoseg.config import Config
from autoseg.info import (
    HEADROOM,
    TRAINING_LOSS,
    derived_preset_settings,
    preset_memory,
    smallest_card_gib,
    training_memory,
)
from autoseg.models.memory import (
    PRECISIONS,
    _saved_tensors,
    estimate_training_memory,
    fits_card,
)
from autoseg.models.saved_tensors import _FusedAttentionRoute, fake_segmenter, trace_saved_tensors
from autoseg.preset_choice import GPU_PRESETS, load_preset
from autoseg.training.step import training_loss

# ViT-H's two traces take about 10 s on this 2-core machine.
GPU_PRESET_NAMES = [
    pytest.param(name, marks=pytest.mark.slow) if name == "gpu_vit_h" else name
    for _, name in GPU_PRESETS
]


@pytest.mark.parametrize("preset", GPU_PRESET_NAMES)
def test_every_gpu_preset_fits_its_smallest_card_with_headroom(preset):
    estimate = preset_memory(preset)
    card = smallest_card_gib(preset)
    assert fits_card(estimate, card, HEADROOM), (
        f"{preset}: estimated {estimate.total_gib:.2f} GiB leaves less than {HEADROOM:.0%} of "
        f"a {card:g} GiB card free; rederive env.batch_size / env.activation_checkpointing "
        "with `autoseg info --memory --presets`"
    )


@pytest.mark.parametrize("preset", GPU_PRESET_NAMES)
def test_gpu_preset_settings_are_the_ones_the_model_derives(preset):
    env = load_preset(preset).env
    assert derived_preset_settings(preset) == (env.batch_size, env.activation_checkpointing)


def _cpu(backbone, batch=2, checkpointing=False, method="conv_lora", precision="32-true"):
    return estimate_training_memory(
        backbone, 64, batch, precision, checkpointing, method, device="cpu", loss=TRAINING_LOSS
    )


@pytest.mark.parametrize("backbone", ["vit_tiny", "lite_tiny"])
def test_estimate_grows_with_the_batch(backbone):
    # bf16 on CUDA, the traces test_batch_extrapolation_equals_a_trace uses too
    totals = [training_memory(backbone, 64, batch).total_bytes for batch in (1, 2, 4, 8)]
    assert totals == sorted(totals) and len(set(totals)) == 4


def test_checkpointing_reduces_activations_only():
    plain = estimate_training_memory("vit_b", 256, 2, "bf16-mixed", False)
    checkpointed = estimate_training_memory("vit_b", 256, 2, "bf16-mixed", True)
    assert checkpointed.activations_bytes < 0.5 * plain.activations_bytes
    assert checkpointed.parameters_bytes == plain.parameters_bytes
    assert checkpointed.optimizer_state_bytes == plain.optimizer_state_bytes


def test_bf16_autocast_saves_less_than_fp32_at_full_size_on_cuda():
    # At 256 px the bf16 copies of the frozen weights, which autocast saves for backward,
    # outweigh the halved activations; at 1024 px the activations dominate.
    bf16 = estimate_training_memory("vit_b", 1024, 1, "bf16-mixed")
    fp32 = estimate_training_memory("vit_b", 1024, 1, "32-true")
    assert bf16.activations_bytes < 0.8 * fp32.activations_bytes
    assert estimate_training_memory("vit_b", 1024, 1, "auto").precision == "bf16-mixed"


@pytest.mark.parametrize("backbone", ["vit_tiny", "lite_tiny"])
@pytest.mark.parametrize("method", ["conv_lora", "lora", "decoder_only"])
def test_parameter_terms_equal_the_real_model(backbone, method):
    config = Config().with_overrides(
        {"model.backbone": backbone, "peft.method": method, "data.image_size": 64}
    )
    model, _ = build_model(config, 1, pretrained=False)
    weights = [*model.parameters(), *model.buffers()]
    trainable = [p for p in model.parameters() if p.requires_grad]
    fake = fake_segmenter(backbone, 64, method, 1, "cpu")
    assert fake.parameter_count == sum(p.numel() for p in model.parameters())
    assert fake.trainable_count == sum(p.numel() for p in trainable)
    assert fake.parameter_bytes == sum(t.numel() * t.element_size() for t in weights)
    assert fake.trainable_bytes == sum(p.numel() * p.element_size() for p in trainable)


def test_estimate_terms_come_from_the_model():
    fake = fake_segmenter("vit_tiny", 64, "conv_lora", 1, "cpu")
    est = _cpu("vit_tiny")
    assert est.parameters_bytes == fake.parameter_bytes
    assert est.gradients_bytes == fake.trainable_bytes
    assert est.optimizer_state_bytes == 2 * 4 * fake.trainable_count
    assert est.context_bytes == 0 and est.total_bytes == sum(est.breakdown().values())


@pytest.mark.parametrize("backbone", ["vit_tiny", "lite_tiny"])
def test_fake_count_equals_what_a_real_cpu_forward_saves(backbone):
    """LoRA (no data-dependent routing): a real CPU forward saves what the trace counts.

    Not to the byte: the trace counts the GPU's memory-efficient attention, which pads its
    log-sum-exp to 32 queries and saves two 8-byte RNG scalars, where the CPU kernel does not.
    """
    config = Config().with_overrides(
        {"model.backbone": backbone, "peft.method": "lora", "data.image_size": 64}
    )
    model, _ = build_model(config, 1, pretrained=False)
    model.train()
    weights = {StorageWeakRef(t.untyped_storage()) for t in [*model.parameters(), *model.buffers()]}
    saved = {}

    def pack(tensor):
        key = StorageWeakRef(tensor.untyped_storage())
        if key not in weights:
            saved[key] = tensor.untyped_storage().nbytes()
        return tensor

    images = torch.rand(2, 3, 64, 64) * 255
    target = torch.zeros(2, 64, 64, dtype=torch.long)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        training_loss(model, images, target, config.loss, 0.0)
    counted, real = _cpu(backbone, method="lora").activations_bytes, sum(saved.values())
    assert real <= counted <= 1.01 * real


@pytest.mark.parametrize("backbone", ["vit_tiny", "lite_tiny"])
def test_batch_extrapolation_equals_a_trace(backbone):
    key, precision = (backbone, 64, "conv_lora", 1, "cuda"), "bf16-mixed"
    extrapolated = _saved_tensors(*key, 4, precision, TRAINING_LOSS)
    traced = trace_saved_tensors(fake_segmenter(*key), 4, PRECISIONS[precision], TRAINING_LOSS)
    assert extrapolated == traced


def _saved_sizes_of_attention(route: bool) -> tuple[torch.Size, list[int]]:
    tokens = 256
    with torch.device("meta"):
        q = torch.empty(1, 2, tokens, 8, requires_grad=True)
        k, v = torch.empty(1, 2, tokens, 8), torch.empty(1, 2, tokens, 8)
    sizes = []

    def pack(tensor):
        sizes.append(tensor.numel())
        return tensor

    with (
        _FusedAttentionRoute() if route else contextlib.nullcontext(),
        torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor),
    ):
        out = F.scaled_dot_product_attention(q, k, v)
    return out.shape, sizes


def test_attention_route_saves_no_token_by_token_map():
    shape, sizes = _saved_sizes_of_attention(route=True)
    assert shape == (1, 2, 256, 8) and sizes and max(sizes) < 256 * 256
    _, math_route = _saved_sizes_of_attention(route=False)  # what the meta device would do
    assert max(math_route) >= 2 * 256 * 256


def test_checkpointing_keeps_block_inputs_and_one_recompute():
    from autoseg.models.saved_tensors import SavedTensors

    rows = (
        (10, -1, True, False),  # patch embedding, saved outside
        (4, 0, True, True),  # block 0's input
        (30, 0, True, False),
        (4, 1, True, True),
        (20, 1, True, False),
        (50, -1, True, False),  # the head, freed before the blocks' backward
    )
    saved = SavedTensors(rows)
    assert saved.saved_bytes() == 118
    assert saved.checkpointed_bytes() == max(10 + 4 + 4 + 50, 10 + 4 + 30, 10 + 8 + 20)


@pytest.mark.parametrize(
    ("change", "message"),
    [({"batch_size": 0}, "batch_size"), ({"precision": "fp8"}, "precision"),
     ({"device": "tpu"}, "device")],
)  # fmt: skip
def test_bad_arguments_are_refused(change, message):
    arguments = {"backbone": "vit_tiny", "image_size": 64, **change}
    with pytest.raises(ValueError, match=message):
        estimate_training_memory(**arguments)


@pytest.mark.parametrize("method", ["decoder_only", "lst"])
def test_checkpointing_estimate_works_when_no_block_saves_tensors(method):
    # decoder_only and LST build no graph through the encoder blocks.
    plain = estimate_training_memory("vit_tiny", 64, method=method, device="cpu")
    checkpointed = estimate_training_memory(
        "vit_tiny", 64, method=method, device="cpu", activation_checkpointing=True
    )
    assert 0 < checkpointed.activations_bytes <= plain.activations_bytes
