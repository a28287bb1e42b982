"""The optimizer and learning-rate schedule builder every training recipe uses.

One weight-decay rule (:func:`param_groups`): decay on weights with 2 or more dimensions
(convolution kernels, linear and embedding matrices), none on biases and normalisation gains,
which only shift or scale and gain nothing from being pulled towards zero.
:func:`make_optimizer` builds SGD with Nesterov momentum, AdamW or Adam on those groups (fused
kernels on CUDA); :func:`make_schedule` the per-step schedule: a linear one-cycle, a linear warmup
followed by a cosine, or a constant rate. The hand-written optimizers of chapter 01 live in
:mod:`helpers.hand_optim`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

OPTIMIZERS = ("sgd", "adamw", "adam")
SCHEDULES = ("onecycle", "cosine", "constant")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two optimizer groups of the trainable parameters: decay on 2-D and up, none on the rest."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (all have requires_grad=False).")
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def make_optimizer(
    params,
    name: str,
    lr: float,
    *,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.Optimizer:
    """An optimizer over a model (grouped by :func:`param_groups`) or over ready parameter groups.

    ``name``: ``"sgd"`` (Nesterov momentum), ``"adamw"`` (decoupled weight decay) or ``"adam"``
    (no weight decay at all: the plain tutorial baseline). Groups given as dicts keep their own
    settings (a per-group ``lr`` for discriminative fine-tuning, say).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer {name!r} is not one of {OPTIMIZERS}.")
    if isinstance(params, nn.Module):
        groups = param_groups(params, 0.0 if name == "adam" else weight_decay)
    else:
        groups = [{**g, "params": list(g["params"])} if isinstance(g, dict) else g for g in params]
    first = groups[0]["params"][0] if isinstance(groups[0], dict) else groups[0]
    fused = {"fused": True} if first.device.type == "cuda" and name != "sgd" else {}
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, **fused)
    return torch.optim.Adam(groups, lr=lr, betas=betas, **fused)


def make_schedule(
    optimizer: torch.optim.Optimizer,
    name: str,
    total_steps: int,
    *,
    warmup: float = 0.0,
    min_lr_ratio: float = 0.1,
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The per-step schedule (step it after every optimizer step), or ``None`` for ``"constant"``.

    ``warmup`` is the fraction of ``total_steps`` spent rising to the peak (each group's own
    learning rate); ``min_lr_ratio`` is the final learning rate as a fraction of the peak.

    - ``"onecycle"``: linear from a tenth of the peak up to the peak, then linearly down
      (``OneCycleLR`` with ``anneal_strategy="linear"``; momentum is not cycled);
    - ``"cosine"``: linear from zero up to the peak, then a half cosine down.
    """
    if name not in SCHEDULES:
        raise ValueError(f"schedule {name!r} is not one of {SCHEDULES}.")
    if not 0 <= warmup < 1 or not 0 < min_lr_ratio <= 1:
        raise ValueError(
            f"need 0 <= warmup < 1 and 0 < min_lr_ratio <= 1, got {warmup} and {min_lr_ratio}."
        )
    if name == "constant":
        return None
    if name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=[g["lr"] for g in optimizer.param_groups],
            total_steps=total_steps,
            pct_start=warmup,
            anneal_strategy="linear",
            cycle_momentum=False,
            div_factor=10,
            final_div_factor=1 / (10 * min_lr_ratio),
        )
    return warmup_cosine(optimizer, round(warmup * total_steps), total_steps, min_lr_ratio)


def warmup_cosine(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.1
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup from 0 to the base learning rate, then a cosine to ``min_lr_ratio`` of it."""
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(
            f"need 0 <= warmup_steps < total_steps, got {warmup_steps} and {total_steps}."
        )

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def lr_search(
    score, grid, *, key: str, maximize: bool = True, extend: int = 2, factor: float = 3.0
):
    """Score every learning rate of ``grid``; while the best sits at an edge, score the next rate
    beyond that edge (``factor`` times larger or smaller), at most ``extend`` times.

    ``score(lr)`` returns a dict with the number to compare under ``key`` (a validation metric:
    ``maximize`` for an accuracy, not for a loss). Returns ``(best_lr, {lr: result})`` over every
    rate tried; a best rate still at an edge after ``extend`` steps is reported by a warning
    printed once, so that a reader sees the search stopped early.
    """
    if len(grid) < 3:
        raise ValueError(f"a grid needs at least 3 rates to have an inside, got {list(grid)}.")
    sign = 1 if maximize else -1
    trials = {lr: score(lr) for lr in grid}

    def best():
        return max(trials, key=lambda lr: sign * trials[lr][key])

    for _ in range(extend):
        rates = sorted(trials)
        if best() not in (rates[0], rates[-1]):
            break
        new = best() / factor if best() == rates[0] else best() * factor
        trials[new] = score(new)
    rates = sorted(trials)
    if best() in (rates[0], rates[-1]):
        print(
            f"lr_search: the best rate {best():g} is still at the edge of {rates} "
            f"after {extend} extensions"
        )
    return best(), dict(sorted(trials.items()))
