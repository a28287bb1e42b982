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


_COPIES = {
    "aten::copy_",
    "aten::to",
    "aten::_to_copy",
    "aten::_copy_from",
    "aten::_copy_from_and_resize",
}
_INDEXING = {"aten::index", "aten::index_put", "aten::index_put_", "aten::_index_put_impl_"}


def _devices(func, args, kwargs) -> set:
    """The devices of an operation's tensor arguments, as a device check would see them."""
    if func._schema.name in _COPIES:  # copying between devices is what .to() and copy_ are for
        return set()
    if func._schema.name in _INDEXING:  # PyTorch accepts CPU index tensors for any device
        args = [args[0], *args[2:]]
    tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
    # a 0-dim CPU tensor is a scalar that PyTorch moves to any device by itself
    return {t.device for t in tensors if not (t.dim() == 0 and t.device.type == "cpu")}


def _read_meta(func, args, kwargs):
    """What reading a meta tensor gives under :class:`SameDevice`: ones (meta holds no data)."""
    x = args[0]
    if func._schema.name in ("aten::_local_scalar_dense", "aten::item", "aten::is_nonzero"):
        # .item(), bool(), int()
        return False if x.dtype == torch.bool else 1.0 if x.is_floating_point() else 1
    if func._schema.name not in ("aten::to", "aten::_to_copy"):
        return None
    rest = [*args[1:], *kwargs.values()]  # .cpu(), .tolist(), .to("cpu", dtype)
    device = next((torch.device(a) for a in rest if isinstance(a, (torch.device, str))), x.device)
    dtype = next((a for a in rest if isinstance(a, torch.dtype)), x.dtype)
    if device.type == "meta":
        return None
    return torch.full(x.shape, x.dtype != torch.bool, dtype=dtype, device=device)


class SameDevice(TorchDispatchMode):
    """Fail on any operation whose tensor arguments live on two devices, as CUDA would.

    A CPU-only machine never sees "a CPU tensor times a CUDA tensor": everything is on the CPU.
    Run code with its model and data on the ``meta`` device (shapes, no data) inside
    ``with SameDevice():`` and every operation that mixes meta and CPU tensors fails here, where
    a GPU run would fail. Allowed, as in PyTorch: copies between devices (``.to``, ``copy_``),
    0-dim CPU tensors (scalars) and CPU index tensors. Reading a meta tensor (``.item()``,
    ``.tolist()``, ``.cpu()``) gives ones (False for booleans): loops that log numbers or divide
    by a standard deviation run to the end.
    """

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        devices = _devices(func, args, kwargs)
        if len(devices) > 1:
            names = sorted(str(d) for d in devices)
            raise AssertionError(f"{func} mixes tensors on {' and '.join(names)}")
        if args and isinstance(args[0], torch.Tensor) and args[0].device.type == "meta":
            read = _read_meta(func, args, kwargs)
            if read is not None:
                return read
        return func(*args, **kwargs)
