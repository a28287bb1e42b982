"""The course's one mixed-precision policy: which number format to train in, on which device.

- CUDA GPUs with native bf16 (compute capability 8.0 and up: A100, H100, RTX 30xx and later):
  bf16 autocast. bf16 has float32's range, so no loss scaling is needed.
- Older CUDA GPUs (Colab's T4, V100; compute capability below 8.0): fp16 autocast with a
  ``torch.amp.GradScaler``. These GPUs emulate bf16 slowly, but have fast fp16 tensor cores;
  fp16's small range makes small gradients underflow to zero, so the loss is scaled up before
  ``backward`` and the gradients scaled back down before the optimizer step.
- Apple GPUs (MPS) and CPUs: float32. bf16 autocast pays on a CPU only with native bf16
  instructions (AVX512-BF16, AMX), and then modestly: ``benchmarks/precision.py`` measured
  1.32x for chapter 02's ConvNet (batch 256) and 1.13x for chapter 04's GPT (batch 64) on a
  2-core AMD EPYC with AVX512-BF16 (the README's benchmark table: November 2026, PyTorch
  2.15.0); chapter 04 times its GPT at batch 16 on the machine that runs it. Pass
  ``precision="bf16"`` where it pays.

``choose(device)`` applies the rule; ``fit``, ``evaluate``, ``predict`` and every chapter use it.
:func:`drift_tolerance` says how far two AdamW runs of the same training may drift apart by
rounding alone (chapter 07 compares 1 and 2 processes in bf16 with it).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch

from .device import bf16_native

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
        if bf16_native((major, minor)):
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


def unit_roundoff(dtype: torch.dtype) -> float:
    """The largest relative error of rounding to ``dtype``: 2^-8 for bf16, 2^-24 for float32."""
    return torch.finfo(dtype).eps / 2


def adam_step_bound(step: int, betas: tuple[float, float]) -> float:
    """The largest ``|m̂ / sqrt(v̂)|`` Adam can reach at ``step`` (from 1), whatever the gradients.

    ``m̂ = Σ a_i g_i`` and ``v̂ = Σ b_i g_i²`` with ``a_i = (1-β1) β1^(t-i) / (1-β1^t)`` and
    ``b_i = (1-β2) β2^(t-i) / (1-β2^t)``; Cauchy-Schwarz gives ``|m̂| <= sqrt(Σ a_i²/b_i)
    sqrt(v̂)``, with equality for ``g_i ∝ a_i / b_i``. It is 1 at the first step (ε ignored:
    it only makes steps smaller). An AdamW step moves a weight by at most ``lr`` times this.
    """
    b1, b2 = betas
    a = [(1 - b1) * b1 ** (step - i) / (1 - b1**step) for i in range(1, step + 1)]
    b = [(1 - b2) * b2 ** (step - i) / (1 - b2**step) for i in range(1, step + 1)]
    return math.sqrt(sum(x * x / y for x, y in zip(a, b)))


def drift_tolerance(lrs, betas, dtype, first_step: int = 1) -> dict:
    """How far the weights of two AdamW runs of the same training may drift apart by rounding.

    ``lrs`` are the learning rates of the steps taken (from ``first_step``). Each step moves
    a weight by at most ``lr · adam_step_bound``; their sum is the ``reach``. ``max`` (2 ·
    reach) is a hard bound: rounding can reverse the direction of a weight's update (a
    gradient that cancels to below ``u`` times its parts), never its size. ``typical``
    (``u · reach``): a weight whose gradients are well above their rounding error gets each
    update off by about a relative ``u``, the unit roundoff of ``dtype``: compare medians.
    Weight decay only shrinks a difference (it multiplies both runs' weights by ``1 - lr·wd``).
    """
    u = unit_roundoff(dtype)
    reach = sum(lr * adam_step_bound(s, betas) for s, lr in enumerate(lrs, first_step))
    return {"unit_roundoff": u, "reach": reach, "typical": u * reach, "max": 2 * reach}
