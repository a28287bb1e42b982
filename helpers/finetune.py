"""Fine-tuning tools for any classifier: freeze, replace the head, group the layers, subsample.

- a model's anatomy: :func:`anatomy` names its body layers (input to output) and its classifier
  (a model states them in ``transfer_layers()``: :class:`helpers.models.ConvNet` and
  :class:`helpers.models.ResNet` do);
- freezing by module name (:func:`freeze`, :func:`unfreeze`), and BatchNorm layers whose
  parameters are all frozen kept in eval mode (:func:`keep_frozen_batchnorm_in_eval`);
- the new head and the features: :func:`classifier`, :func:`replace_head`, :func:`with_head`,
  :func:`feature_extractor`, :func:`extract_features`;
- per-layer learning rates (discriminative fine-tuning): :func:`layer_groups`;
- label budgets: :func:`stratified_indices` (stratified, nested, reproducible from a seed), and
  seeded batches: :func:`shuffled_loader`.

Chapter 05's experiment (the strategies, the budget sweep) is :mod:`helpers.transfer`; the
pretrained models themselves come from :mod:`helpers.pretrained`. Trainable-parameter counts:
:func:`helpers.summary.count_parameters`.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .loader import TensorLoader
from .precision import choose

BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)

# ----------------------------------------------------------------------------- freezing


def _modules(model: nn.Module, names) -> list[nn.Module]:
    """The modules called ``names`` (dotted paths such as ``"block3"`` or ``"head.fc"``)."""
    if names is None:
        return [model]
    names = [names] if isinstance(names, str) else list(names)
    known = dict(model.named_modules())
    unknown = [n for n in names if n not in known or n == ""]
    if unknown:
        top = [n for n, _ in model.named_children()]
        raise ValueError(
            f"no module named {unknown} in {type(model).__name__}; its top-level modules are "
            f"{top} (use dotted names such as 'head.fc' for deeper ones, or None for all)."
        )
    return [known[n] for n in names]


def freeze(model: nn.Module, names=None) -> nn.Module:
    """``requires_grad_(False)`` on every parameter of the named modules (all when ``None``)."""
    for module in _modules(model, names):
        module.requires_grad_(False)
    return model


def unfreeze(model: nn.Module, names=None) -> nn.Module:
    """``requires_grad_(True)`` on every parameter of the named modules (all when ``None``)."""
    for module in _modules(model, names):
        module.requires_grad_(True)
    return model


def is_frozen(module: nn.Module) -> bool:
    """True when the module has parameters and none of them requires a gradient."""
    flags = [p.requires_grad for p in module.parameters()]
    return bool(flags) and not any(flags)


def _eval_if_frozen(module: nn.Module, args) -> None:
    if module.training and is_frozen(module):
        module.eval()  # normalise with the stored statistics, and leave them as they are


def keep_frozen_batchnorm_in_eval(model: nn.Module) -> list:
    """Make every BatchNorm layer whose parameters are all frozen run in eval mode.

    ``model.train()`` (which ``fit`` calls, and ``evaluate`` restores) puts every layer in
    training mode; a BatchNorm layer in training mode normalises with the batch's statistics and
    moves its running statistics towards them, so a "frozen" layer would still change. A forward
    pre-hook puts such a layer back in eval mode before every call; unfreezing it (gradual
    unfreezing) lets it train normally again. Returns the hook handles (``.remove()`` them to undo).
    """
    return [
        m.register_forward_pre_hook(_eval_if_frozen)
        for m in model.modules()
        if isinstance(m, BATCHNORM)
    ]


# ----------------------------------------------------------------------------- anatomy


def anatomy(model: nn.Module) -> tuple[list[str], str]:
    """``(body, head)``: the names of the body's layers, input to output, and of the classifier.

    Read from ``model.transfer_layers()``, whose last name is the classifier (an ``nn.Linear``);
    e.g. ConvNet: ``(["block1", "block2", "block3"], "head.fc")``, ResNet:
    ``(["stem", "groups.0", "groups.1", "groups.2"], "head")``.
    """
    if not hasattr(model, "transfer_layers"):
        raise ValueError(
            f"{type(model).__name__} does not name its layers: give it a transfer_layers() method "
            "returning the body's module names (input to output) and then the classifier's, "
            "or pass head=/layers= explicitly."
        )
    *body, head = model.transfer_layers()
    return body, head


def _head_name(model: nn.Module, head: str | None) -> str:
    return head if head is not None else anatomy(model)[1]


def _split_head(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if not isinstance(getattr(parent, child, None), nn.Linear):
        raise ValueError(
            f"{type(model).__name__} has no linear layer at {name!r}; pass head='path.to.fc' "
            "naming the classifier to replace."
        )
    return parent, child


def classifier(model: nn.Module, head: str | None = None) -> nn.Linear:
    """The model's classifier (its last ``nn.Linear``, named by :func:`anatomy` or ``head``)."""
    parent, child = _split_head(model, _head_name(model, head))
    return getattr(parent, child)


def replace_head(
    model: nn.Module, num_classes: int, *, head: str | None = None, std=None
) -> nn.Linear:
    """Put a new ``nn.Linear`` classifier in place of the old one; return the old one.

    The new layer's input size and whether it has a bias are read from the old layer (never typed
    in), and it lives on the old layer's device. Its weights get PyTorch's default initialisation
    (uniform in ``±1/sqrt(in_features)``), or ``normal(0, std)`` with a zero bias when ``std`` is
    given.
    """
    parent, child = _split_head(model, _head_name(model, head))
    old = getattr(parent, child)
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    new = new.to(old.weight.device)
    if std is not None:
        nn.init.normal_(new.weight, 0.0, std)
        if new.bias is not None:
            nn.init.zeros_(new.bias)
    setattr(parent, child, new)
    return old


