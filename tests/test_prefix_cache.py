"""The frozen-prefix cache: exact outputs and gradients, hits, cap, refusal, no state, fits."""

from __future__ import annotations

import copy
import pickle
import warnings

import pytest
import torch
from _tiny import TINY

from autoseg import SemanticSegmentor
from autoseg.data.synthetic import make_synthetic_binary
from autoseg.models.prefix_cache import (
    FrozenPrefixCache,
    PrefixCacheError,
    disable_prefix_cache,
    enable_prefix_cache,
    prefix_cache_of,
)
from autoseg.models.segmenter import build_segmenter
from autoseg.peft import apply_peft

SIZE = 64
BACKBONES = ("lite_tiny", "vit_tiny")


def _adapted(backbone: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = apply_peft(build_segmenter(backbone, image_size=SIZE)[0], "conv_lora")
    return model.train()


def _images(n: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (n, 3, SIZE, SIZE), generator=generator).float()


def _loss_and_grads(model: torch.nn.Module, images: torch.Tensor, seed: int) -> tuple:
    torch.manual_seed(seed)  # the Conv-LoRA gate's noise
    logits = model(images, torch.tensor([[SIZE, SIZE - 8]] * len(images)))
    logits.square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return logits.detach(), grads


@pytest.mark.parametrize("backbone", BACKBONES)
def test_outputs_and_gradients_are_bit_exact_with_hits_and_misses(backbone: str) -> None:
    reference, cached = _adapted(backbone), _adapted(backbone)
    cache = enable_prefix_cache(cached)
    images = _images(4)
    flipped = images.flip(-1)
    # batches mixing stored samples, new ones and flipped variants
    batches = [images[:2], images[1:3], torch.cat([images[:1], flipped[:1]]), images[[3, 0]]]
    for seed, batch in enumerate([*batches, *batches]):
        want_logits, want_grads = _loss_and_grads(reference, batch, seed)
        got_logits, got_grads = _loss_and_grads(cached, batch, seed)
        assert torch.equal(got_logits, want_logits)
        assert want_grads.keys() == got_grads.keys() and want_grads
        assert all(torch.equal(got_grads[n], want_grads[n]) for n in want_grads)
    assert len(cache) == 5  # four images and one flipped variant
    assert (cache.misses, cache.hits) == (5, 11)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_a_second_epoch_is_served_from_the_cache(backbone: str) -> None:
    model = _adapted(backbone)
    cache = enable_prefix_cache(model)
    images = _images(3)
    with torch.no_grad():
        first = [model(images[i : i + 1]) for i in range(3)]
        assert (cache.hits, cache.misses) == (0, 3)
        second = [model(images[i : i + 1]) for i in range(3)]
    assert (cache.hits, cache.misses) == (3, 3)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_the_cap_is_respected_and_stops_adding() -> None:
    model = _adapted("lite_tiny")
    per_image = 32 * (SIZE // 2) ** 2 * 4  # stage-0 output: 32 channels at half resolution
    cache = enable_prefix_cache(model, max_bytes=2 * per_image + 1)
    images = _images(4)
    with torch.no_grad():
        model(images)
        model(images)
    assert len(cache) == 2 and cache.stored_bytes == 2 * per_image <= cache.max_bytes
    assert (cache.hits, cache.misses) == (2, 6)


def test_refuses_a_trainable_prefix_and_bypasses_one_unfrozen_later() -> None:
    model = _adapted("lite_tiny")
    model.image_encoder.patch_embed.requires_grad_(True)
    with pytest.raises(PrefixCacheError, match="trainable"):
        enable_prefix_cache(model)
    model.image_encoder.patch_embed.requires_grad_(False)
    cache = enable_prefix_cache(model)
    model.image_encoder.layers[0].requires_grad_(True)
    model(_images(1))
    assert cache.bypassed == 1 and len(cache) == 0


def test_train_mode_batch_norm_and_new_weights_are_never_served_stale() -> None:
    model = _adapted("lite_tiny")
    cache = enable_prefix_cache(model)
    images = _images(1)
    with torch.no_grad():
        model(images)
        model.image_encoder.patch_embed.train()  # batch norm in train mode: not cacheable
        model(images)
        assert cache.bypassed == 1
        model.train()  # SamSegmenter puts batch norm back in eval mode
        model.image_encoder.patch_embed.seq[0].c.weight.mul_(2.0)
        before = model(images)
    assert cache.hits == 0 and cache.misses == 2  # new weights emptied the store
    disable_prefix_cache(model)
    with torch.no_grad():
        assert torch.equal(model(images), before)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_the_cache_is_not_state(backbone: str) -> None:
    model = _adapted(backbone)
    keys = list(model.state_dict())
    cache = enable_prefix_cache(model)
    with torch.no_grad():
        model(_images(2))
    assert list(model.state_dict()) == keys and len(cache) == 2
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        copied = prefix_cache_of(clone)
        assert copied is not None and copied is not cache and len(copied) == 0
        assert copied.modules[0] is clone.image_encoder.patch_embed
    disable_prefix_cache(model)
    assert prefix_cache_of(model) is None and len(cache) == 0
    assert "forward" not in model.image_encoder.patch_embed.__dict__


def test_bf16_autocast_is_part_of_the_key() -> None:
    model = _adapted("lite_tiny").eval()
    reference = copy.deepcopy(model)
    cache = enable_prefix_cache(model)
    images = _images(1)
    with torch.no_grad():
        plain = model(images)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(images)
            assert torch.equal(mixed, reference(images))
        assert cache.misses == 2 and torch.equal(plain, reference(images))


def test_a_plain_cache_serves_a_conv() -> None:
    conv = torch.nn.Conv2d(3, 2, 3).requires_grad_(False)
    cache = FrozenPrefixCache([conv], max_bytes=0)
    x = torch.rand(2, 3, 5, 5)
    assert torch.equal(cache(conv, x), conv(x)) and len(cache) == 0


def _fit(csv, tmp_path, name: str, **overrides: object) -> SemanticSegmentor:
    hyperparameters = {
        **TINY,
        "model.backbone": "lite_tiny",
        "optim.max_epochs": 2,
        "env.num_threads": 1,
        **overrides,
    }
    seg = SemanticSegmentor(hyperparameters=hyperparameters, path=tmp_path / name, verbosity=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return seg.fit(csv)


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory):
    root = tmp_path_factory.mktemp("prefix_fit")
    return make_synthetic_binary(root, n_images=10, size=(48, 64), split_test=2, seed=5)[0]


def test_a_cpu_fit_serves_its_second_epoch_from_the_cache_and_removes_it(small_csv, tmp_path):
    seg = _fit(small_csv, tmp_path, "auto")
    summary = seg.summary()
    # Epoch 2 sees the same (image, flip) variants as epoch 1, validation the same images.
    assert summary["prefix_cache_hits"] > 0 and summary["prefix_cache_misses"] > 0
    assert prefix_cache_of(seg.model_) is None  # prediction never fills a cache


def test_the_cache_changes_no_trained_weight(small_csv, tmp_path):
    cached = _fit(small_csv, tmp_path, "on", **{"env.prefix_cache": True})
    plain = _fit(small_csv, tmp_path, "off", **{"env.prefix_cache": False})
    assert cached.summary()["prefix_cache_hits"] > 0
    assert "prefix_cache_hits" not in plain.summary()
    cached_state, plain_state = cached.model_.state_dict(), plain.model_.state_dict()
    assert cached_state.keys() == plain_state.keys()
    changed = [k for k in cached_state if not torch.equal(cached_state[k], plain_state[k])]
    assert not changed, changed[:3]


def test_a_method_that_trains_the_prefix_fits_without_the_cache(small_csv, tmp_path):
    seg = _fit(small_csv, tmp_path, "bitfit", **{"peft.method": "bitfit"})
    assert "prefix_cache_hits" not in seg.summary()
