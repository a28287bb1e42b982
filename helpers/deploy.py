"""Getting a trained model ready to serve (chapter 08): export, ONNX, int8, latency.

- :func:`export_program`: ``torch.export`` with a dynamic batch (and sequence) dimension;
  :func:`max_abs_diff`
  checks a reloaded program (or anything callable) against the eager model;
- :func:`export_onnx` (the dynamo exporter) and :func:`onnx_runner`: the model in ONNX Runtime,
  called with and returning torch tensors;
- int8 weights: :func:`int8_weights` by hand (per output channel, symmetric) and
  :func:`fake_quantize_weights` for every conv / linear weight of a model (to measure what int8
  costs in accuracy); :func:`quantize_dynamic_int8` (PyTorch's dynamic quantization, fast int8
  kernels on x86 and ARM CPUs) and :func:`quantize_torchao` (torchao's ``quantize_``);
- :func:`saved_bytes` (the size of a saved ``state_dict``), :func:`latency_ms` (median wall
  time of a call, with the device synchronised) and :func:`compare_latency` (candidates timed in
  interleaved rounds: a median and a spread each, so a comparison can tell noise from a
  difference).

The serving package (``course_serve``) runs the eager models; these are the measured steps that
decide what to serve. Needs the ``[deploy]`` extra for ONNX and torchao.
"""

from __future__ import annotations

import copy
import logging
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .device import sync


def export_program(
    model: nn.Module, example: torch.Tensor, max_batch: int = 1024, max_length: int | None = None
):
    """``torch.export`` of ``model(example)`` with dimension 0 (the batch) dynamic, 1..max_batch,
    and with ``max_length`` also dimension 1 (a sequence), 2..max_length.

    The example should have a batch (and length) of at least 2: export specialises sizes 0 and 1.
    """
    if example.shape[0] < 2 or (max_length is not None and example.shape[1] < 2):
        raise ValueError(
            f"export with an example of at least 2 rows (and 2 positions), got "
            f"{tuple(example.shape)}: a size of 1 would be specialised and the dimension lost."
        )
    example = example.contiguous()  # a slice's strides would tie the length to its parent's size
    dims = {0: torch.export.Dim("batch", min=1, max=max_batch)}
    if max_length is not None:
        dims[1] = torch.export.Dim("length", min=2, max=max_length)
    return torch.export.export(model.eval(), (example,), dynamic_shapes=(dims,))


def export_onnx(model: nn.Module, example: torch.Tensor, path, max_batch: int = 1024) -> Path:
    """ONNX through the dynamo exporter (``torch.onnx.export(..., dynamo=True)``), batch dynamic."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model.eval(), (example,), dynamo=True, verbose=False,
                                    dynamic_shapes=({0: batch},))  # fmt: skip
    program.save(str(path))
    return path


def onnx_runner(path, threads: int | None = None):
    """A function that runs the ONNX model in ONNX Runtime (CPU): torch tensor in, tensor out."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {name: x.cpu().numpy()})[0])

    return run


@torch.inference_mode()
def max_abs_diff(reference, candidate, inputs) -> float:
    """The largest |reference(x) - candidate(x)| over the inputs (on the CPU, float32)."""
    worst = 0.0
    for x in inputs:
        a, b = reference(x).float().cpu(), candidate(x).float().cpu()
        if a.shape != b.shape:
            raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
        worst = max(worst, (a - b).abs().max().item())
    return worst


