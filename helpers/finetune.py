"""Fine-tuning a pretrained network (chapter 05): freeze, replace the head, train, measure.

- freezing by module name (:func:`freeze`, :func:`unfreeze`), and BatchNorm layers whose
  parameters are all frozen kept in eval mode (:func:`keep_frozen_batchnorm_in_eval`);
- the new head and the features: :func:`replace_head`, :func:`with_head`,
  :func:`feature_extractor`, :func:`extract_features`;
- per-layer learning rates (discriminative fine-tuning): :func:`layer_groups`;
- label budgets: :func:`stratified_indices` (stratified, nested, reproducible from a seed);
- the chapter's strategies at one budget: :func:`train_linear_probe` on cached features,
  :func:`finetune` for the others; :func:`sweep` runs every strategy at every budget and seed,
  :func:`summarize` gives the medians (``benchmarks/transfer.py`` prints them);
- the source model: :func:`load_source` loads chapter 02's MNIST checkpoint, and trains it
  with chapter 02's recipe (:func:`pretrain_mnist`) when it is missing; :func:`train_source`
  applies that recipe to any image set (the chapter's related-source control).

Trainable-parameter counts: :func:`helpers.summary.count_parameters`.
"""

from __future__ import annotations

import copy
import functools
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from . import optim
from .augment import normalize
from .checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from .config import Config
from .env import pick
from .loader import TensorLoader
from .models import ConvNet
from .precision import choose
from .summary import count_parameters
from .train import evaluate, fit

STRATEGIES = {
    "scratch": "a new network, every layer trained from random weights",
    "linear_probe": "pretrained body frozen; only a new linear head trained (on cached features)",
    "last_block": "the last block and a new head trained; the earlier blocks frozen",
    "full": "every layer trained, earlier layers at smaller learning rates",
    "lp_ft": "a linear probe first, then every layer, starting from the probe's head",
    "gradual": "the head first, then one more block unfrozen every phase (ULMFiT)",
}
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


# ----------------------------------------------------------------------------- head and features


