"""Run mode and seeding, and ``setup()``: the first thing every notebook calls."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

QUICK_VAR = "COURSE_QUICK"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def is_quick() -> bool:
    """True when ``COURSE_QUICK`` asks for quick mode (tiny subsets, few steps; used by CI)."""
    value = os.environ.get(QUICK_VAR, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(
        f"{QUICK_VAR}={value!r} is not understood: set it to 1 for quick mode, "
        "or to 0 (or unset it) for the full run."
    )


def run_mode() -> str:
    """``"quick"`` or ``"full"``."""
    return "quick" if is_quick() else "full"


def pick(full, quick):
    """Choose a size by run mode: ``EPOCHS = pick(full=12, quick=1)``."""
    return quick if is_quick() else full


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def setup(seed: int = 0, device: str | None = None, verbose: bool = True) -> torch.device:
    """Seed everything, pick the device and print a one-line report. Returns the device.

    The report names the run mode, the device, the precision policy for it
    (:func:`helpers.precision.choose`) and the library versions.
    """
    from .device import describe_device, get_device
    from .precision import choose

    mode = run_mode()  # raises early on a bad COURSE_QUICK value
    seed_everything(seed)
    chosen = get_device(device)
    if verbose:
        import torchvision

        print(
            f"mode {mode} | device {describe_device(chosen)} | precision {choose(chosen)} | "
            f"torch {torch.__version__} | torchvision {torchvision.__version__} | seed {seed}"
        )
    return chosen
