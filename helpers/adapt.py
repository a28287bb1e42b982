"""Generative adaptation (chapter 06): continue a language model's training on one speaker's words.

- :func:`speaker_text`: one speaker's speeches as training text (``NAME:\\nwords\\n\\n`` each),
  split by position into a pool to train on, validation and test (no speech in two parts);
- :func:`continue_training`: next-character training on random windows of that text (full or
  LoRA), the weights with the lowest validation loss kept: the same call trains the pretrained
  model and a random-weight model of its shape, so the two differ only in where they start;
- :func:`window_losses`: the loss of each test window, for standard errors and paired gaps.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from . import optim
from .classify import LORA_TARGETS
from .gpt import GPT
from .loader import TensorLoader, random_windows, split_windows
from .lora import apply_lora
from .train import fit


def speaker_text(text: str, speaker: str, fractions=(0.7, 0.15)) -> dict[str, str]:
    """``{"pool", "val", "test"}``: the speeches of ``speaker`` in text order, the first
    ``fractions[0]`` to train on, the next ``fractions[1]`` to validate, the rest to test."""
    from .shakespeare import speeches

    own = [s for s in speeches(text) if s.speaker == speaker]
    if len(own) < 10:
        raise ValueError(f"{speaker!r} has {len(own)} speeches here; choose one with 10 or more.")
    a = int(fractions[0] * len(own))
    b = a + int(fractions[1] * len(own))

    def join(part):
        return "".join(f"{s.speaker}:\n{s.body}\n\n" for s in part)

    return {"pool": join(own[:a]), "val": join(own[a:b]), "test": join(own[b:])}


def window_loader(data: torch.Tensor, block_size: int, batch_size: int = 256) -> TensorLoader:
    """Every non-overlapping window of ``data`` once: a loss over the whole text."""
    return TensorLoader(*split_windows(data, block_size), batch_size=batch_size)


@torch.inference_mode()
def window_losses(model, loader) -> torch.Tensor:
    """(N,) the mean loss of each window of ``loader``: their mean is
    :func:`helpers.train.evaluate`'s loss, their spread gives its standard error, and two models
    scored on the same windows give a paired difference."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for x, y in loader:
        logits = model(x.to(device)).float()
        loss = F.cross_entropy(logits.transpose(1, 2), y.to(device), reduction="none")
        out.append(loss.mean(1).cpu())
    model.train(was_training)
    return torch.cat(out)


def continue_training(
    base: GPT,
    data: torch.Tensor,
    val_loader,
    *,
    lr: float,
    steps: int,
    scratch: bool = False,
    lora: dict | None = None,
    seed: int = 0,
    batch_size: int = 32,
    weight_decay: float = 0.1,
    evaluations: int = 10,
) -> tuple[GPT, dict]:
    """Train a copy of ``base`` (``scratch=True``: a new GPT of its shape) on windows of ``data``.

    AdamW, 5% warmup and cosine decay to a tenth, clipping at 1; ``lora`` (``dict(r=, alpha=)``)
    trains only LoRA adapters on the blocks' linear layers. The validation loss is measured
    ``evaluations`` times and the best weights are kept (early stopping by checkpoint selection).
    Returns the model and :func:`helpers.train.fit`'s history.
    """
    if steps < evaluations:
        raise ValueError(f"steps ({steps}) must be at least evaluations ({evaluations}).")
    if scratch and lora:
        raise ValueError("LoRA adapts pretrained weights: use it without scratch=True.")
    torch.manual_seed(seed)
    device = next(base.parameters()).device
    model = GPT(base.config).to(device) if scratch else copy.deepcopy(base)
    if lora:
        apply_lora(model, LORA_TARGETS, **lora)
    optimizer = optim.make_optimizer(model, "adamw", lr, weight_decay=weight_decay)
    schedule = optim.make_schedule(optimizer, "cosine", steps, warmup=0.05, min_lr_ratio=0.1)
    stream = random_windows(
        data.to(device), base.config.block_size, batch_size, torch.Generator().manual_seed(seed)
    )
    history = fit(
        model,
        stream,
        optimizer,
        steps=steps,
        scheduler=schedule,
        grad_clip=1.0,
        val_loader=val_loader,
        eval_every=steps // evaluations,
        keep_best=True,
        progress=False,
    )
    return model.eval(), history
