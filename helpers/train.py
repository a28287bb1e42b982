"""Training and evaluation loops in plain PyTorch, shared by every training chapter.

``fit`` trains for a number of epochs or optimiser steps with an optional learning-rate
scheduler stepped after every batch, the course's precision policy (:mod:`helpers.precision`),
optional gradient clipping and a progress bar, and returns a history: one row per evaluation.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections import defaultdict
from itertools import islice

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .device import sync
from .precision import Precision, choose


def progress_bar(iterable=None, **kwargs):
    """A tqdm progress bar (a widget in Jupyter) that ``COURSE_PROGRESS=0`` switches off.

    Committed notebooks are executed with ``COURSE_PROGRESS=0`` so that their outputs hold no
    stale progress widgets.
    """
    kwargs.setdefault("leave", False)
    kwargs.setdefault("disable", os.environ.get("COURSE_PROGRESS", "1").strip() == "0")
    return tqdm(iterable, **kwargs)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, **kwargs) -> torch.Tensor:
    """``F.cross_entropy`` for class scores shaped (B, C) or sequences shaped (B, T, C)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), **kwargs)


def to_device(x, device):
    """A batch's inputs on ``device``: one tensor, or a tuple of tensors (a model with several)."""
    if isinstance(x, (tuple, list)):
        return tuple(t.to(device, non_blocking=True) for t in x)
    return x.to(device, non_blocking=True)


def forward(model, x):
    """``model(x)``, or ``model(*x)`` when the inputs are a tuple (source and target, ...)."""
    return model(*x) if isinstance(x, tuple) else model(x)


def _device_of(model: torch.nn.Module, device) -> torch.device:
    if device is not None:
        return torch.device(device)
    return next(model.parameters()).device


@torch.inference_mode()
def evaluate(
    model,
    loader,
    *,
    loss_fn=cross_entropy,
    device=None,
    precision: str | Precision | None = None,
    max_batches: int | None = None,
) -> dict:
    """Mean loss and accuracy (argmax of the last dimension) over a loader.

    Sums stay on the device in float32, one number per batch (no float64: Apple GPUs have none),
    and are added up in Python at the end, so nothing waits for the device inside the loop.
    """
    device = _device_of(model, device)
    policy = choose(device, precision)
    was_training = model.training
    model.eval()
    loss_sums, correct, count = [], [], 0
    for x, y in islice(loader, max_batches):
        x, y = to_device(x, device), y.to(device, non_blocking=True)
        with policy.autocast():
            out = forward(model, x)
        loss_sums.append(loss_fn(out.float(), y) * y.numel())
        correct.append((out.argmax(-1) == y).sum())
        count += y.numel()
    model.train(was_training)
    if count == 0:
        raise ValueError("evaluate() got an empty loader.")
    total_loss = math.fsum(torch.stack(loss_sums).tolist())
    return {"loss": total_loss / count, "accuracy": sum(torch.stack(correct).tolist()) / count}


