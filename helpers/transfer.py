"""Chapter 05's experiment: six fine-tuning strategies at every label budget, several seeds.

- :data:`STRATEGIES` and their settings (:class:`FinetuneSettings`); :func:`plan` gives every
  strategy the same batch size and number of steps for a label budget;
- the strategy trainers share one contract, settings in, model and history out:
  :func:`train_linear_probe` (on cached features) and :func:`finetune` (every strategy);
- :class:`TransferTask` holds the target task (and the source task, to measure forgetting);
  :func:`sweep` runs every strategy at every budget and seed, the test split read once per model;
  :func:`summarize` gives median, range, mean and standard error over the seeds.

The tools these use (freezing, heads, layer groups, stratified subsets) are
:mod:`helpers.finetune`; the pretrained source models, :mod:`helpers.pretrained`.
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
from .config import Config
from .finetune import (
    ScaledLinear,
    anatomy,
    classifier,
    extract_features,
    feature_extractor,
    freeze,
    keep_frozen_batchnorm_in_eval,
    layer_groups,
    logit_scale,
    replace_head,
    shuffled_loader,
    stratified_indices,
    unfreeze,
    with_head,
)
from .loader import TensorLoader
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


def train_linear_probe(
    features,
    labels,
    settings: FinetuneSettings,
    *,
    steps: int,
    batch_size: int,
    seed: int = 0,
    num_classes: int = 10,
    like: nn.Module | None = None,
) -> tuple[ScaledLinear, dict]:
    """A linear classifier on cached features; returns (the classifier, the history of ``fit``).

    ``like`` is the pretrained model: the new layer copies its classifier's bias setting and logit
    scale, so ``probe.fc`` can be put on that model as its head and compute the same logits.
    Seeded like :func:`finetune` ("linear_probe"), so both give the same layer for the same data.
    """
    torch.manual_seed(seed)
    bias = like is None or classifier(like).bias is not None
    fc = nn.Linear(features.shape[1], num_classes, bias=bias).to(features.device)
    probe = ScaledLinear(fc, logit_scale(like) if like is not None else 1.0)
    groups = [{"params": [fc.weight], "lr": settings.lr, "weight_decay": settings.weight_decay}]
    if bias:
        groups.append({"params": [fc.bias], "lr": settings.lr, "weight_decay": 0.0})
    optimizer, schedule = _optimizer(groups, settings, steps)
    loader = shuffled_loader(features, labels, batch_size, seed)
    history = fit(probe, loader, optimizer, steps=steps, scheduler=schedule, progress=False)
    return probe, history


def _start_model(
    strategy: str, source: nn.Module, num_classes: int, head, new_model, images
) -> tuple[nn.Module, list]:
    """The model a strategy starts from, frozen as it starts, and its unfreezing phases."""
    device = next(source.parameters()).device
    if strategy == "scratch":
        if new_model is None:
            raise ValueError("scratch builds a new network: pass new_model=(images -> model).")
        return new_model(images).to(device, memory_format=torch.channels_last), [[]]
    model = copy.deepcopy(source)
    replace_head(model, num_classes)
    body, head_name = anatomy(model)
    if strategy == "lp_ft":
        if head is None:
            raise ValueError("lp_ft starts from a trained linear probe: pass head=probe.fc.")
        classifier(model).load_state_dict(head.state_dict())
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
    new_model: Callable | None = None,
    val_loader=None,
    eval_every: int | None = None,
) -> tuple[nn.Module, dict]:
    """Train a copy of ``source`` (or a new network) on a labelled set with one strategy.

    ``strategy`` is a key of :data:`STRATEGIES`; ``lp_ft`` needs ``head``, a trained linear probe's
    layer (``train_linear_probe(...)[0].fc``); ``scratch`` needs ``new_model``, a function from the
    labelled images to a fresh network (some recipes fit a layer to the data, as the ResNet's
    whitening stem). Every strategy makes ``steps`` optimizer steps of ``batch_size`` examples
    (``gradual``: in equal phases, one more block unfrozen per phase); ``transform`` turns a batch
    of stored images into the network's input (augmentation goes here). Frozen BatchNorm layers
    stay in eval mode, and parameters the source kept fixed (the ResNet's whitening filters) stay
    fixed. Returns (model, history of :func:`fit`, merged over the phases;
    ``history["seconds"][-1]`` is the training time).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy {strategy!r} is not one of {list(STRATEGIES)}.")
    torch.manual_seed(seed)
    model, phases = _start_model(strategy, source, num_classes, head, new_model, images)
    if steps < len(phases):
        raise ValueError(
            f"{strategy} trains in {len(phases)} phases (one more layer unfrozen each): give it at "
            f"least {len(phases)} steps, got steps={steps}."
        )
    groups = layer_groups(
        model,
        settings.lr,
        decay=settings.layer_decay,
        weight_decay=settings.weight_decay,
        trainable_only=strategy != "gradual",
    )
    optimizer, schedule = _optimizer(groups, settings, steps)
    loader = shuffled_loader(images, labels, batch_size, seed, transform)
    fixed = [n for n, p in source.named_parameters() if not p.requires_grad]
    history, done = {}, 0
    for i, names in enumerate(phases):
        unfreeze(model, names)
        for name in fixed if strategy != "scratch" else ():
            model.get_parameter(name).requires_grad_(False)  # what the source kept fixed stays so
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
    """The target task as tensors on the device, its cached features, and the source task.

    ``transform`` prepares stored (uint8) images for the network; ``train_transform`` (default:
    ``transform``) is used while training, e.g. with augmentation. ``new_model(images)`` builds
    the from-scratch network for a labelled set.
    """

    train_images: torch.Tensor  # the labelled pool, validation excluded
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    transform: Callable
    source_images: torch.Tensor  # the source task's test set, for forgetting
    source_labels: torch.Tensor
    source_transform: Callable
    new_model: Callable | None = None
    train_transform: Callable | None = None
    train_features: torch.Tensor | None = None  # of the pretrained body, see cache_features()
    test_features: torch.Tensor | None = None

    @property
    def num_classes(self) -> int:
        return int(self.train_labels.max()) + 1

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


def cifar_task(
    config: dict,
    device,
    *,
    val_per_class: int = 500,
    pool_per_class: int | None = None,
    test_per_class: int = 1000,
    source_test_per_class: int = 1000,
    halves: tuple | None = None,
) -> tuple[TransferTask, tuple]:
    """Chapter 05's target task: the target half of CIFAR-10, for the source network ``config``.

    ``config`` is :func:`helpers.pretrained.cifar5_resnet`'s. ``val_per_class`` training images
    of every target class are held out for validation (:func:`helpers.recipes.holdout_split`,
    seed 0); the rest is the pool (or a stratified ``pool_per_class`` of it). The test split and
    the source task's test split (for forgetting) are stratified subsets (all of them by default).
    Inputs are normalised with the source's statistics; training adds chapter 03's augmentation
    (translations by up to 2 pixels, flips). ``new_model`` builds the from-scratch network: the
    source's architecture and initialisation, its whitening stem fitted to the labelled images.
    ``halves`` is ``(cifar_halves(train=True), cifar_halves(train=False))`` when already loaded.
    Returns ``(task, (val_images, val_labels))``, everything on ``device``.
    """
    from .augment import DeviceAugment
    from .pretrained import cifar_halves
    from .recipes import CifarRecipe, cifar_model, holdout_split

    train, test = halves or (cifar_halves(train=True), cifar_halves(train=False))
    images, labels = train["target"]
    pool, val = holdout_split(labels, val_per_class)
    if pool_per_class is not None:
        pool = pool[stratified_indices(labels[pool], pool_per_class, seed=0)]
    test_idx = stratified_indices(test["target"][1], test_per_class, seed=0)
    source_idx = stratified_indices(test["source"][1], source_test_per_class, seed=0)
    mean, std = config["mean"], config["std"]
    recipe = CifarRecipe.from_dict(config["recipe"])
    num_classes = len(train["classes"]["target"])

    def new_model(x):
        return cifar_model(recipe, x, mean, std, num_classes=num_classes)

    plain = DeviceAugment(mean, std, train=False, channels_last=True)
    task = TransferTask(
        train_images=images[pool].to(device),
        train_labels=labels[pool].to(device),
        test_images=test["target"][0][test_idx].to(device),
        test_labels=test["target"][1][test_idx].to(device),
        transform=plain,
        source_images=test["source"][0][source_idx].to(device),
        source_labels=test["source"][1][source_idx].to(device),
        source_transform=plain,
        new_model=new_model,
        train_transform=DeviceAugment(mean, std, train=True, padding=2, channels_last=True),
    )
    return task, (images[val].to(device), labels[val].to(device))


def accuracy(model, images, labels, transform=None) -> float:
    """Accuracy of ``model`` on stored images (batches of 1,000, no augmentation)."""
    loader = TensorLoader(images, labels, batch_size=1000, transform=transform)
    return evaluate(model, loader)["accuracy"]


def _run_budget(task: TransferTask, source, per_class, seed, settings, strategies, scale) -> list:
    """Every strategy at one budget and seed: one row each, the test set read once per model."""
    num_classes = task.num_classes
    batch, steps = plan(per_class, num_classes, scale=scale)
    idx = stratified_indices(task.train_labels, per_class, seed).to(task.train_labels.device)
    x, y = task.train_images[idx], task.train_labels[idx]
    plan_kw = dict(steps=steps, batch_size=batch, seed=seed, num_classes=num_classes)
    probe, probe_history = train_linear_probe(
        task.train_features[idx], y, settings["linear_probe"], like=source, **plan_kw
    )
    source_accuracy = functools.partial(
        accuracy,
        images=task.source_images,
        labels=task.source_labels,
        transform=task.source_transform,
    )
    rows = []
    for strategy in strategies:
        row = {"strategy": strategy, "per_class": per_class, "seed": seed, "steps": steps}
        if strategy == "linear_probe":
            model, seconds = probe, probe_history["seconds"][-1]
            test = accuracy(probe, task.test_features, task.test_labels)
            row.update(trainable_parameters=count_parameters(probe))
        else:
            model, history = finetune(
                strategy,
                source,
                x,
                y,
                settings[strategy],
                head=probe.fc,
                transform=task.train_transform or task.transform,
                new_model=task.new_model,
                **plan_kw,
            )
            seconds = history["seconds"][-1]
            if strategy == "lp_ft":
                seconds += probe_history["seconds"][-1]
            test = accuracy(model, task.test_images, task.test_labels, task.transform)
            row.update(trainable_parameters=count_parameters(model))
            if strategy != "scratch":
                row["source_accuracy"] = source_accuracy(with_head(model, classifier(source)))
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


def standard_error(values) -> float:
    """The standard error of the mean of ``values`` (sample standard deviation / sqrt(n))."""
    values = list(values)
    return statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan")


def binomial_se(p: float, n: int) -> float:
    """The standard error of an accuracy ``p`` measured on ``n`` independent test examples."""
    return (p * (1 - p) / n) ** 0.5


def summarize(rows: list[dict], key: str = "test_accuracy") -> dict:
    """``{(strategy, per_class): {"median", "min", "max", "mean", "se", "n", "seconds"}}``.

    Over the seeds of each cell; ``se`` is the standard error of the mean over seeds (nan for one
    seed).
    """
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
                "mean": statistics.fmean(values),
                "se": standard_error(values),
                "n": len(values),
                "seconds": statistics.median(r["train_seconds"] for r in group),
            }
    return out
