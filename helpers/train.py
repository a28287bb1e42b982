"""Training and evaluation loops in plain PyTorch, shared by every training chapter.

``fit`` trains for a number of epochs (or optimiser steps), with an optional learning-rate
scheduler stepped after every batch, mixed precision on CUDA, optional gradient clipping and a
progress bar, and returns a history: one row per evaluation.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import defaultdict
from itertools import islice

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm


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


def autocast(device: torch.device, enabled: bool | None = None, dtype: torch.dtype | None = None):
    """Mixed precision where it pays: bf16 (or fp16) autocast on CUDA, nothing elsewhere.

    ``enabled=True`` with a ``dtype`` forces autocast on other devices too (e.g. bf16 on a CPU
    with bf16 instructions).
    """
    device = torch.device(device)
    if enabled is None:
        enabled = device.type == "cuda"
    if not enabled:
        return contextlib.nullcontext()
    if dtype is None:
        dtype = torch.bfloat16 if device.type != "cuda" or torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def _to(batch, device):
    return [t.to(device, non_blocking=True) for t in batch]


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def evaluate(model, loader, loss_fn=cross_entropy, device=None, amp: bool | None = None,
             max_batches: int | None = None, amp_dtype: torch.dtype | None = None) -> dict:
    """Mean loss and accuracy (argmax of the last dimension) over a loader."""
    device = torch.device(device) if device is not None else _model_device(model)
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.long)
    count = 0
    for x, y in islice(loader, max_batches):
        x, y = _to((x, y), device)
        with autocast(device, amp, amp_dtype):
            out = model(x)
        total_loss += loss_fn(out.float(), y).double() * y.numel()
        correct += (out.argmax(-1) == y).sum()
        count += y.numel()
    model.train(was_training)
    if count == 0:
        raise ValueError("evaluate() got an empty loader.")
    return {"loss": total_loss.item() / count, "accuracy": correct.item() / count}


@torch.inference_mode()
def predict(model, loader, device=None, amp: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Model outputs and targets for a whole loader, concatenated on the CPU."""
    device = torch.device(device) if device is not None else _model_device(model)
    was_training = model.training
    model.eval()
    outputs, targets = [], []
    for x, y in loader:
        with autocast(device, amp):
            out = model(x.to(device, non_blocking=True))
        outputs.append(out.float().cpu())
        targets.append(y.cpu())
    model.train(was_training)
    return torch.cat(outputs), torch.cat(targets)


def fit(model, train_loader, optimizer, *, epochs: int | None = None, steps: int | None = None,
        loss_fn=cross_entropy, val_loader=None, scheduler=None, device=None,
        amp: bool | None = None, amp_dtype: torch.dtype | None = None, grad_clip: float | None = None,
        eval_every: int | None = None, eval_batches: int | None = None,
        progress: bool | None = None, log_every: int = 25) -> dict[str, list]:
    """Train ``model`` and return its history.

    Give ``epochs`` (passes over ``train_loader``) or ``steps`` (optimiser steps; the loader is
    restarted as often as needed, so an endless iterator works too). ``scheduler`` is stepped after
    every optimiser step (OneCycleLR, cosine with warmup, ...). Evaluation on ``val_loader`` runs
    every ``eval_every`` steps (default: every epoch in epoch mode, only at the end in step mode;
    half an epoch gives smoother curves) and always after the last step.

    The history has one entry per evaluation: ``step``, ``epoch`` (fractional inside an epoch),
    ``train_loss`` (mean since the previous entry), ``val_loss``, ``val_accuracy``, ``lr`` and
    ``seconds`` (training time so far, evaluation excluded).
    """
    if (epochs is None) == (steps is None):
        raise ValueError("fit() needs exactly one of epochs=... or steps=....")
    device = torch.device(device) if device is not None else _model_device(model)
    steps_per_epoch = len(train_loader) if hasattr(train_loader, "__len__") else None
    if steps is None:
        if not steps_per_epoch:
            raise ValueError("fit(epochs=...) needs a loader with a length; use steps=... for an endless one.")
        steps = epochs * steps_per_epoch
        eval_every = eval_every or steps_per_epoch
    eval_every = eval_every or steps
    use_amp = device.type == "cuda" if amp is None else amp
    if amp_dtype is None:
        cuda_fp16 = device.type == "cuda" and not torch.cuda.is_bf16_supported()
        amp_dtype = torch.float16 if cuda_fp16 else torch.bfloat16
    # fp16 gradients can underflow: the scaler multiplies the loss up and the gradients back down
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp and amp_dtype == torch.float16)

    history = defaultdict(list)
    running = torch.zeros((), device=device)
    running_count = 0
    train_seconds = 0.0
    bar_options = {} if progress is None else {"disable": not progress}
    bar = progress_bar(total=steps, desc="training", **bar_options)

    def batches():
        while True:
            yield from train_loader

    model.train()
    start = time.perf_counter()
    for step, (x, y) in enumerate(batches(), start=1):
        x, y = _to((x, y), device)
        with autocast(device, use_amp, amp_dtype):
            loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if grad_clip is not None:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        if scheduler is not None:
            scheduler.step()
        running += loss.detach().float()
        running_count += 1
        bar.update(1)
        if not bar.disable and step % log_every == 0:
            bar.set_postfix(loss=f"{running.item() / running_count:.4f}")

        if step % eval_every == 0 or step == steps:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            train_seconds += time.perf_counter() - start
            history["step"].append(step)
            if steps_per_epoch:
                history["epoch"].append(step / steps_per_epoch)
            history["train_loss"].append(running.item() / running_count)
            history["lr"].append(optimizer.param_groups[0]["lr"])
            history["seconds"].append(train_seconds)
            if val_loader is not None:
                metrics = evaluate(model, val_loader, loss_fn, device, use_amp, eval_batches, amp_dtype)
                history["val_loss"].append(metrics["loss"])
                history["val_accuracy"].append(metrics["accuracy"])
                bar.set_postfix(loss=f"{history['train_loss'][-1]:.4f}", val_loss=f"{metrics['loss']:.4f}",
                                val_acc=f"{metrics['accuracy']:.4f}")
            running.zero_()
            running_count = 0
            start = time.perf_counter()
        if step == steps:
            break
    bar.close()
    return dict(history)