@torch.inference_mode()
def predict(
    model, loader, *, device=None, precision: str | Precision | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Model outputs (float32) and targets for a whole loader, concatenated on the CPU."""
    device = _device_of(model, device)
    policy = choose(device, precision)
    was_training = model.training
    model.eval()
    outputs, targets = [], []
    for x, y in loader:
        with policy.autocast():
            out = forward(model, to_device(x, device))
        outputs.append(out.float().cpu())
        targets.append(y.cpu())
    model.train(was_training)
    if not outputs:
        raise ValueError("predict() got an empty loader.")
    return torch.cat(outputs), torch.cat(targets)


def batch_stream(loader, steps: int):
    """Exactly ``steps`` batches from ``loader``, starting it again as often as needed.

    A re-iterable loader (a DataLoader, a TensorLoader, a list) is restarted at its end; an
    iterator (a generator such as ``random_windows``) cannot be restarted, so it must last
    ``steps`` batches. The iterator is never closed here: an endless stream can feed several
    ``fit`` calls. An empty loader, or an iterator that is exhausted or closed, is an error.
    """
    served = 0
    while served < steps:
        batches = iter(loader)
        one_shot = batches is loader
        before = served
        for batch in batches:
            yield batch
            served += 1
            if served == steps:
                return
        if served == before:
            raise ValueError(
                "the training loader gave no batch: it is empty, or an iterator that is already "
                "exhausted or closed. Pass a re-iterable loader (DataLoader, TensorLoader) or a "
                "fresh iterator."
            )
        if one_shot:
            raise ValueError(
                f"the training iterator ended after {served} of {steps} batches, and an iterator "
                "cannot start again: ask for fewer steps, or pass a re-iterable loader or an "
                "endless stream."
            )


def train_step(
    model, x, y, *, loss_fn, optimizer, scaler, policy: Precision, grad_clip=None
) -> torch.Tensor:
    """One optimiser step on a batch; returns the (detached) loss. fp16 goes through the scaler."""
    with policy.autocast():
        loss = loss_fn(forward(model, x), y)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip is not None:
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)  # skipped when a scaled fp16 gradient overflowed to inf/nan
    scaler.update()
    return loss.detach()


def _record(
    history, step: int, epoch: float | None, losses: list, lr: float, seconds: float, metrics
):
    """Append one evaluation row to ``history``."""
    history["step"].append(step)
    if epoch is not None:
        history["epoch"].append(epoch)
    history["train_loss"].append(math.fsum(torch.stack(losses).float().tolist()) / len(losses))
    history["lr"].append(lr)
    history["seconds"].append(seconds)
    if metrics is not None:
        history["val_loss"].append(metrics["loss"])
        history["val_accuracy"].append(metrics["accuracy"])


class TensorBoardLog:
    """The rows of a ``fit`` history as TensorBoard scalars: loss/train, loss/validation, ..."""

    NAMES = {
        "train_loss": "loss/train",
        "val_loss": "loss/validation",
        "val_accuracy": "accuracy/validation",
        "lr": "learning_rate",
    }

    def __init__(self, log_dir):
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        self.writer = SummaryWriter(log_dir=str(log_dir))

    def write(self, history) -> None:
        """Log the last row of ``history`` at its step."""
        step = history["step"][-1]
        for key, tag in self.NAMES.items():
            if history.get(key):
                self.writer.add_scalar(tag, history[key][-1], step)

    def close(self) -> None:
        self.writer.close()


def _copy_state(model) -> dict:
    """A copy of the model's weights and buffers, on their device."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _plan(train_loader, epochs, steps, eval_every) -> tuple[int, int | None, int]:
    """(total steps, steps per epoch or None, evaluate every so many steps)."""
    if (epochs is None) == (steps is None):
        raise ValueError("fit() needs exactly one of epochs=... or steps=....")
    steps_per_epoch = len(train_loader) if hasattr(train_loader, "__len__") else None
    if steps is None:
        if steps_per_epoch is None:
            raise ValueError(
                "fit(epochs=...) needs a loader with a length; use steps=... for an endless one."
            )
        if steps_per_epoch == 0:
            raise ValueError(
                "the training loader is empty (length 0): check the dataset and batch size."
            )
        steps = epochs * steps_per_epoch
        eval_every = eval_every or steps_per_epoch
    if steps < 1:
        raise ValueError(f"fit() needs at least one step, got steps={steps}.")
    return steps, steps_per_epoch, eval_every or steps


def fit(
    model,
    train_loader,
    optimizer,
    *,
    epochs: int | None = None,
    steps: int | None = None,
    loss_fn=cross_entropy,
    val_loader=None,
    scheduler=None,
    device=None,
    precision: str | Precision | None = None,
    grad_clip: float | None = None,
    eval_every: int | None = None,
    eval_batches: int | None = None,
    keep_best: bool = False,
    progress: bool | None = None,
    log_dir=None,
) -> dict:
    """Train ``model`` and return its history.

    Give ``epochs`` or ``steps``, not both. ``epochs=E`` makes ``E × len(train_loader)``
    optimiser steps (the loader needs a length). ``steps=N`` makes exactly ``N`` optimiser steps:
    a re-iterable loader is restarted as often as needed; an iterator must yield ``N`` batches (an
    endless one such as ``random_windows`` is left open, ready for another call). ``scheduler`` is
    stepped after every optimiser step. Evaluation on ``val_loader`` (its first ``eval_batches``
    batches, or all) runs every ``eval_every`` steps (default: every epoch with ``epochs``, only at
    the end with ``steps``) and always after the last step. ``precision`` defaults to the policy
    of :func:`helpers.precision.choose` for the device.

    The history has one entry per evaluation: ``step``, ``epoch`` (fractional inside an epoch;
    loaders with a length only), ``train_loss`` (mean since the previous entry), ``val_loss``,
    ``val_accuracy``, ``lr`` and ``seconds`` (training time so far, evaluation excluded).
    ``keep_best=True`` (needs ``val_loader``) loads back, at the end, the weights of the evaluation
    with the lowest ``val_loss`` (its step is ``history["best_step"]``): best-checkpoint selection,
    so ``val_loader`` must not be the split the final result is reported on.

    A batch is ``(inputs, targets)``; ``inputs`` may be a tuple, passed as ``model(*inputs)``.
    ``log_dir`` (a folder) also writes every history row to TensorBoard: ``tensorboard --logdir``
    on that folder's parent shows the curves of every run in it side by side.
    """
    if keep_best and val_loader is None:
        raise ValueError("keep_best=True selects weights by validation loss: pass val_loader.")
    steps, steps_per_epoch, eval_every = _plan(train_loader, epochs, steps, eval_every)
    device = _device_of(model, device)
    policy = choose(device, precision)
    options = dict(loss_fn=loss_fn, optimizer=optimizer, policy=policy, grad_clip=grad_clip)
    step_fn = functools.partial(train_step, model, scaler=policy.grad_scaler(), **options)
    measure = val_loader is not None and functools.partial(
        evaluate,
        model,
        val_loader,
        loss_fn=loss_fn,
        device=device,
        precision=policy,
        max_batches=eval_batches,
    )
    history, losses, seconds, best = defaultdict(list), [], 0.0, None
    board = TensorBoardLog(log_dir) if log_dir is not None else None
    bar = progress_bar(
        total=steps, desc="training", **({} if progress is None else {"disable": not progress})
    )
    model.train()
    start = time.perf_counter()
    for step, (x, y) in enumerate(batch_stream(train_loader, steps), start=1):
        losses.append(step_fn(to_device(x, device), y.to(device, non_blocking=True)))
        if scheduler is not None:
            scheduler.step()
        bar.update(1)
        if step % eval_every == 0 or step == steps:
            sync(device)
            seconds += time.perf_counter() - start
            epoch = step / steps_per_epoch if steps_per_epoch else None
            lr = optimizer.param_groups[0]["lr"]
            _record(history, step, epoch, losses, lr, seconds, measure() if measure else None)
            if board is not None:
                board.write(history)
            if keep_best and (best is None or history["val_loss"][-1] < best[0]):
                best = history["val_loss"][-1], step, _copy_state(model)
            bar.set_postfix({k: f"{v[-1]:.4f}" for k, v in history.items() if k.endswith("_loss")})
            losses = []
            start = time.perf_counter()
    bar.close()
    if board is not None:
        board.close()
    if best is not None:
        model.load_state_dict(best[2])
        history["best_step"] = best[1]
    return dict(history)
