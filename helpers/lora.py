"""LoRA (low-rank adaptation, Hu et al. 2021) written by hand, for any ``nn.Linear``.

A frozen weight ``W`` (out × in) gets a trainable low-rank update: ``y = x Wᵀ + b + s · x Aᵀ Bᵀ``
with ``A`` (r × in, Kaiming-uniform), ``B`` (out × r, zeros) and the scale ``s = alpha / r``.
Because ``B`` starts at zero, a wrapped model computes exactly what the base model computes.

- :class:`LoRALinear` wraps one layer; ``merge()`` folds ``s · B A`` into ``W`` (no extra cost at
  inference), ``unmerge()`` takes it out again;
- :func:`apply_lora` wraps the linear layers whose names end with the given suffixes (e.g.
  ``"attn.qkv"``) and freezes everything else; :func:`merge_lora`, :func:`unmerge_lora`;
- :func:`adapter_state_dict` / :func:`load_adapter`: save only what was trained (the adapters
  and, say, a new head) and load it into a fresh copy of the base model;
- :func:`lora_parameter_count`: the formula ``r · (in + out)`` per wrapped layer.

The same layout as Hugging Face peft's ``lora.Linear`` (``lora_A``, ``lora_B``, ``scaling``).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn


class LoRALinear(nn.Module):
    """``base(x) + (alpha / r) · B(A(dropout(x)))``: ``base`` frozen, ``A`` and ``B`` trained."""

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16.0, dropout: float = 0.0):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise ValueError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}.")
        if r < 1 or alpha <= 0 or not 0 <= dropout < 1:
            raise ValueError(
                f"need r >= 1, alpha > 0 and 0 <= dropout < 1; got r={r}, alpha={alpha}, "
                f"dropout={dropout}."
            )
        self.base, self.r, self.alpha, self.scaling = base, r, alpha, alpha / r
        self.base.requires_grad_(False)
        weight = base.weight
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, device=weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, device=weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear (and peft) do
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def delta_weight(self) -> torch.Tensor:
        """The update ``(alpha / r) · B A``, shaped like the base weight (out × in)."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.merged:
            return out
        update = self.dropout(x) @ self.lora_A.transpose(0, 1) @ self.lora_B.transpose(0, 1)
        return out + update * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into the base weight: one matrix product at inference again."""
        if not self.merged:
            self.base.weight += self.delta_weight().to(self.base.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Take the update out of the base weight again (the original weight, up to rounding)."""
        if self.merged:
            self.base.weight -= self.delta_weight().to(self.base.weight.dtype)
            self.merged = False

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}, merged={self.merged}"


def _matches(name: str, targets) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def apply_lora(
    model: nn.Module, targets, r: int = 8, alpha: float = 16.0, dropout: float = 0.0, train=()
) -> list[str]:
    """Wrap every ``nn.Linear`` whose name ends with one of ``targets`` in a :class:`LoRALinear`.

    Every parameter of ``model`` is frozen first; then only the adapters, and the modules named in
    ``train`` (e.g. a new classification head), are trainable. Returns the wrapped names.
    """
    targets = [targets] if isinstance(targets, str) else list(targets)
    names = [
        n for n, m in model.named_modules() if isinstance(m, nn.Linear) and _matches(n, targets)
    ]
    if not names:
        linear = sorted(
            {
                n.rsplit(".", 1)[-1]
                for n, m in model.named_modules()
                if n and isinstance(m, nn.Linear)
            }
        )
        raise ValueError(
            f"no nn.Linear in {type(model).__name__} ends with {targets}; name suffixes of its "
            f"linear layers include {linear} (e.g. targets=['attn.qkv', 'attn.proj'])."
        )
    model.requires_grad_(False)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(getattr(parent, child), r, alpha, dropout))
    for name in [train] if isinstance(train, str) else train:
        model.get_submodule(name).requires_grad_(True)
    return names


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """The :class:`LoRALinear` layers of a model, by name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def merge_lora(model: nn.Module) -> nn.Module:
    """Merge every adapter into its base weight (see :meth:`LoRALinear.merge`)."""
    for layer in lora_layers(model).values():
        layer.merge()
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    """Undo :func:`merge_lora`."""
    for layer in lora_layers(model).values():
        layer.unmerge()
    return model


def lora_parameter_count(model: nn.Module) -> int:
    """``sum r · (in + out)`` over the wrapped layers: the adapters' parameters, by the formula."""
    return sum(m.r * (m.in_features + m.out_features) for m in lora_layers(model).values())


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the trainable tensors (adapters and any head trained with them), on the CPU."""
    if any(layer.merged for layer in lora_layers(model).values()):
        raise ValueError("unmerge the adapters first (unmerge_lora): merged weights are not saved.")
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def save_adapter(model: nn.Module, path, **extra) -> Path:
    """Write :func:`adapter_state_dict` (and ``extra`` plain values, e.g. r, targets) to a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"adapter": adapter_state_dict(model), **extra}, path)
    return path


def load_adapter(model: nn.Module, state) -> nn.Module:
    """Load an adapter (a path or a dict from :func:`adapter_state_dict`) into a wrapped model.

    ``model`` must already carry the same adapters (:func:`apply_lora` with the same targets and
    r) on a fresh copy of the base model; every saved tensor must find its place.
    """
    if not isinstance(state, dict):
        state = torch.load(state, map_location="cpu", weights_only=True)["adapter"]
    params = dict(model.named_parameters())
    missing = sorted(set(state) - set(params))
    if missing:
        raise ValueError(
            f"the adapter has tensors {missing[:5]} that the model lacks: apply_lora() with the "
            "same targets (and add the same head) before loading."
        )
    with torch.no_grad():
        for name, value in state.items():
            if params[name].shape != value.shape:
                raise ValueError(
                    f"{name}: saved shape {tuple(value.shape)}, model {tuple(params[name].shape)}"
                    " (was the adapter saved with another r?)."
                )
            params[name].copy_(value)
    return model
