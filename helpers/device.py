"""Which device to compute on, what it is, and how to wait for it.

The course runs on a CUDA GPU, an Apple GPU (MPS) or the CPU, chosen in that order;
``COURSE_DEVICE`` (or an argument) forces one. :func:`describe_hardware` reports what this
PyTorch can use (chapter 00's device check): the CPU's vector and bf16 instructions, CUDA and
cuDNN versions, each GPU's compute capability and whether it has native bf16, and MPS.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

DEVICE_VAR = "COURSE_DEVICE"
KINDS = ("cuda", "mps", "cpu")
BF16_CAPABILITY = (8, 0)  # NVIDIA GPUs from Ampere on (A100, RTX 30xx) have bf16 tensor cores
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo's names for bf16 instructions


def bf16_native(capability: tuple[int, int]) -> bool:
    """True for a CUDA compute capability with native bf16 (8.0 and up)."""
    return tuple(capability) >= BF16_CAPABILITY


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


def cpu_bf16_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> list[str] | None:
    """The CPU's bf16 instruction sets that ``cpuinfo`` lists (``avx512_bf16``, ``amx_bf16``).

    An empty list: none. ``None``: unknown, the file does not exist (macOS, Windows).
    """
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return None
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return [flag for flag in CPU_BF16_FLAGS if flag in flags]


def describe_cpu() -> str:
    """The CPU's vector instructions as PyTorch uses them, and its bf16 instructions."""
    bf16 = cpu_bf16_flags()
    listed = "unknown (no /proc/cpuinfo)" if bf16 is None else ", ".join(bf16) or "none"
    return f"{torch.backends.cpu.get_cpu_capability()} kernels, bf16 instructions: {listed}"


def cudnn_version(number: int | None) -> str:
    """cuDNN's version number in words: 90100 is 9.1.0 (cuDNN 9), 8902 is 8.9.2 (cuDNN 8)."""
    if number is None:
        return "not available"
    base = 10000 if number >= 90000 else 1000  # cuDNN 9 gave the minor version two digits
    return f"{number // base}.{number % base // 100}.{number % 100}"


def describe_hardware() -> str:
    """What this PyTorch can compute on, in a few lines: CPU, CUDA (versions, GPUs), MPS.

    With CUDA: the CUDA version PyTorch was built with, cuDNN's, and for every visible GPU its
    name, compute capability and whether bf16 is native (the precision policy's rule).
    """
    lines = [f"CPU: {describe_cpu()}"]
    built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA"
    if torch.cuda.is_available():
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        lines.append(f"CUDA available: True | PyTorch {built}, cuDNN {cudnn_version(cudnn)}")
        for i in range(torch.cuda.device_count()):
            major, minor = torch.cuda.get_device_capability(i)
            bf16 = "native" if bf16_native((major, minor)) else "not native (fp16 + GradScaler)"
            lines.append(
                f"  cuda:{i} {torch.cuda.get_device_name(i)}: compute capability "
                f"{major}.{minor}, bf16 {bf16}"
            )
    else:
        lines.append(
            f"CUDA available: False | PyTorch {built}. On a CUDA GPU this shows cuDNN's version "
            "and each GPU's name, compute capability and whether bf16 is native (8.0 and up)"
        )
    mps = getattr(torch.backends, "mps", None)
    built_mps = bool(mps is not None and mps.is_built())
    lines.append(f"MPS (Apple GPU) available: {mps_available()} | built with MPS: {built_mps}")
    return "\n".join(lines)


def sync(device) -> None:
    """Wait until the device has finished its queued work (GPUs run asynchronously).

    Call it before reading a clock: without it a GPU timing measures only the queuing.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
