"""Decoder warm start: train the mask decoder alone on cached image embeddings, then go on.

At initialisation every adapter leaves the encoder as it is (LoRA's ``B`` is zero, and so
is the Conv-LoRA expert branch behind it), so the encoder's output depends on the image
only. The first phase of a fit therefore embeds the training images once (each flip that
augmentation would make is another cached variant) and trains the mask decoder on those
embeddings: a decoder step costs milliseconds instead of the seconds of a full step. It is
the linear-probe-then-fine-tune recipe (LP-FT, Kumar et al., ICLR 2022). The second phase is
the usual end-to-end fit, starting from the warmed decoder.

The embeddings stay in memory under a cap (:data:`EMBEDDING_CAP_BYTES`) and are dropped
when the phase ends. With a time limit the phase gets ``optim.warm_start`` of it: at most
half of that share for embedding, the rest for decoder steps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from autoseg.config import Config
from autoseg.data.dataset import SegmentationDataset
from autoseg.labels.masks import IGNORE_INDEX
from autoseg.runtime import Runtime
from autoseg.training.losses import task_loss

EMBEDDING_CAP_BYTES = 1 << 30
"""1 GiB of embeddings: about 4,000 LiteMedSAM 256-px variants, or 256 ViT 1024-px ones."""


@dataclass(frozen=True)
class WarmStart:
    """What the warm-start phase did (saved in the fit summary)."""

    variants: int
    steps: int
    seconds: float
    first_loss: float | None
    last_loss: float | None


def _flipped(item: dict, dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """The item's image and mask with the valid region flipped, padding left where it was."""
    h, w = (int(v) for v in item["resized_hw"])
    image, mask = item["image"].clone(), item["mask"].clone()
    image[:, :h, :w] = item["image"][:, :h, :w].flip([d + 1 for d in dims])
    mask[:h, :w] = item["mask"][:h, :w].flip(list(dims))
    return image, mask


def _variants(item: dict, config: Config) -> list[tuple[torch.Tensor, torch.Tensor]]:
    flips: list[tuple[int, ...]] = [()]
    if config.data.hflip:
        flips.append((1,))
    if config.data.vflip:
        flips.append((0,))
    return [(item["image"], item["mask"]) if not d else _flipped(item, d) for d in flips]


def embed_training_set(
    model: nn.Module,
    dataset: SegmentationDataset,
    config: Config,
    runtime: Runtime,
    deadline: float | None,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings and targets of the training images (and their flips), in a seeded order.

    Stops early at ``deadline`` (``time.monotonic``) or at :data:`EMBEDDING_CAP_BYTES`.
    """
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    embeddings: list[torch.Tensor] = []
    targets: list[torch.Tensor] = []
    stored = 0
    dtype = runtime.autocast_dtype
    autocast = torch.autocast(runtime.device.type, dtype=dtype, enabled=dtype is not None)
    model.eval()
    with torch.inference_mode():
        for index in order.tolist():
            if deadline is not None and time.monotonic() >= deadline:
                break
            item = dataset[index]
            pairs = _variants(item, config)
            images = torch.stack([image for image, _ in pairs]).to(runtime.device)
            valid = item["resized_hw"].expand(len(pairs), 2).to(runtime.device)
            with autocast:
                embedded = model.embed(images, valid).float()
            embeddings.append(embedded)
            targets.append(torch.stack([mask for _, mask in pairs]))
            stored += embedded.numel() * embedded.element_size()
            if stored >= EMBEDDING_CAP_BYTES:
                break
    model.train()
    if not embeddings:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    return torch.cat(embeddings), torch.cat(targets).to(runtime.device)


def train_decoder(
    model: nn.Module,
    embeddings: torch.Tensor,
    targets: torch.Tensor,
    config: Config,
    deadline: float | None,
    seed: int,
) -> tuple[int, float | None, float | None]:
    """Train the mask head on cached embeddings; return (steps, first loss, last loss)."""
    params = [p for p in model.mask_head.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=config.optim.lr, weight_decay=config.optim.weight_decay
    )
    generator = torch.Generator().manual_seed(seed)
    batch = max(1, config.env.effective_batch_size)
    size = targets.shape[-1]
    steps, first, last = 0, None, None
    for _ in range(config.optim.warm_start_epochs):
        for chunk in torch.randperm(len(embeddings), generator=generator).split(batch):
            if deadline is not None and time.monotonic() >= deadline:
                return steps, first, last
            target = targets[chunk]
            if bool((target == IGNORE_INDEX).all()):
                continue
            logits = model.decode(embeddings[chunk], (size, size))
            loss = task_loss(logits.float(), target, config.loss.binary)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, config.optim.grad_clip)
            optimizer.step()
            steps += 1
            last = float(loss.detach())
            first = last if first is None else first
    return steps, first, last


def warm_start_decoder(
    model: nn.Module,
    dataset: SegmentationDataset,
    config: Config,
    runtime: Runtime,
    time_limit: float | None,
    seed: int = 0,
) -> WarmStart:
    """Run the warm-start phase on ``model`` in place (see the module docstring)."""
    start = time.monotonic()
    share = config.optim.warm_start * time_limit if time_limit else None
    embed_deadline = None if share is None else start + share / 2
    embeddings, targets = embed_training_set(model, dataset, config, runtime, embed_deadline, seed)
    steps, first, last = 0, None, None
    if len(embeddings):
        deadline = None if share is None else start + share
        steps, first, last = train_decoder(model, embeddings, targets, config, deadline, seed)
    return WarmStart(len(embeddings), steps, time.monotonic() - start, first, last)