def int8_weights(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per output channel: ``q = round(w / s)``, ``s = max|w| / 127`` per row.

    Returns ``(q, s)`` with ``q`` int8 of the weight's shape and ``s`` float (one per row, shaped
    to broadcast); ``q * s`` is the dequantized weight, within ``s / 2`` of ``w``.
    """
    flat = weight.detach().float().reshape(weight.shape[0], -1)
    scale = (flat.abs().amax(dim=1, keepdim=True) / 127).clamp_min(1e-12)
    q = torch.round(flat / scale).clamp(-127, 127).to(torch.int8)
    shape = (-1,) + (1,) * (weight.dim() - 1)
    return q.reshape(weight.shape), scale.reshape(shape)


@torch.no_grad()
def fake_quantize_weights(model: nn.Module, kinds=(nn.Linear, nn.Conv2d)) -> tuple[nn.Module, int]:
    """A copy whose conv / linear weights are replaced by their int8 round trip (``q * s``).

    The arithmetic stays float: this measures the accuracy int8 weights cost. Returns the copy
    and the bytes those weights take in int8 with their float32 scales.
    """
    model = copy.deepcopy(model)
    int8_bytes = 0
    for module in model.modules():
        if isinstance(module, kinds):
            q, scale = int8_weights(module.weight)
            module.weight.copy_((q.float() * scale).to(module.weight.dtype))
            int8_bytes += q.numel() + 4 * scale.numel()
    return model, int8_bytes


def quantize_dynamic_int8(model: nn.Module) -> nn.Module:
    """PyTorch's dynamic quantization of the linear layers (CPU): int8 weights, activations
    quantized on the fly, int8 matrix products (fbgemm on x86, qnnpack on ARM). A copy."""
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated in favour of torchao
        return quantize_dynamic(copy.deepcopy(model).cpu().eval(), {nn.Linear}, dtype=torch.qint8)


def quantize_torchao(model: nn.Module, scheme: str = "int8_weight_only") -> nn.Module:
    """torchao's ``quantize_`` on a copy: ``int8_weight_only`` or ``int8_dynamic`` (linears)."""
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)  # torchao's import notice
    from torchao.quantization import (
        Int8DynamicActivationInt8WeightConfig,
        Int8WeightOnlyConfig,
        quantize_,
    )

    configs = {
        "int8_weight_only": Int8WeightOnlyConfig,
        "int8_dynamic": Int8DynamicActivationInt8WeightConfig,
    }
    if scheme not in configs:
        raise ValueError(f"scheme should be one of {sorted(configs)}, got {scheme!r}.")
    model = copy.deepcopy(model).eval()
    quantize_(model, configs[scheme]())
    return model


def saved_bytes(model: nn.Module, path=None) -> int:
    """Bytes on disk of ``torch.save(model.state_dict(), path)`` (a temporary file if no path)."""
    if path is None:
        with tempfile.TemporaryDirectory() as folder:
            return saved_bytes(model, Path(folder) / "model.pt")
    torch.save(model.state_dict(), path)
    return Path(path).stat().st_size


@torch.inference_mode()
def latency_ms(fn, x, *, repeats: int = 20, warmup: int = 3, device=None) -> float:
    """Median milliseconds of ``fn(x)`` over ``repeats`` calls, after ``warmup`` calls."""
    device = device if device is not None else getattr(x, "device", "cpu")
    for _ in range(warmup):
        fn(x)
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x)
        sync(device)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


@dataclass(frozen=True)
class Spread:
    """A repeated measurement: the median, and the lowest and highest value."""

    median: float
    low: float
    high: float

    def below(self, other: Spread) -> bool:
        """Lower beyond the spread: even this one's highest value is under the other's lowest
        (for times: faster in every round)."""
        return self.high < other.low

    def __str__(self) -> str:
        return f"{self.median:.2f} [{self.low:.2f}-{self.high:.2f}]"


def compare_latency(fns: dict, x, *, rounds: int = 5, calls: int = 10, warmup: int = 3,
                    device=None) -> dict[str, Spread]:  # fmt: skip
    """:func:`latency_ms` of every ``fns[name](x)``, interleaved: ``rounds`` rounds, each running
    every candidate for ``calls`` calls. A busy moment of the machine slows all of them alike, and
    the spread over rounds (a :class:`Spread` of the rounds' medians, in ms) says which
    differences are real (:meth:`Spread.below`)."""
    per_round = {name: [] for name in fns}
    for r in range(rounds):
        for name, fn in fns.items():
            ms = latency_ms(fn, x, repeats=calls, warmup=warmup if r == 0 else 0, device=device)
            per_round[name].append(ms)
    return {n: Spread(statistics.median(v), min(v), max(v)) for n, v in per_round.items()}
