"""Which device to compute on, what it is, and how to wait for it.

The course runs on a CUDA GPU, an Apple GPU (MPS) or the CPU, chosen in that order;
``COURSE_DEVICE`` (or an argument) forces one.
"""

from __future__ import annotations

import os
import platform

import torch

DEVICE_VAR = "COURSE_DEVICE"
KINDS = ("cuda", "mps", "cpu")


def mps_available() -> bool:
    """True when this PyTorch can use an Apple GPU."""
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def available(kind: str) -> bool:
    """True when a device of this kind (``"cuda"``, ``"mps"`` or ``"cpu"``) can be used."""
    if kind == "cuda":
        return torch.cuda.is_available()
    if kind == "mps":
        return mps_available()
    return kind == "cpu"


def get_device(name: str | None = None) -> torch.device:
    """The device to compute on.

    ``name`` (or else ``COURSE_DEVICE``) forces a choice such as ``"cpu"``, ``"cuda"``,
    ``"cuda:1"`` or ``"mps"``; otherwise the first available of cuda, mps, cpu.
    """
    source = "argument" if name else DEVICE_VAR
    name = (name or os.environ.get(DEVICE_VAR, "")).strip()
    if not name:
        return torch.device(next(kind for kind in KINDS if available(kind)))
    hint = f"use cpu, cuda, cuda:N or mps (or unset {DEVICE_VAR} to choose automatically)"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"{source} {name!r} is not a device name PyTorch knows; {hint}.") from None
    if device.type not in KINDS:
        raise ValueError(f"{source} {name!r}: this course supports cpu, cuda and mps; {hint}.")
    if not available(device.type):
        raise ValueError(
            f"{source} {name!r} asks for {device.type}, but this PyTorch ({torch.__version__}) "
            f"cannot use {device.type} on this machine; set {DEVICE_VAR}=cpu or unset it."
        )
    count = torch.cuda.device_count() if device.type == "cuda" else 1
    if device.type == "cuda" and device.index is not None and device.index >= count:
        raise ValueError(
            f"{source} {name!r}: only {count} CUDA device(s) are visible "
            f"(cuda:0 to cuda:{count - 1}); {hint}."
        )
    return device


def describe_device(device, short: bool = False) -> str:
    """The device in words: GPU name, compute capability and memory, or the CPU and its threads.

    ``short=True`` gives the form of the results tables: ``"cuda (NVIDIA T4)"``,
    ``"mps"`` or ``"cpu (2 threads)"``.
    """
    device = torch.device(device)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        if short:
            return f"cuda ({props.name})"
        return (
            f"cuda ({props.name}, compute capability {props.major}.{props.minor}, "
            f"{props.total_memory / 2**30:.1f} GiB)"
        )
    if device.type == "mps":
        return (
            "mps"
            if short
            else f"mps (Apple GPU, {platform.machine()} macOS {platform.mac_ver()[0]})"
        )
    threads = f"{torch.get_num_threads()} threads"
    return (
        f"cpu ({threads})"
        if short
        else f"cpu ({platform.processor() or platform.machine()}, {threads})"
    )


def sync(device) -> None:
    """Wait until the device has finished its queued work (GPUs run asynchronously).

    Call it before reading a clock: without it a GPU timing measures only the queuing.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
