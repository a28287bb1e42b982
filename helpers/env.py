"""Run mode, seeding and device choice: the first thing every notebook calls."""

from __future__ import annotations

import importlib.metadata as metadata
import os
import platform
import random

import numpy as np
import torch
from packaging.requirements import Requirement
from packaging.version import Version

QUICK_VAR = "COURSE_QUICK"
DEVICE_VAR = "COURSE_DEVICE"
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


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def _available(kind: str) -> bool:
    if kind == "cuda":
        return torch.cuda.is_available()
    if kind == "mps":
        return _mps_available()
    return kind == "cpu"


def get_device(name: str | None = None) -> torch.device:
    """The device to compute on.

    ``name`` (or else ``COURSE_DEVICE``) forces a choice such as ``"cpu"``, ``"cuda"``,
    ``"cuda:1"`` or ``"mps"``; otherwise the first available of cuda, mps, cpu.
    """
    source = "argument" if name else DEVICE_VAR
    name = (name or os.environ.get(DEVICE_VAR, "")).strip()
    if not name:
        for kind in ("cuda", "mps"):
            if _available(kind):
                return torch.device(kind)
        return torch.device("cpu")

    hint = f"use cpu, cuda, cuda:N or mps (or unset {DEVICE_VAR} to choose automatically)"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"{source} {name!r} is not a device name PyTorch knows; {hint}.") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{source} {name!r}: this course supports cpu, cuda and mps; {hint}.")
    if not _available(device.type):
        raise ValueError(
            f"{source} {name!r} asks for {device.type}, but this PyTorch ({torch.__version__}) "
            f"cannot use {device.type} on this machine; set {DEVICE_VAR}=cpu or unset it."
        )
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(
            f"{source} {name!r}: only {torch.cuda.device_count()} CUDA device(s) are visible "
            f"(cuda:0 to cuda:{torch.cuda.device_count() - 1}); {hint}."
        )
    return device


def describe_device(device: torch.device) -> str:
    """One line about the device: GPU name, compute capability, memory, bf16; or CPU threads."""
    device = torch.device(device)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        bf16 = "yes" if torch.cuda.is_bf16_supported() else "no"
        return (
            f"cuda ({props.name}, compute capability {props.major}.{props.minor}, "
            f"{props.total_memory / 2**30:.1f} GiB, bf16 {bf16})"
        )
    if device.type == "mps":
        return f"mps (Apple GPU, {platform.machine()} macOS {platform.mac_ver()[0]})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def setup(seed: int = 0, device: str | None = None, verbose: bool = True) -> torch.device:
    """Seed everything, pick the device and print a one-line report. Returns the device."""
    mode = run_mode()  # raises early on a bad COURSE_QUICK value
    seed_everything(seed)
    chosen = get_device(device)
    if verbose:
        import torchvision

        print(
            f"mode {mode} | device {describe_device(chosen)} | torch {torch.__version__} | "
            f"torchvision {torchvision.__version__} | seed {seed}"
        )
    return chosen


PROJECT = "course-helpers"
MIN_PYTHON = "3.10"


def check_install(project: str = PROJECT) -> bool:
    """Print an OK/FAIL line for Python, each runtime requirement and the accelerator.

    The requirements are read from the installed project's metadata (pyproject.toml), so this
    check and the package never disagree. Returns True when nothing failed.
    """
    fix = f"run `pip install -e .` in the course folder (or `make install`)"
    lines = []
    python = platform.python_version()
    lines.append((Version(python) >= Version(MIN_PYTHON), f"Python {python} (needs >= {MIN_PYTHON})",
                  f"install Python {MIN_PYTHON} or newer"))
    try:
        required = [Requirement(r) for r in metadata.requires(project) or []]
    except metadata.PackageNotFoundError:
        required = []
        lines.append((False, f"{project} is not installed", fix))
    for req in required:
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # an optional extra (course tooling), not needed to run the notebooks
        try:
            have = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            lines.append((False, f"{req.name}: missing (needs {req.specifier})", fix))
            continue
        ok = req.specifier.contains(have, prereleases=True)
        lines.append((ok, f"{req.name} {have} (needs {req.specifier})", f"upgrade: pip install -U '{req}'"))
    for ok, text, todo in lines:
        print(f"{'OK  ' if ok else 'FAIL'} {text}" + ("" if ok else f"  ->  {todo}"))
    accelerator = [k for k in ("cuda", "mps") if _available(k)]
    if accelerator:
        print(f"OK   accelerator: {describe_device(get_device(accelerator[0]))}")
    else:
        print("NOTE no GPU found: everything runs on the CPU (slower, but every notebook works). "
              "On Colab, choose Runtime > Change runtime type > GPU.")
    return all(ok for ok, _, _ in lines)
