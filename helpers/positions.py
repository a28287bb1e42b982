"""Position information for attention: sinusoidal tables, rotary embeddings, ALiBi biases.

- :func:`sinusoidal` is the fixed table of the original transformer, added to the token vectors.
- :func:`rope_angles` (through :func:`rope_rotation`, which takes any frequencies) and
  :func:`apply_rope` rotate queries and keys by an angle proportional to
  their position (RoPE, Su et al. 2021), so that ``q_m · k_n`` depends on ``m - n`` only. The
  layout is the "rotate half" one of Llama and Hugging Face: dimension ``i`` pairs with ``i + d/2``.
- :func:`alibi_slopes` and :func:`alibi_bias` add ``-slope * distance`` to the attention scores
  (ALiBi, Press et al. 2022): no position vectors at all, a penalty for looking far back.

Chapter 04b develops each from its formula and checks it; :class:`helpers.gpt.GPT` uses them
through ``GPTConfig.position``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .loader import split_windows

POSITIONS = ("learned", "rope", "alibi")


def sinusoidal(n_positions: int, dim: int, dtype=torch.float32) -> torch.Tensor:
    """(n_positions, dim): sin in even dimensions, cos in odd ones, frequencies 10000^(-2i/dim)."""
    if dim % 2:
        raise ValueError(f"dim must be even (sin/cos pairs), got {dim}.")
    t = torch.arange(n_positions, dtype=dtype).unsqueeze(1)
    omega = 10000 ** (-torch.arange(0, dim, 2, dtype=dtype) / dim)
    table = torch.zeros(n_positions, dim, dtype=dtype)
    table[:, 0::2], table[:, 1::2] = torch.sin(t * omega), torch.cos(t * omega)
    return table


def rope_angles(
    positions: torch.Tensor, head_dim: int, base: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin, each (len(positions), head_dim), for :func:`apply_rope`.

    Pair ``i`` (dimensions ``i`` and ``i + head_dim/2``) turns by ``position * base^(-2i/d)``
    with ``d = head_dim``.
    The angles are computed in float32 whatever the model's dtype: a bf16 angle at position 1000
    would be off by several radians.
    """
    if head_dim % 2:
        raise ValueError(
            f"RoPE rotates pairs of dimensions: head_dim must be even, got {head_dim}."
        )
    inv_freq = base ** (-torch.arange(0, head_dim, 2, device=positions.device) / head_dim)
    return rope_rotation(positions, inv_freq)


def rope_rotation(positions: torch.Tensor, inv_freq: torch.Tensor):
    """cos and sin (T, 2 * len(inv_freq)): position times each pair's frequency, in float32,
    the same angle for dimensions i and i + head_dim/2 (a model may choose its frequencies:
    :func:`helpers.llama.rope_frequencies`)."""
    angles = positions.float().unsqueeze(1) * inv_freq  # (T, head_dim / 2)
    angles = torch.cat([angles, angles], dim=1)  # the same angle for i and i + head_dim / 2
    return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the last dimension: a quarter turn of every pair."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` (..., T, head_dim) by the angles of :func:`rope_angles` (T, head_dim)."""
    return (x.float() * cos + rotate_half(x.float()) * sin).to(x.dtype)


def alibi_slopes(n_head: int) -> torch.Tensor:
    """One slope per head, a geometric sequence: 2^(-8/n), 2^(-16/n), ..., 2^(-8) for n heads.

    For a number of heads that is not a power of two, ALiBi takes the slopes of the power of two
    below it and fills up with every other slope of the next one (the paper's code).
    """
    if n_head < 1:
        raise ValueError(f"n_head must be at least 1, got {n_head}.")

    def powers_of_two(n):
        return [2 ** (-8 * (i + 1) / n) for i in range(n)]

    below = 2 ** math.floor(math.log2(n_head))
    slopes = powers_of_two(below) + powers_of_two(2 * below)[0::2][: n_head - below]
    return torch.tensor(slopes)


def alibi_bias(n_head: int, n_query: int, n_key: int, device=None) -> torch.Tensor:
    """(n_head, n_query, n_key) additive scores: ``-slope * (i - j)`` for keys j <= i, else -inf.

    The queries are the last ``n_query`` of the ``n_key`` positions (with a KV cache, the keys
    hold the cached positions too), so query ``q`` sits at position ``n_key - n_query + q``.
    """
    i = torch.arange(n_key - n_query, n_key, device=device).unsqueeze(1)
    j = torch.arange(n_key, device=device).unsqueeze(0)
    distance = (i - j).float()
    bias = -alibi_slopes(n_head).to(device).view(-1, 1, 1) * distance
    return bias.masked_fill(distance < 0, float("-inf"))


@torch.inference_mode()
def token_losses(model, ids: torch.Tensor, length: int, batch_size: int = 16) -> torch.Tensor:
    """(windows, length): the loss of every next-token prediction in consecutive windows of ids.

    Row means are per-window losses (their spread gives a standard error), column means the loss
    at each position of a window: where a model trained on shorter windows starts to fail.
    """
    x, y = split_windows(ids, length)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    rows = []
    for i in range(0, len(x), batch_size):
        logits = model(x[i : i + batch_size].to(device)).float()
        targets = y[i : i + batch_size].to(device)
        rows.append(F.cross_entropy(logits.transpose(1, 2), targets, reduction="none").cpu())
    model.train(was_training)
    return torch.cat(rows)
