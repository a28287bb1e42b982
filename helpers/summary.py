"""Look inside a model: a per-layer table of shapes, parameters and multiply-adds, and counts.

``layer_table(model, (1, 28, 28))`` runs one example batch through ``model`` with forward hooks
and prints, for every leaf layer, its output shape, its parameters and its multiply-adds.
``count_parameters(model)`` counts the trainable parameters.
"""

from __future__ import annotations

import torch
from torch import nn


def count_parameters(model: nn.Module, trainable: bool = True) -> int:
    """Number of parameters; only those that require gradients when ``trainable`` (the default)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)


def _shape(value) -> tuple | str:
    if isinstance(value, torch.Tensor):
        return tuple(value.shape[1:])  # per example: the batch dimension is left out
    if isinstance(value, (tuple, list)) and value:
        return _shape(value[0])
    return "?"


def _mult_adds(module: nn.Module, output: torch.Tensor) -> int:
    """Multiply-adds of one example through a convolution or a linear layer (others: 0)."""
    if isinstance(module, nn.Conv2d) and isinstance(output, torch.Tensor):
        kh, kw = module.kernel_size
        return output[0].numel() * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear) and isinstance(output, torch.Tensor):
        return output[0].numel() * module.in_features
    return 0


def _example_batch(
    model: nn.Module, input_shape, batch_size: int, dtype: torch.dtype
) -> torch.Tensor:
    """A batch for ``input_shape`` (one example's shape, or a ready tensor), model's device."""
    if isinstance(input_shape, torch.Tensor):
        return input_shape
    shape = tuple(input_shape)
    if not shape or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ValueError(
            "input_shape should be the shape of one example, such as (1, 28, 28); "
            f"got {input_shape!r}."
        )
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    if dtype.is_floating_point:
        return torch.randn(batch_size, *shape, dtype=dtype, device=device)
    return torch.zeros(batch_size, *shape, dtype=dtype, device=device)


def layer_table(
    model: nn.Module,
    input_shape,
    batch_size: int = 2,
    dtype: torch.dtype = torch.float32,
    show: bool = True,
) -> list[dict]:
    """Shapes, parameters and multiply-adds of every leaf layer for one forward pass.

    ``input_shape`` is the shape of one example without the batch dimension, e.g. ``(1, 28, 28)``
    (or a ready example batch as a tensor). The model runs in eval mode under
    ``torch.inference_mode()``, so BatchNorm statistics are not touched. Shapes in the table leave
    out the batch dimension. When the forward pass fails, the table up to the failing layer is
    printed with that layer's input shape, then the error is raised again.

    Returns one dict per layer call: ``name``, ``type``, ``input_shape``, ``output_shape``,
    ``params`` (the layer's own parameters) and ``mult_adds`` (per example).
    """
    example = _example_batch(model, input_shape, batch_size, dtype)

    rows: list[dict] = []
    entered: list[tuple[str, nn.Module, tuple]] = []
    names = {module: name or "(model)" for name, module in model.named_modules()}

    def pre_hook(module, args):
        entered.append((names[module], module, _shape(args)))

    def hook(module, args, output):
        rows.append(
            {
                "name": names[module],
                "type": type(module).__name__,
                "input_shape": _shape(args),
                "output_shape": _shape(output),
                "params": sum(p.numel() for p in module.parameters(recurse=False)),
                "mult_adds": _mult_adds(module, output),
            }
        )

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_pre_hook(pre_hook) for m in leaves]
    handles += [m.register_forward_hook(hook) for m in leaves]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            model(example)
    except Exception:
        if show:
            print(format_table(rows, model, example))
            if len(entered) > len(rows):
                name, module, shape = entered[len(rows)]
                print(f"FAILED in layer {name!r} ({module}) with input shape {shape} (per example)")
        raise
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if show:
        print(format_table(rows, model, example))
    return rows


def format_table(
    rows: list[dict], model: nn.Module | None = None, example: torch.Tensor | None = None
) -> str:
    """The text table that :func:`layer_table` prints."""
    head = ("layer", "type", "output shape", "params", "mult-adds")
    body = [
        (r["name"], r["type"], str(r["output_shape"]), f"{r['params']:,}", f"{r['mult_adds']:,}")
        for r in rows
    ]
    if example is not None:
        body.insert(0, ("(input)", "", str(_shape(example)), "", ""))
    widths = [
        max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)
    ]
    align = ["<", "<", "<", ">", ">"]

    def line(cells):
        return "  ".join(f"{c:{a}{w}}" for c, a, w in zip(cells, align, widths)).rstrip()

    out = [line(head), line(["-" * w for w in widths])] + [line(b) for b in body]
    total_rows = sum(r["params"] for r in rows)
    total = sum(p.numel() for p in model.parameters()) if model is not None else total_rows
    out.append(
        f"total: {total:,} parameters, {sum(r['mult_adds'] for r in rows):,} mult-adds per example"
    )
    if total != total_rows:
        out.append(f"(the layers that ran hold {total_rows:,} of them)")
    return "\n".join(out)