def with_head(model: nn.Module, fc: nn.Linear, *, head: str | None = None) -> nn.Module:
    """A copy of ``model`` with a copy of ``fc`` as its classifier (e.g. the source task's head)."""
    model = copy.deepcopy(model)
    parent, child = _split_head(model, _head_name(model, head))
    setattr(parent, child, copy.deepcopy(fc))
    return model


class Features(nn.Module):
    """``model.features(x)``: the input of the classifier, sharing the model's modules."""

    def __init__(self, model: nn.Module):
        super().__init__()
        if not hasattr(model, "features"):
            raise ValueError(
                f"{type(model).__name__} has no features() method returning the classifier's "
                "input; add one (ConvNet and ResNet have it)."
            )
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x)


def feature_extractor(model: nn.Module) -> Features:
    """Everything before the classifier, as a module that shares the model's layers."""
    return Features(model)


def logit_scale(model: nn.Module) -> float:
    """The factor the model multiplies its classifier's output by (ResNet: 1/9; else 1)."""
    return float(getattr(model, "scale", 1.0))


class ScaledLinear(nn.Module):
    """``scale · fc(x)``: a classifier on cached features that computes what the model computes."""

    def __init__(self, fc: nn.Linear, scale: float = 1.0):
        super().__init__()
        self.fc, self.scale = fc, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) * self.scale


@torch.no_grad()
def extract_features(extractor: nn.Module, images, transform=None, batch_size: int = 1000):
    """Features of ``images`` (float32, on their device), the extractor in eval mode."""
    policy = choose(images.device)
    was_training = extractor.training
    extractor.eval()
    out = []
    for batch in images.split(batch_size):
        with policy.autocast():
            out.append(extractor(transform(batch) if transform else batch).float())
    extractor.train(was_training)
    return torch.cat(out)


# ----------------------------------------------------------------------------- parameter groups


def default_layers(model: nn.Module) -> list[str]:
    """The layers :func:`layer_groups` uses: the anatomy's body and the classifier's top module."""
    if hasattr(model, "transfer_layers"):
        body, head = anatomy(model)
        return body + [head.split(".")[0]]
    return [n for n, _ in model.named_children()]


def layer_groups(
    model: nn.Module,
    lr: float,
    *,
    decay: float = 1.0,
    weight_decay: float = 0.0,
    layers=None,
    trainable_only: bool = True,
) -> list[dict]:
    """Optimizer groups with per-layer learning rates (discriminative fine-tuning).

    ``layers`` are module names from input to output (default: :func:`default_layers`); the last
    trains at ``lr``, each earlier one at ``decay`` times the next: ``lr · decay^depth``.
    Inside a layer, weight decay goes to weights with 2 or more dimensions only (the rule of
    :func:`helpers.optim.param_groups`). Each group is ``{"params", "lr", "weight_decay",
    "name"}``; ``trainable_only=False`` also lists frozen parameters (gradual unfreezing: the
    optimizer skips a parameter until it has a gradient).
    """
    if lr <= 0 or not 0 < decay <= 1:
        raise ValueError(f"need lr > 0 and 0 < decay <= 1, got lr={lr} and decay={decay}.")
    names = list(layers) if layers is not None else default_layers(model)
    modules = _modules(model, names)
    covered = {id(p) for m in modules for p in m.parameters()}
    missing = [n for n, p in model.named_parameters() if id(p) not in covered]
    if missing:
        raise ValueError(f"parameters {missing} are in none of the layers {names}; list them all.")
    groups = []
    for depth, (name, module) in enumerate(zip(reversed(names), reversed(modules))):
        params = [p for p in module.parameters() if p.requires_grad or not trainable_only]
        rate = lr * decay**depth
        for suffix, chosen, wd in (
            ("", [p for p in params if p.dim() >= 2], weight_decay),
            (" (no decay)", [p for p in params if p.dim() < 2], 0.0),
        ):
            if chosen:
                groups.append(
                    {"params": chosen, "lr": rate, "weight_decay": wd, "name": name + suffix}
                )
    if not groups:
        raise ValueError("the model has no trainable parameters: unfreeze some layers first.")
    return groups


# ----------------------------------------------------------------------------- label budgets


def stratified_indices(
    labels: torch.Tensor, per_class: int, seed: int, *, exclude=None
) -> torch.Tensor:
    """``per_class`` random indices of every class, none of them in ``exclude`` (sorted, CPU).

    Reproducible from ``seed``; with the same seed and ``exclude``, a larger ``per_class`` gives
    a superset (nested budgets: the 10 examples of a class are among its 100).
    """
    labels = torch.as_tensor(labels).cpu()
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}.")
    allowed = torch.ones(len(labels), dtype=torch.bool)
    if exclude is not None:
        allowed[torch.as_tensor(exclude).cpu().long()] = False
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c in labels.unique().tolist():
        pool = (allowed & (labels == c)).nonzero().squeeze(1)
        if len(pool) < per_class:
            raise ValueError(
                f"class {c} has only {len(pool)} examples left (after exclude); ask for at most "
                f"{len(pool)} per class."
            )
        chosen.append(pool[torch.randperm(len(pool), generator=generator)[:per_class]])
    return torch.cat(chosen).sort().values


# ----------------------------------------------------------------------------- batches


def shuffled_loader(x, y, batch_size: int, seed: int, transform=None) -> TensorLoader:
    """Shuffled batches of at most ``batch_size`` (the last incomplete one dropped), seeded."""
    return TensorLoader(
        x,
        y,
        batch_size=min(batch_size, len(x)),
        shuffle=True,
        drop_last=True,
        transform=transform,
        generator=torch.Generator().manual_seed(seed),
    )
