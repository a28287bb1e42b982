"""Where training memory goes, measured, and the two ways to spend less of it on one device.

- Accounting: :func:`state_bytes` (weights, gradients and AdamW's moments per parameter, by how
  they are stored and how much of it is sharded over how many ranks), :func:`gpt_parameters`
  and :func:`activation_bytes` (what autograd keeps for the backward pass of the course's GPT,
  in float32 or under bf16 autocast), :func:`bf16_copy_bytes` (the bf16 weight copies a bf16
  forward pass over float32 weights holds), :func:`logit_bytes` (the logits at the loss) and
  :func:`training_bytes` (all of it for one rank, at the peak of a step);
- Measurement: :func:`held_bytes` (the tensors a model and its optimizer hold),
  :func:`saved_activation_bytes` (the tensors autograd saves, deduplicated by storage) and
  :func:`peak_bytes` (``torch.cuda.max_memory_allocated`` on a GPU, the profiler's allocation
  record on the CPU);
- Saving memory: :func:`accumulate_gradients` (k micro-batches, one optimizer step, the same
  gradients as one big batch) and :func:`checkpoint_blocks` (activation checkpointing of the
  GPT's blocks with ``torch.utils.checkpoint``).

Chapter 07 derives the formulas and checks them against measurements (byte for byte on the CPU).
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from .train import cross_entropy

# Bytes per parameter of each part of the training state kept between steps (AdamW: two
# moments), by how it is stored.
STATE_LAYOUTS = {
    # float32 weights, gradients and moments: float32 training, and also what stays allocated
    # under torch.autocast (its bf16 weight copies are made in the forward pass and saved for
    # the backward pass: bf16_copy_bytes) and under FSDP2's MixedPrecisionPolicy (float32
    # sharded parameters and gradients; the bf16 parameters are gathered per layer and freed).
    "fp32": {"weights": 4, "grads": 4, "master": 0, "moments": 8},
    # ZeRO's mixed precision (Rajbhandari et al., 2020; DeepSpeed): 16-bit weights and gradients
    # kept between steps, a float32 master copy of the weights and float32 moments.
    "bf16_master": {"weights": 2, "grads": 2, "master": 4, "moments": 8},
}
# What is split over the ranks: nothing (DDP), the optimizer state (ZeRO-1), also the gradients
# (ZeRO-2), or everything (ZeRO-3; FSDP2's fully_shard, which shards the "fp32" layout).
SHARDINGS = {
    "none": (),
    "optimizer": ("master", "moments"),
    "gradients": ("master", "moments", "grads"),
    "full": ("master", "moments", "grads", "weights"),
}
# How a whole training setup stores its state and computes: (state layout, activations).
# "bf16" is bf16 computation over float32 weights: torch.autocast (DDP), or FSDP2's
# MixedPrecisionPolicy with full sharding; "bf16_master" is ZeRO's.
PRECISIONS = {
    "fp32": ("fp32", "fp32"),
    "bf16": ("fp32", "bf16"),
    "bf16_master": ("bf16_master", "bf16"),
}


def state_bytes(
    parameters: int, layout: str = "fp32", sharding: str = "none", world_size: int = 1
) -> dict:
    """Bytes of weights, gradients and optimizer state (master copy + moments) on one rank.

    ``layout`` is one of :data:`STATE_LAYOUTS`, ``sharding`` one of :data:`SHARDINGS`; a
    sharded part is divided by ``world_size``.
    """
    if layout not in STATE_LAYOUTS:
        raise ValueError(f"layout {layout!r} is not one of {sorted(STATE_LAYOUTS)}.")
    if sharding not in SHARDINGS:
        raise ValueError(f"sharding {sharding!r} is not one of {list(SHARDINGS)}.")
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}.")
    per = {
        part: size / (world_size if part in SHARDINGS[sharding] else 1)
        for part, size in STATE_LAYOUTS[layout].items()
    }
    return {
        "weights": parameters * per["weights"],
        "grads": parameters * per["grads"],
        "optimizer": parameters * (per["master"] + per["moments"]),
    }


def gpt_parameters(config) -> int:
    """Parameters of :class:`helpers.gpt.GPT` (tied embedding counted once), from its shape.

    Per block: attention ``4C² (+4C)``, MLP ``8C² (+5C)``, two LayerNorms ``2C (+2C)``;
    the bracketed terms are biases. Plus token and position embeddings and the final LayerNorm.
    """
    c, n_layer, bias = config.n_embd, config.n_layer, config.bias
    block = 12 * c * c + (13 * c if bias else 2 * c)
    return (config.vocab_size + config.block_size) * c + n_layer * block + (2 * c if bias else c)


def _block_elements(b: int, t: int, c: int, h: int, precision: str) -> tuple[int, int]:
    """Elements one block saves for backward: ``(float32, bf16)``."""
    stats = 4 * b * t + b * h * t  # LayerNorm means and inverse deviations; attention's LSE
    if precision == "fp32":
        return 16 * b * t * c + stats, 0
    # autocast: the block input and the residual (LayerNorm inputs) stay float32; the linear
    # layers save bf16 copies of their inputs; Q/K/V, attention output, MLP hidden are bf16
    return 2 * b * t * c + stats, 14 * b * t * c


def _head_elements(b: int, t: int, c: int, v: int, precision: str) -> tuple[int, int]:
    """Elements the final LayerNorm, the head and the loss save: ``(float32, bf16)``.

    The log-softmax of the logits is float32 in both: autocast runs it in float32.
    """
    if precision == "fp32":
        return 2 * b * t * c + 2 * b * t + b * t * v, 0
    return b * t * c + 2 * b * t + b * t * v, b * t * c


def activation_bytes(
    config,
    batch_size: int,
    seq_len: int | None = None,
    precision: str = "fp32",
    checkpointing: bool = False,
) -> int:
    """Bytes autograd saves for the backward pass of the GPT on a (batch, seq_len) batch.

    Counted tensor by tensor for this implementation (fused attention, no dropout), per block:
    the block input, the two LayerNorm outputs, Q/K/V, the attention output, the residual,
    the MLP's hidden layer before and after the GELU: ``16·B·T·C`` elements, plus the LayerNorm
    statistics ``4·B·T`` and attention's log-sum-exp ``B·H·T``. Then the final LayerNorm and
    the head's input ``2·B·T·C + 2·B·T``, the log-softmax of the logits ``B·T·V``, and the
    int64 token ids, targets and positions, and one float32 scalar (the loss's total weight).
    ``precision="fp32"``: every float tensor float32; ``"bf16"``: under ``torch.autocast`` with
    bfloat16, where the block input and residual, the statistics and the log-softmax stay
    float32 and the rest is bf16 (the bf16 weight copies: :func:`bf16_copy_bytes`). Both are
    exact on the CPU (chapter 07 checks them). With ``checkpointing`` each block keeps only
    its input, and one block's activations are recomputed at a time in the backward pass.
    """
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision {precision!r} is not 'fp32' or 'bf16' (autocast).")
    b, t = batch_size, seq_len or config.block_size
    c, h, v = config.n_embd, config.n_head, config.vocab_size
    f32, f16 = _block_elements(b, t, c, h, precision)
    if checkpointing:  # every block's float32 input, and one block recomputed (input counted once)
        f32 = config.n_layer * b * t * c + f32 - b * t * c
    else:
        f32, f16 = config.n_layer * f32, config.n_layer * f16
    head32, head16 = _head_elements(b, t, c, v, precision)
    # + int64 token ids, targets and positions, and the loss's float32 total weight (a scalar)
    return 4 * (f32 + head32) + 2 * (f16 + head16) + 8 * (2 * b * t + t) + 4


def bf16_copy_bytes(config, sharding: str = "none") -> int:
    """Bytes of the bf16 copies of the matmul weights a bf16 forward over float32 weights holds.

    ``torch.autocast`` casts each linear layer's weight (the blocks' four, ``12·C²`` each, and
    the tied head's ``V·C``) and the layer saves the copy for its backward pass: all of them
    are alive from the end of the forward pass into the backward pass. FSDP2 with a
    MixedPrecisionPolicy (``sharding="full"``) gathers bf16 weights per block and frees them
    after use: two blocks' (the one running and the one prefetched), plus the root's head.
    """
    c = config.n_embd
    blocks = 2 if sharding == "full" else config.n_layer
    return 2 * (blocks * 12 * c * c + config.vocab_size * c)


def logit_bytes(config, batch_size: int) -> int:
    """Bytes of the float32 logits the loss is computed on: not saved, but alive at the loss.

    At the end of the forward pass (the peak of a step) they exist next to everything saved,
    their log-softmax included: 4 bytes per logit. In bf16 they are the float32 copy
    ``logits.float()`` (as ``helpers.train_gpt_ddp`` computes the loss); the bf16 logits are
    already freed when the log-softmax runs, if nothing else holds them.
    """
    return 4 * batch_size * config.block_size * config.vocab_size


def training_bytes(
    config,
    batch_size: int,
    precision: str = "fp32",
    sharding: str = "none",
    world_size: int = 1,
    checkpointing: bool = False,
) -> dict:
    """Bytes on one rank at the peak of a step: state, activations, bf16 weight copies, logits.

    ``precision`` is one of :data:`PRECISIONS`: ``"fp32"``; ``"bf16"`` (float32 state, bf16
    computation: torch.autocast, or FSDP2's MixedPrecisionPolicy with ``sharding="full"``);
    ``"bf16_master"`` (ZeRO's 16-bit weights with a float32 master copy; no copies to make).
    Activations of bf16 runs follow the autocast count; models that compute purely in bf16
    (ZeRO, FSDP2's policy) keep their residual stream in 16 bits: a little less.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {list(PRECISIONS)}.")
    layout, compute = PRECISIONS[precision]
    state = state_bytes(gpt_parameters(config), layout, sharding, world_size)
    acts = activation_bytes(config, batch_size, precision=compute, checkpointing=checkpointing)
    copies = bf16_copy_bytes(config, sharding) if precision == "bf16" else 0
    logits = logit_bytes(config, batch_size)
    parts = {**state, "activations": acts, "bf16_copies": copies, "logits": logits}
    return {**parts, "total": sum(parts.values())}


# --------------------------------------------------------------------------- measurement


def _storage_bytes(tensors) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views of one storage count once)."""
    seen = {}
    for t in tensors:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def held_bytes(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict:
    """Bytes the model's parameters, their gradients and the optimizer's state actually hold.

    ``optimizer`` splits into ``moments`` (state tensors shaped like a parameter, e.g. Adam's
    ``exp_avg`` and ``exp_avg_sq``) and ``other`` (e.g. Adam's one-element ``step`` counters).
    """
    params = list(model.parameters())
    out = {
        "weights": _storage_bytes(params),
        "grads": _storage_bytes(p.grad for p in params if p.grad is not None),
    }
    moments, other = [], []
    for param, state in optimizer.state.items() if optimizer is not None else []:
        for value in state.values():
            if isinstance(value, torch.Tensor):
                (moments if value.shape == param.shape else other).append(value)
    out["moments"], out["other"] = _storage_bytes(moments), _storage_bytes(other)
    return out


def saved_activation_bytes(fn, exclude: nn.Module | None = None):
    """Run ``fn()`` and return ``(its result, bytes of the tensors autograd saved for backward)``.

    Saved tensors are caught with ``torch.autograd.graph.saved_tensors_hooks`` and counted once
    per storage; the parameters of ``exclude`` (the model) are not activations and are skipped.
    Tensors kept by ``torch.utils.checkpoint`` regions are not seen: use :func:`peak_bytes`.
    """
    skip = {p.untyped_storage().data_ptr() for p in exclude.parameters()} if exclude else set()
    saved = []

    def pack(tensor):
        if tensor.untyped_storage().data_ptr() not in skip:
            saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        result = fn()
    return result, _storage_bytes(saved)


def peak_bytes(fn, device):
    """Run ``fn()`` and return ``(its result, the peak of memory allocated while it ran)``.

    The peak is counted above what was allocated when ``fn`` started. On CUDA it is
    ``torch.cuda.max_memory_allocated``; on the CPU the allocations and frees that the PyTorch
    profiler records (``profile_memory=True``), added up in time order. MPS is not supported:
    measure on the CPU there.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        result = fn()
        torch.cuda.synchronize(device)
        return result, torch.cuda.max_memory_allocated(device) - start
    if device.type != "cpu":
        raise ValueError(f"peak_bytes measures cuda or cpu, not {device.type}; use the CPU.")
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    events = sorted(
        (e for e in prof.events() if e.self_cpu_memory_usage),
        key=lambda e: e.time_range.start,
    )
    current = peak = 0
    for event in events:
        current += event.self_cpu_memory_usage
        peak = max(peak, current)
    return result, peak


# --------------------------------------------------------------------------- saving memory


def accumulate_gradients(model: nn.Module, micro_batches, loss_fn=None) -> float:
    """Backward over micro-batches so that the gradients equal those of one big batch.

    Each micro-batch's loss is a *sum* over its targets, divided by the number of targets in
    all micro-batches together (targets equal to -100 are ignored, as ``F.cross_entropy``
    does). Dividing each micro-batch's mean by k is the same only when every micro-batch has
    the same number of counted targets. Gradients are added to ``.grad`` (zero them first);
    returns the mean loss over all counted targets.
    """
    loss_fn = loss_fn or functools.partial(cross_entropy, reduction="sum")
    micro_batches = list(micro_batches)
    if not micro_batches:
        raise ValueError("accumulate_gradients needs at least one micro-batch.")
    total = torch.stack([(y != -100).sum() for _, y in micro_batches]).sum()
    if total.item() == 0:  # the loop below never waits for the device; the mean is read at the end
        raise ValueError("every target in the micro-batches is ignored (-100): nothing to learn.")
    loss_sum = torch.zeros((), device=total.device)
    for x, y in micro_batches:
        loss = loss_fn(model(x), y)
        (loss / total).backward()
        loss_sum += loss.detach().float()
    return (loss_sum / total).item()


def checkpoint_blocks(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Turn activation checkpointing of ``model.blocks`` on (or off again), in place.

    A checkpointed block keeps only its input for the backward pass and runs its forward again
    there (``torch.utils.checkpoint.checkpoint``, non-reentrant), trading computation for
    memory. Only training passes are checkpointed (gradients on, no KV cache); parameter names
    and the ``state_dict`` do not change.
    """
    from torch.utils.checkpoint import checkpoint

    if not hasattr(model, "blocks"):
        raise ValueError("checkpoint_blocks expects a model with .blocks (helpers.gpt.GPT).")
    for block in model.blocks:
        block.__dict__.pop("forward", None)  # back to the class's forward
        if not enabled:
            continue
        plain = block.forward

        def forward(x, cache=None, _plain=plain):
            if cache is None and torch.is_grad_enabled():
                return checkpoint(_plain, x, use_reentrant=False)
            return _plain(x, cache)

        block.forward = forward
    return model