def _split_head(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if not isinstance(getattr(parent, child, None), nn.Linear):
        raise ValueError(
            f"{type(model).__name__} has no linear layer at {name!r}; pass head='path.to.fc' "
            "naming the classifier to replace."
        )
    return parent, child


def replace_head(
    model: nn.Module, num_classes: int, *, head: str = "head.fc", std=None
) -> nn.Linear:
    """Put a new ``nn.Linear`` classifier in place of ``model.<head>``; return the old one.

    The new layer's input size is read from the old layer (never typed in), and it lives on the
    old layer's device. Its weights get PyTorch's default initialisation (uniform in
    ``±1/sqrt(in_features)``), or ``normal(0, std)`` with a zero bias when ``std`` is given.
    """
    parent, child = _split_head(model, head)
    old = getattr(parent, child)
    new = nn.Linear(old.in_features, num_classes).to(old.weight.device)
    if std is not None:
        nn.init.normal_(new.weight, 0.0, std)
        nn.init.zeros_(new.bias)
    setattr(parent, child, new)
    return old


def with_head(model: nn.Module, fc: nn.Linear, *, head: str = "head.fc") -> nn.Module:
    """A copy of ``model`` with a copy of ``fc`` as its classifier (e.g. the source task's head)."""
    model = copy.deepcopy(model)
    parent, child = _split_head(model, head)
    setattr(parent, child, copy.deepcopy(fc))
    return model


def feature_extractor(model: nn.Sequential) -> nn.Sequential:
    """Everything before the final linear layer of a :class:`ConvNet`, sharing its modules."""
    children = list(model.children())
    if not isinstance(model, nn.Sequential) or not isinstance(children[-1], nn.Sequential):
        raise ValueError(
            "feature_extractor() expects a ConvNet-like nn.Sequential whose last module is a "
            "head (nn.Sequential) ending in the classifier."
        )
    return nn.Sequential(*children[:-1], *list(children[-1].children())[:-1])


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

    ``layers`` are the model's top-level modules from input to output (default: all of them); the
    last trains at ``lr``, each earlier one at ``decay`` times the next: ``lr · decay^depth``.
    Inside a layer, weight decay goes to weights with 2 or more dimensions only (the rule of
    :func:`helpers.optim.param_groups`). Each group is ``{"params", "lr", "weight_decay",
    "name"}``; ``trainable_only=False`` also lists frozen parameters (gradual unfreezing: the
    optimizer skips a parameter until it has a gradient).
    """
    if lr <= 0 or not 0 < decay <= 1:
        raise ValueError(f"need lr > 0 and 0 < decay <= 1, got lr={lr} and decay={decay}.")
    names = [n for n, _ in model.named_children()] if layers is None else list(layers)
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


# ----------------------------------------------------------------------------- strategies


@dataclass(frozen=True)
class FinetuneSettings(Config):
    """How one strategy trains: AdamW, a warmup + cosine schedule, per-layer learning rates."""

    lr: float = 3e-3  # the head's peak learning rate
    layer_decay: float = 1.0  # each earlier layer: this times the next one's rate
    weight_decay: float = 0.01  # on matrices and kernels only
    warmup: float = 0.1  # fraction of the steps spent warming up
    min_lr_ratio: float = 0.01  # the last step's rate, as a fraction of the peak


def plan(per_class: int, num_classes: int = 10, scale: float = 1.0) -> tuple[int, int]:
    """(batch size, optimizer steps) for a label budget: every strategy gets the same.

    Batches of up to 128 (half the set for tiny ones); the steps grow slowly with the set:
    150 · (n / 100)^0.25, i.e. 150 steps for 100 examples, 267 for 1,000, 474 for 10,000.
    ``scale`` shrinks the steps (quick mode).
    """
    n = per_class * num_classes
    batch = max(2, min(128, n // 2))
    return batch, max(8, round(scale * 150 * (n / 100) ** 0.25))


def _optimizer(groups: list[dict], settings: FinetuneSettings, steps: int):
    optimizer = optim.make_optimizer(groups, "adamw", settings.lr)
    schedule = optim.make_schedule(
        optimizer, "cosine", steps, warmup=settings.warmup, min_lr_ratio=settings.min_lr_ratio
    )
    return optimizer, schedule


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


def train_linear_probe(
    features,
    labels,
    settings: FinetuneSettings,
    *,
    steps: int,
    batch_size: int,
    seed: int = 0,
    num_classes: int = 10,
) -> tuple[nn.Linear, float]:
    """A linear classifier on cached features; returns (the layer, training seconds).

    Seeded like :func:`finetune` ("linear_probe"), so both give the same layer for the same data.
    """
    torch.manual_seed(seed)
    head = nn.Linear(features.shape[1], num_classes).to(features.device)
    groups = [
        {"params": [head.weight], "lr": settings.lr, "weight_decay": settings.weight_decay},
        {"params": [head.bias], "lr": settings.lr, "weight_decay": 0.0},
    ]
    optimizer, schedule = _optimizer(groups, settings, steps)
    loader = shuffled_loader(features, labels, batch_size, seed)
    history = fit(head, loader, optimizer, steps=steps, scheduler=schedule, progress=False)
    return head, history["seconds"][-1]


def _start_model(
    strategy: str, source: nn.Module, num_classes: int, head
) -> tuple[nn.Module, list]:
    """The model a strategy starts from, frozen as it starts, and its unfreezing phases."""
    device = next(source.parameters()).device
    if strategy == "scratch":
        model = ConvNet(**{**source.config, "num_classes": num_classes})
        return model.to(device, memory_format=torch.channels_last), [[]]
    model = copy.deepcopy(source)
    replace_head(model, num_classes)
    if strategy == "lp_ft":
        if head is None:
            raise ValueError("lp_ft starts from a trained linear probe: pass head=probe.")
        model.head.fc.load_state_dict(head.state_dict())
    body = [n for n, _ in model.named_children()][:-1]
    frozen = {"linear_probe": body, "last_block": body[:-1], "gradual": body}.get(strategy, [])
    freeze(model, frozen)
    keep_frozen_batchnorm_in_eval(model)
    phases = [[]] + [[name] for name in reversed(body)] if strategy == "gradual" else [[]]
    return model, phases


def _merge(total: dict, part: dict, offset: int, seconds: float) -> None:
    for key, values in part.items():
        if key == "step":
            values = [v + offset for v in values]
        elif key == "seconds":
            values = [v + seconds for v in values]
        total.setdefault(key, []).extend(values)


def finetune(
    strategy: str,
    source: nn.Module,
    images,
    labels,
    settings: FinetuneSettings,
    *,
    steps: int,
    batch_size: int,
    transform=None,
    seed: int = 0,
    head: nn.Linear | None = None,
    num_classes: int = 10,
    val_loader=None,
    eval_every: int | None = None,
) -> tuple[nn.Module, dict]:
    """Train a copy of ``source`` (or a new network) on a labelled set with one strategy.

    ``strategy`` is a key of :data:`STRATEGIES`; ``lp_ft`` needs ``head``, a trained linear probe
    (:func:`train_linear_probe`). Every strategy makes ``steps`` optimizer steps of
    ``batch_size`` examples (``gradual``: in equal phases, one more block unfrozen per phase).
    Frozen BatchNorm layers stay in eval mode. Returns (model, history of :func:`fit`, merged
    over the phases; ``history["seconds"][-1]`` is the training time).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy {strategy!r} is not one of {list(STRATEGIES)}.")
    torch.manual_seed(seed)
    model, phases = _start_model(strategy, source, num_classes, head)
    groups = layer_groups(
        model,
        settings.lr,
        decay=settings.layer_decay,
        weight_decay=settings.weight_decay,
        trainable_only=strategy != "gradual",
    )
    optimizer, schedule = _optimizer(groups, settings, steps)
    loader = shuffled_loader(images, labels, batch_size, seed, transform)
    history, done = {}, 0
    for i, names in enumerate(phases):
        unfreeze(model, names)
        n = round(steps * (i + 1) / len(phases)) - done
        part = fit(
            model,
            loader,
            optimizer,
            steps=n,
            scheduler=schedule,
            val_loader=val_loader,
            eval_every=eval_every,
            progress=False,
        )
        _merge(history, part, done, history["seconds"][-1] if history else 0.0)
        done += n
    return model, history


# ----------------------------------------------------------------------------- the budget sweep


@dataclass
class TransferTask:
    """The target task as tensors on the device, its cached features, and the source task."""

    train_images: torch.Tensor  # the labelled pool (uint8 N×1×28×28), validation excluded
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    transform: Callable  # uint8 target images -> normalised float
    source_images: torch.Tensor  # the source task's test set, for forgetting
    source_labels: torch.Tensor
    source_transform: Callable
    train_features: torch.Tensor | None = None  # of the pretrained body, see cache_features()
    test_features: torch.Tensor | None = None

    def cache_features(self, source: nn.Module) -> float:
        """Compute the pretrained features of the pool and the test set once; return seconds."""
        import time

        from .device import sync

        extractor = feature_extractor(source)
        start = time.perf_counter()
        self.train_features = extract_features(extractor, self.train_images, self.transform)
        self.test_features = extract_features(extractor, self.test_images, self.transform)
        sync(self.train_features.device)
        return time.perf_counter() - start


def _accuracy(model, images, labels, transform=None) -> float:
    return evaluate(model, TensorLoader(images, labels, batch_size=1000, transform=transform))[
        "accuracy"
    ]


def _run_budget(task: TransferTask, source, per_class, seed, settings, strategies, scale) -> list:
    """Every strategy at one budget and seed: one row each, the test set read once per model."""
    num_classes = int(task.train_labels.max()) + 1
    batch, steps = plan(per_class, num_classes, scale=scale)
    idx = stratified_indices(task.train_labels, per_class, seed).to(task.train_labels.device)
    x, y = task.train_images[idx], task.train_labels[idx]
    plan_kw = dict(steps=steps, batch_size=batch, seed=seed, num_classes=num_classes)
    probe, probe_seconds = train_linear_probe(
        task.train_features[idx], y, settings["linear_probe"], **plan_kw
    )
    source_accuracy = functools.partial(
        _accuracy,
        images=task.source_images,
        labels=task.source_labels,
        transform=task.source_transform,
    )
    rows = []
    for strategy in strategies:
        row = {"strategy": strategy, "per_class": per_class, "seed": seed, "steps": steps}
        if strategy == "linear_probe":
            model, seconds = probe, probe_seconds
            test = _accuracy(probe, task.test_features, task.test_labels)
            row.update(trainable_parameters=count_parameters(probe))
        else:
            model, history = finetune(
                strategy,
                source,
                x,
                y,
                settings[strategy],
                head=probe,
                transform=task.transform,
                **plan_kw,
            )
            seconds = history["seconds"][-1] + (probe_seconds if strategy == "lp_ft" else 0.0)
            test = _accuracy(model, task.test_images, task.test_labels, task.transform)
            row.update(trainable_parameters=count_parameters(model))
            if strategy != "scratch":
                row["source_accuracy"] = source_accuracy(with_head(model, source.head.fc))
        rows.append({**row, "test_accuracy": test, "train_seconds": seconds, "model": model})
    return rows


def sweep(
    source: nn.Module,
    task: TransferTask,
    settings: dict,
    *,
    budgets,
    seeds,
    strategies=None,
    scale: float = 1.0,
    log: Callable | None = None,
) -> list[dict]:
    """Every strategy at every label budget (examples per class) and seed; one row per model.

    ``seeds`` is a list, or a dict ``{per_class: seeds}``. ``settings`` maps each strategy (and
    "linear_probe", which lp_ft starts from) to its :class:`FinetuneSettings`. A row holds the
    ``strategy``, ``per_class``, ``seed``, ``steps``, ``test_accuracy``, ``train_seconds``,
    ``trainable_parameters``, ``source_accuracy`` (the source task through its own head, for the
    strategies that change the body) and the trained ``model``.
    """
    strategies = list(strategies or STRATEGIES)
    if task.train_features is None:
        task.cache_features(source)
    rows = []
    for per_class in budgets:
        for seed in seeds[per_class] if isinstance(seeds, dict) else seeds:
            rows += _run_budget(task, source, per_class, seed, settings, strategies, scale)
        if log is not None:
            medians = summarize([r for r in rows if r["per_class"] == per_class])
            log(
                f"{per_class:>5} per class, median test accuracy: "
                + ", ".join(f"{s} {medians[s, per_class]['median']:.3f}" for s in strategies)
            )
    return rows


def summarize(rows: list[dict], key: str = "test_accuracy") -> dict:
    """``{(strategy, per_class): {"median", "min", "max", "n", "seconds"}}`` over the seeds."""
    table = {}
    for row in rows:
        table.setdefault((row["strategy"], row["per_class"]), []).append(row)
    out = {}
    for cell, group in table.items():
        values = [r[key] for r in group if r.get(key) is not None]
        if values:
            out[cell] = {
                "median": statistics.median(values),
                "min": min(values),
                "max": max(values),
                "n": len(values),
                "seconds": statistics.median(r["train_seconds"] for r in group),
            }
    return out


# ----------------------------------------------------------------------------- the source model


def train_source(images, labels, transform, device, *, epochs: int, progress=None) -> ConvNet:
    """Chapter 02's recipe on any uint8 image set: a :class:`ConvNet` for its classes.

    ConvNet (16-32-64, channels_last), AdamW (peak learning rate 1e-2, weight decay 0.01) with a
    one-cycle schedule (a quarter warm-up), batch 128, ``epochs`` epochs, seed 0.
    """
    torch.manual_seed(0)
    num_classes = int(labels.max()) + 1
    model = ConvNet(
        in_channels=images.shape[1], num_classes=num_classes, image_size=images.shape[-1]
    )
    model = model.to(device, memory_format=torch.channels_last)
    loader = shuffled_loader(images.to(device), labels.to(device), 128, 0, transform)
    optimizer = optim.make_optimizer(model, "adamw", 1e-2, weight_decay=0.01)
    schedule = optim.make_schedule(
        optimizer, "onecycle", epochs * len(loader), warmup=0.25, min_lr_ratio=1e-3
    )
    fit(model, loader, optimizer, epochs=epochs, scheduler=schedule, progress=progress)
    return model


def pretrain_mnist(device, *, epochs: int | None = None, progress=None):
    """Train chapter 02's recipe and save it where chapter 02 does; return the checkpoint path.

    :func:`train_source` on the 55,000 MNIST training images left after chapter 02's 5,000
    validation images (6,000 in quick mode), normalised with their own mean and std, for 5
    epochs (1 in quick mode).
    """
    from .data import as_tensors, mnist

    train_set = mnist(train=True)
    split = torch.randperm(len(train_set.data), generator=torch.Generator().manual_seed(0))
    train_idx = split[5_000:][: pick(full=55_000, quick=6_000)]
    images, labels = as_tensors(train_set)
    pixels = images[train_idx].float() / 255
    mean, std = pixels.mean().item(), pixels.std().item()
    transform = functools.partial(normalize, mean=(mean,), std=(std,))
    epochs = epochs or pick(full=5, quick=1)
    model = train_source(
        images[train_idx], labels[train_idx], transform, device, epochs=epochs, progress=progress
    )
    test_images, test_labels = (t.to(device) for t in as_tensors(mnist(train=False)))
    accuracy = _accuracy(model, test_images, test_labels, transform)
    config = {
        "model": model.config,
        "mean": mean,
        "std": std,
        "epochs": epochs,
        "max_lr": 1e-2,
        "batch_size": 128,
        "test_accuracy": accuracy,
        "trained_by": "helpers.finetune",
    }
    return save_checkpoint(checkpoint_path("mnist_cnn"), model, epoch=epochs, config=config)


def load_source(device, *, progress=None, verbose: bool = True) -> tuple[ConvNet, dict]:
    """Chapter 02's MNIST model and its config, trained first when its checkpoint is missing."""
    path = checkpoint_path("mnist_cnn")
    if not path.exists():
        if verbose:
            print(f"No chapter 02 checkpoint at {path}: training chapter 02's recipe first.")
        pretrain_mnist(device, progress=progress)
    elif verbose:
        print(f"Loading chapter 02's model from {path}")
    state = load_checkpoint(path)
    model = ConvNet(**state["config"]["model"])
    model.load_state_dict(state["model"])
    return model.to(device, memory_format=torch.channels_last), state["config"]
