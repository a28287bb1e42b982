"""Checkpoints: save atomically, load safely (``weights_only=True``), resume exactly.

A checkpoint is one file holding the model's ``state_dict`` and, optionally, the optimiser's,
the scheduler's and the gradient scaler's, the epoch, a config dict (plain Python values) and the
random-number-generator states, so that a resumed run takes the same next step.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from .env import is_quick

CHECKPOINT_VAR = "COURSE_CHECKPOINT_DIR"
DEFAULT_CHECKPOINT_DIR = Path.home() / ".cache" / "scratch2finetune" / "checkpoints"


def checkpoint_path(name: str) -> Path:
    """Where a chapter keeps a named model: ``$COURSE_CHECKPOINT_DIR/<name>.pt``.

    Quick mode uses ``<name>-quick.pt``, so a CI-sized run never overwrites a full-run model.
    """
    folder = Path(os.environ.get(CHECKPOINT_VAR, "").strip() or DEFAULT_CHECKPOINT_DIR).expanduser()
    return folder / f"{name}{'-quick' if is_quick() else ''}.pt"


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def save_checkpoint(
    path,
    model,
    optimizer=None,
    scheduler=None,
    scaler=None,
    *,
    epoch: int | None = None,
    config: dict | None = None,
    **extra,
) -> Path:
    """Write a checkpoint atomically: to a temporary file first, then renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": epoch,
        "config": config or {},
        "rng": _rng_state(),
        **extra,
    }
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        torch.save(state, temp)
        os.replace(temp, path)  # atomic: readers see the old file or the new one, never half of one
    finally:
        if os.path.exists(temp):
            os.remove(temp)
    return path


def load_checkpoint(
    path,
    model=None,
    optimizer=None,
    scheduler=None,
    scaler=None,
    *,
    map_location="cpu",
    restore_rng: bool = False,
) -> dict:
    """Load a checkpoint into the given objects and return the whole dict.

    ``restore_rng=True`` also restores the random-number generators, for an exact resume.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"No checkpoint at {path}. Run the chapter that trains this model first "
            f"(in the same run mode), or set {CHECKPOINT_VAR} to the folder that holds it."
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise ValueError(
            f"{path} is damaged or is not a checkpoint "
            f"({type(error).__name__}: {str(error)[:200]}). "
            "Delete it and run the chapter that writes it again."
        ) from None
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(
            f"{path} is not a checkpoint written by save_checkpoint() (no 'model' entry)."
        )
    parts = [
        ("model", model),
        ("optimizer", optimizer),
        ("scheduler", scheduler),
        ("scaler", scaler),
    ]
    for key, target in parts:
        if target is None:
            continue
        if state.get(key) is None:
            raise ValueError(f"{path} holds no {key} state to load.")
        try:
            target.load_state_dict(state[key])
        except (RuntimeError, ValueError, KeyError) as error:
            raise ValueError(f"The {key} state in {path} does not fit: {error}") from None
    if restore_rng:
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return state
