"""The course's one mixed-precision policy: which number format to train in, on which device.

- CUDA GPUs with native bf16 (compute capability 8.0 and up: A100, H100, RTX 30xx and later):
  bf16 autocast. bf16 has float32's range, so no loss scaling is needed.
- Older CUDA GPUs (Colab's T4, V100; compute capability below 8.0): fp16 autocast with a
  ``torch.amp.GradScaler``. These GPUs emulate bf16 slowly, but have fast fp16 tensor cores;
  fp16's small range makes small gradients underflow to zero, so the loss is scaled up before
  ``backward`` and the gradients scaled back down before the optimizer step.
- Apple GPUs (MPS) and CPUs: float32. bf16 autocast pays on a CPU only with native bf16
  instructions (AVX512-BF16, AMX), and then modestly: on the course's 2-core AMD EPYC with
  AVX512-BF16, ``benchmarks/precision.py`` measured 1.32x for chapter 02's ConvNet and 1.13x for
  chapter 04's GPT at batch 64 (0.95x at batch 16). Pass ``precision="bf16"`` where it pays.

``choose(device)`` applies the rule; ``fit``, ``evaluate``, ``predict`` and every chapter use it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """A device type and a format name; the autocast dtype and the scaler follow from them."""

    device_type: str
    name: str  # "fp32", "bf16" or "fp16"
    reason: str = ""

    @property
    def dtype(self) -> torch.dtype | None:
        return DTYPES[self.name]

    @property
    def scaled(self) -> bool:
        """fp16 gradients underflow without loss scaling."""
        return self.name == "fp16"

    def autocast(self):
        """The context to run forward passes in: ``with precision.autocast(): loss = ...``."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A GradScaler, enabled only for fp16 (disabled it passes everything through)."""
        return torch.amp.GradScaler(self.device_type, enabled=self.scaled)

    def __str__(self) -> str:
        what = {"fp32": "float32", "bf16": "bf16 autocast", "fp16": "fp16 autocast + GradScaler"}
        return what[self.name] + (f" ({self.reason})" if self.reason else "")


def _default(device: torch.device) -> tuple[str, str]:
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if (major, minor) >= (8, 0):
            return "bf16", f"native bf16, compute capability {major}.{minor}"
        return "fp16", f"compute capability {major}.{minor} has no native bf16"
    if device.type == "mps":
        return "fp32", "Apple GPU: float32"
    return "fp32", "CPU: float32 unless measured otherwise"


def choose(device, override: str | Precision | None = None) -> Precision:
    """The precision to train in on ``device``; ``override`` ("fp32", "bf16", "fp16") forces one."""
    if isinstance(override, Precision):
        return override
    device = torch.device(device)
    if override is None:
        name, reason = _default(device)
        return Precision(device.type, name, reason)
    if override not in DTYPES:
        raise ValueError(
            f"precision {override!r} is not one of {sorted(DTYPES)} (or None for the default)."
        )
    if override != "fp32" and device.type == "mps":
        raise ValueError(
            f"precision {override!r} is not supported on mps by this course; use 'fp32'."
        )
    return Precision(device.type, override, "chosen by hand")
