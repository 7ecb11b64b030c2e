"""Decoder warm start: exact cached embeddings; the decoder learns on them; nothing else moves."""

from __future__ import annotations

import warnings

import pytest
import torch
from _tiny import TINY

from autoseg import SemanticSegmentor
from autoseg.builder import build_model
from autoseg.data.dataset import SegmentationDataset
from autoseg.data.prepare import prepare_training_data
from autoseg.data.synthetic import make_synthetic_binary
from autoseg.preset_choice import load_preset
from autoseg.runtime import resolve_runtime
from autoseg.training.losses import task_loss
from autoseg.training.warm_start import _flipped, embed_training_set, warm_start_decoder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("warm")
    csv = make_synthetic_binary(root, n_images=12, size=(48, 64), split_test=2, seed=3)[0]
    config = load_preset("cpu_lite").with_overrides(
        {**TINY, "optim.warm_start": 0.5, "optim.warm_start_epochs": 40, "optim.lr": 3e-3}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train, _, problem = prepare_training_data(csv)
    dataset = SegmentationDataset(train, config.data.image_size, target_fn=problem.target)
    return config, dataset, problem, csv


def _model(config, problem):
    torch.manual_seed(0)
    return build_model(config, problem.num_outputs)[0]


def test_decoding_a_cached_embedding_is_the_forward_pass(setup):
    config, dataset, problem, _ = setup
    model = _model(config, problem).eval()
    item = dataset[0]
    images, valid = item["image"][None], item["resized_hw"][None]
    with torch.no_grad():
        embedding = model.embed(images, valid)
        assert torch.equal(model.decode(embedding, images.shape[-2:]), model(images, valid))


def test_flip_variants_keep_the_padding_at_the_bottom_right(setup):
    item = setup[1][0]
    h, w = item["resized_hw"].tolist()
    image, mask = _flipped(item, (1,))
    assert torch.equal(image[:, :h, :w], item["image"][:, :h, :w].flip(-1))
    assert torch.equal(image[:, h:], item["image"][:, h:]) and (mask[h:] == 255).all()
    assert torch.equal(mask[:h, :w], item["mask"][:h, :w].flip(-1))


def test_embeddings_cover_every_image_and_its_flip(setup):
    config, dataset, problem, _ = setup
    model = _model(config, problem)
    runtime = resolve_runtime(config.env)
    embeddings, targets = embed_training_set(model, dataset, config, runtime, None, seed=0)
    assert len(embeddings) == len(targets) == 2 * len(dataset)  # hflip is on by default
    assert model.training, "the model is back in training mode"


def _decoder_loss(model, embeddings, targets, config) -> float:
    with torch.no_grad():
        logits = model.decode(embeddings, targets.shape[-2:])
        return float(task_loss(logits.float(), targets, config.loss.binary))


def test_the_decoder_learns_and_nothing_else_changes(setup):
    config, dataset, problem, _ = setup
    model = _model(config, problem)
    runtime = resolve_runtime(config.env)
    embeddings, targets = embed_training_set(model, dataset, config, runtime, None, seed=0)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    loss_before = _decoder_loss(model, embeddings, targets, config)
    warm = warm_start_decoder(model, dataset, config, runtime, time_limit=None)
    assert warm.steps == 40 * -(-len(embeddings) // config.env.effective_batch_size)
    assert _decoder_loss(model, embeddings, targets, config) < 0.7 * loss_before
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(name.startswith("mask_head.") for name in changed)


def test_a_time_limit_bounds_the_phase(setup):
    config, dataset, problem, _ = setup
    config = config.with_overrides({"optim.warm_start_epochs": 100_000})
    model = _model(config, problem)
    warm = warm_start_decoder(model, dataset, config, resolve_runtime(config.env), 4.0)
    assert warm.steps > 0 and 1.5 <= warm.seconds <= 3.0  # half of the 4 s, plus one step


def test_fit_runs_the_phase_first_and_records_it(setup, tmp_path):
    csv = setup[3]
    hyperparameters = {**TINY, "optim.warm_start": 0.5, "optim.warm_start_epochs": 5}
    seg = SemanticSegmentor(hyperparameters=hyperparameters, path=tmp_path / "m", verbosity=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seg.fit(csv)
    summary = seg.summary()
    assert summary["warm_start_steps"] > 0 and summary["warm_start_variants"] > 0
    plain = SemanticSegmentor(hyperparameters=TINY, path=tmp_path / "p", verbosity=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain.fit(csv)
    assert "warm_start_steps" not in plain.summary()
