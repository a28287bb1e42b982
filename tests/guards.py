"""Test-only guards that make a CPU-only machine catch what an accelerator would reject."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class NoFloat64(TorchDispatchMode):
    """Fail on any float64 tensor an operation creates, as if the device could not hold one.

    Apple GPUs (MPS) have no float64: code that accumulates in float64 on the model's device
    runs on a CPU and crashes on a Mac. Inside ``with NoFloat64():`` every operation is checked.
    """

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor) and value.dtype == torch.float64:
                raise AssertionError(f"{func} created a float64 tensor: MPS has no float64")
        return out
