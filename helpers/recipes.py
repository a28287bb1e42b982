"""Training recipes: the settings that make a model train well, and the driver that applies them.

- :class:`CifarRecipe` (chapter 03): an airbench-style ResNet (or the tutorial baseline) on
  CIFAR-10; :data:`CIFAR_BUDGETS` sizes it for a GPU, a CPU or CI, :data:`CIFAR_BASELINE` is what
  most tutorials do; :func:`holdout_split` holds a validation split out of the training data,
  :func:`train_cifar` builds, trains and validates one recipe, :func:`evaluate_cifar` scores a
  model (on the test split once per final model);
- :class:`GPTRecipe` (chapter 04): the character GPT's shape and optimisation, "cpu" (five
  minutes on two CPU cores, also used on MPS) and "gpu" (nanoGPT's Shakespeare-character recipe).

Both are :class:`helpers.config.Config` dataclasses: ``recipe.replace(epochs=2)`` changes a copy
and rejects unknown keys. Both build their optimizer and schedule with :mod:`helpers.optim`.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass

import torch
from torch import nn

from . import optim
from .augment import DeviceAugment, normalize, random_flip
from .config import Config
from .gpt import GPTConfig
from .loader import TensorLoader
from .models import FlipTTA, ResNet, TranslateTTA, baseline_cnn, identity_init
from .train import cross_entropy, evaluate, fit

# ----------------------------------------------------------------------- CIFAR-10 (chapter 03)


@dataclass(frozen=True)
class CifarRecipe(Config):
    """Every setting of chapter 03's training run; the defaults are the recipe."""

    model: str = "resnet"  # or "baseline" (baseline_cnn)
    widths: tuple = (64, 256, 256)  # ResNet channels per group (airbench94's)
    residual: bool = True  # ResNet: add the second conv's output back
    batchnorm: bool = True  # ResNet: BatchNorm after every conv (else conv biases)
    whiten: bool = True  # ResNet: stem set by PCA whitening of 2x2 patches, frozen
    identity_init: bool = True  # ResNet: 3x3 convs start as identity maps (airbench's dirac init)
    epochs: int = 10
    batch_size: int = 256
    optimizer: str = "sgd"  # "sgd" (Nesterov), "adamw" or "adam" (no weight decay)
    lr: float = 0.8  # peak learning rate
    bias_lr_scale: float = 1.0  # BatchNorm biases this many times faster (airbench94: 64; ch. 03)
    momentum: float = 0.9
    weight_decay: float = 1e-3  # on conv/linear weights only (optim.param_groups)
    label_smoothing: float = 0.2
    schedule: str = "onecycle"  # linear warm-up then linear decay, or "constant"
    warmup: float = 0.25  # fraction of the steps spent warming up
    min_lr_ratio: float = 1e-3  # the last step's learning rate, as a fraction of the peak
    augment: bool = True  # random crop (translation) and flip
    padding: int = 2  # random translation by up to this many pixels
    flip: str = "alternate"  # "random" (a coin per image and epoch) or "alternate" (airbench)
    tta: str = "translate"  # test-time augmentation: "none", "flip" or "translate" (flip + shifts)
    channels_last: bool = True
    freeze_bn_scales: bool = False  # BatchNorm scales fixed at 1, only biases train (airbench94)

    def __post_init__(self):
        if self.model not in ("resnet", "baseline"):
            raise ValueError(f"model should be 'resnet' or 'baseline', got {self.model!r}.")
        if self.flip not in ("random", "alternate") or self.tta not in TTA_MODES:
            raise ValueError(
                f"flip should be 'random' or 'alternate' and tta one of {TTA_MODES}, "
                f"got {self.flip!r} and {self.tta!r}."
            )
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))

    def make_optimizer(self, model: nn.Module, total_steps: int):
        """The optimizer and per-step schedule (or None) of this recipe.

        Weight decay on conv/linear weights only; BatchNorm biases in a group of their own with
        ``bias_lr_scale`` times the learning rate (the schedule scales every group alike).
        """
        decay = 0.0 if self.optimizer == "adam" else self.weight_decay
        groups = optim.param_groups(model, decay)
        fast = {id(m.bias) for m in model.modules() if isinstance(m, nn.BatchNorm2d) and m.affine}
        if self.bias_lr_scale != 1 and fast:
            others = groups.pop()["params"]
            groups.append({"params": [p for p in others if id(p) not in fast], "weight_decay": 0.0})
            groups.append({"params": [p for p in others if id(p) in fast], "weight_decay": 0.0,
                           "lr": self.lr * self.bias_lr_scale})  # fmt: skip
        optimizer = optim.make_optimizer(groups, self.optimizer, self.lr, momentum=self.momentum)
        return optimizer, optim.make_schedule(
            optimizer,
            self.schedule,
            total_steps,
            warmup=self.warmup,
            min_lr_ratio=self.min_lr_ratio,
        )


TTA_MODES = ("none", "flip", "translate")

# The sizes of the recipe by hardware (the notebook and benchmarks/cifar10.py choose by device).
CIFAR_BUDGETS = {
    # airbench94-sized, for an A100/H100-class GPU; batch 1024 with airbench94's learning rate,
    # momentum and weight decay translated to a mean loss (not yet measured on a GPU)
    "gpu": {
        "widths": (64, 256, 256),
        "epochs": 16,
        "batch_size": 1024,
        "lr": 1.5,
        "momentum": 0.85,
        "weight_decay": 1.3e-3,
    },
    # a 2-core CPU: half the width (a quarter of the computation per image), 8 epochs: about 7
    # minutes a run, chosen by time (chapter 03's full run trains it three times plus an ablation)
    "cpu": {"widths": (32, 128, 128), "epochs": 8},
    # CI-sized
    "quick": {"widths": (16, 32, 32), "epochs": 2, "batch_size": 64},
}

# What most tutorials do: the three-conv network, Adam at its default rate, small batches,
# random flips and no other augmentation, no schedule, no label smoothing, no test-time
# augmentation.
CIFAR_BASELINE = {
    "model": "baseline",
    "optimizer": "adam",
    "lr": 1e-3,
    "batch_size": 64,
    "schedule": "constant",
    "label_smoothing": 0.0,
    "augment": False,
    "tta": "none",
}


def holdout_split(
    labels: torch.Tensor, per_class: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(train, validation)`` of a split with ``per_class`` images of every class held out.

    Stratified (every class loses the same number of images), disjoint, covering every index,
    and fixed by ``seed`` (drawn on the CPU, so the same on every device). Both index tensors are
    sorted and on the CPU. Choose with the validation part; keep the test split for the end.
    """
    labels = labels.cpu()
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=generator)
    held = []
    for k in labels.unique().tolist():
        members = order[labels[order] == k]
        if len(members) <= per_class:
            raise ValueError(
                f"class {k} has {len(members)} images: cannot hold out {per_class} of them "
                f"and keep some for training; lower per_class."
            )
        held.append(members[:per_class])
    val = torch.cat(held).sort().values
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[val] = False
    return torch.nonzero(keep)[:, 0], val


def cifar_model(
    recipe: CifarRecipe,
    train_images: torch.Tensor | None = None,
    mean=None,
    std=None,
    num_classes: int = 10,
) -> nn.Module:
    """The network a recipe describes (on the CPU); the whitening stem fits ``train_images``."""
    if recipe.model == "baseline":
        return baseline_cnn(num_classes)
    model = ResNet(recipe.widths, num_classes, residual=recipe.residual, batchnorm=recipe.batchnorm)
    if recipe.identity_init:
        identity_init(model)
    if recipe.freeze_bn_scales:  # make_optimizer collects only parameters that require gradients
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d) and m.affine:
                m.weight.requires_grad_(False)
    if recipe.whiten:
        if train_images is None:
            raise ValueError(
                "whiten=True needs train_images (uint8) and mean/std to compute the stem from."
            )
        every = max(
            1, len(train_images) // 5000
        )  # 5,000 images spread over the split (it may be sorted)
        model.whiten(normalize(train_images[::every][:5000].cpu(), mean, std))
    return model


def cifar_tta(model: nn.Module, tta: str) -> nn.Module:
    """``model`` wrapped in the test-time augmentation ``tta`` names (one of ``TTA_MODES``)."""
    if tta not in TTA_MODES:
        raise ValueError(f"tta should be one of {TTA_MODES}, got {tta!r}.")
    return {"none": model, "flip": FlipTTA(model), "translate": TranslateTTA(model)}[tta]


class AlternatingFlipLoader(TensorLoader):
    """airbench's alternating flip: images mirrored at random once, then all of them every
    second epoch, so each image is seen both ways in every two epochs (no repeats by chance).

    Give it images already flipped at random (:func:`helpers.augment.random_flip`, once) and a
    transform that does not flip; every second pass (epoch) mirrors its batches.
    """

    passes = 0

    def __iter__(self):
        mirror, self.passes = self.passes % 2 == 1, self.passes + 1
        for x, *rest in super().__iter__():
            if mirror:
                last = x.is_contiguous(memory_format=torch.channels_last)
                x = x.flip(3).contiguous(
                    memory_format=torch.channels_last if last else torch.contiguous_format
                )
            yield (x, *rest)


def cifar_loaders(recipe: CifarRecipe, train: tuple, evaluation: tuple, mean, std, seed: int = 0):
    """(training loader with the recipe's augmentation, evaluation loader) over uint8 images."""
    alternate = recipe.augment and recipe.flip == "alternate"
    augment = DeviceAugment(mean, std, train=recipe.augment, padding=recipe.padding,
                            flip=not alternate, channels_last=recipe.channels_last)  # fmt: skip
    generator = torch.Generator().manual_seed(seed)
    images, labels = train
    if alternate:
        images = random_flip(images, generator=torch.Generator().manual_seed(seed + 1))
    kind = AlternatingFlipLoader if alternate else TensorLoader
    train_loader = kind(images, labels, batch_size=recipe.batch_size, shuffle=True, drop_last=True,
                        transform=augment, generator=generator)  # fmt: skip
    return train_loader, cifar_eval_loader(*evaluation, mean, std, recipe.channels_last)


def cifar_eval_loader(images, labels, mean, std, channels_last: bool = True) -> TensorLoader:
    """Batches of 1,000 uint8 images, normalised on the device, no augmentation."""
    transform = DeviceAugment(mean, std, train=False, channels_last=channels_last)
    return TensorLoader(images, labels, batch_size=1000, transform=transform)


def _compile_warm(
    model: nn.Module, recipe: CifarRecipe, loaders, loss_fn, device
) -> tuple[nn.Module, float]:
    """``torch.compile(model)``, warmed up on a few batches, with the initial weights restored."""
    import time

    start = time.perf_counter()
    net = torch.compile(model)
    initial = copy.deepcopy(model.state_dict())
    warm_optimizer, _ = recipe.replace(schedule="constant").make_optimizer(model, 1)
    fit(
        net,
        loaders[0],
        warm_optimizer,
        steps=3,
        loss_fn=loss_fn,
        val_loader=loaders[1],
        eval_batches=1,
        device=device,
        progress=False,
    )
    model.load_state_dict(initial)
    return net, time.perf_counter() - start


def evaluate_cifar(
    model: nn.Module, images, labels, *, mean, std, tta: str = "none", channels_last: bool = True
) -> float:
    """Accuracy of ``model`` on uint8 ``images`` with the test-time augmentation ``tta``.

    Use it on the validation split for choices, and on the test split once per final model.
    """
    loader = cifar_eval_loader(images, labels, mean, std, channels_last)
    return evaluate(cifar_tta(model, tta), loader)["accuracy"]


def train_cifar(
    recipe: CifarRecipe,
    train_images,
    train_labels,
    val_images,
    val_labels,
    *,
    mean,
    std,
    device,
    seed: int = 0,
    compile: bool = False,
    progress=None,
) -> dict:
    """Build, train and validate the model a :class:`CifarRecipe` describes.

    Images are uint8 N×C×H×W tensors, best already on ``device``; ``val_*`` is a validation split
    held out of the training data (:func:`holdout_split`): the per-epoch curves and the returned
    accuracies are measured on it. The labels are ``0 .. K-1``; the model gets ``K`` outputs (10
    for CIFAR-10, 5 for chapter 05's halves). Never pass the test split here; read it once per
    final model with :func:`evaluate_cifar`. Returns a dict with the ``model``, the ``history`` from
    :func:`helpers.train.fit`, ``val_accuracy`` (with the recipe's test-time augmentation),
    ``val_accuracy_no_tta``, ``train_seconds`` and ``images_per_second``. ``compile=True`` runs the
    model through ``torch.compile``, warmed up before the clock starts; ``compile_seconds`` says
    how long that took.
    """
    device = torch.device(device)
    torch.manual_seed(seed)
    memory_format = torch.channels_last if recipe.channels_last else torch.contiguous_format
    num_classes = int(train_labels.max()) + 1  # labels are 0 .. num_classes - 1
    model = cifar_model(recipe, train_images, mean, std, num_classes)
    model = model.to(device, memory_format=memory_format)
    train_loader, val_loader = cifar_loaders(
        recipe, (train_images, train_labels), (val_images, val_labels), mean, std, seed
    )
    loss_fn = functools.partial(cross_entropy, label_smoothing=recipe.label_smoothing)
    net, compile_seconds = model, 0.0
    if compile:
        net, compile_seconds = _compile_warm(
            model, recipe, (train_loader, val_loader), loss_fn, device
        )
    optimizer, scheduler = recipe.make_optimizer(model, recipe.epochs * len(train_loader))
    options = dict(loss_fn=loss_fn, scheduler=scheduler, device=device, progress=progress)
    history = fit(
        net, train_loader, optimizer, epochs=recipe.epochs, val_loader=val_loader, **options
    )
    plain = history["val_accuracy"][-1]
    tta = plain
    if recipe.tta != "none":
        tta = evaluate(cifar_tta(net, recipe.tta), val_loader, loss_fn=loss_fn)["accuracy"]
    seconds = history["seconds"][-1]
    return {
        "model": model,
        "history": history,
        "recipe": recipe,
        "val_accuracy": tta,
        "val_accuracy_no_tta": plain,
        "train_seconds": seconds,
        "compile_seconds": compile_seconds,
        "images_per_second": recipe.epochs * len(train_loader) * recipe.batch_size / seconds,
    }


# --------------------------------------------------------------- the character GPT (chapter 04)


@dataclass(frozen=True)
class GPTRecipe(Config):
    """The GPT's shape and its optimisation: AdamW, warmup, cosine decay, gradient clipping."""

    name: str = "cpu"
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64
    dropout: float = 0.0
    bias: bool = True
    batch_size: int = 64
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100  # at most a tenth of the steps
    steps: int = 1000
    weight_decay: float = 0.1
    betas: tuple = (0.9, 0.99)
    grad_clip: float = 1.0
    eval_every: int = 100  # steps between validation evaluations (best-checkpoint selection)

    def model_config(self, vocab_size: int) -> GPTConfig:
        """The :class:`GPTConfig` part of the recipe."""
        return GPTConfig(
            vocab_size=vocab_size,
            block_size=self.block_size,
            n_layer=self.n_layer,
            n_head=self.n_head,
            n_embd=self.n_embd,
            dropout=self.dropout,
            bias=self.bias,
        )

    def make_optimizer(self, model: nn.Module, total_steps: int | None = None):
        """AdamW (fused on CUDA) with decay on matrices only, and the warmup + cosine schedule."""
        total = total_steps or self.steps
        optimizer = optim.make_optimizer(
            model, "adamw", self.lr, weight_decay=self.weight_decay, betas=tuple(self.betas)
        )
        warmup = min(self.warmup_steps, total // 10) / total
        return optimizer, optim.make_schedule(
            optimizer, "cosine", total, warmup=warmup, min_lr_ratio=self.min_lr_ratio
        )


GPT_RECIPES = {
    "cpu": GPTRecipe(),
    "gpu": GPTRecipe(
        name="gpu",
        n_layer=6,
        n_head=6,
        n_embd=384,
        block_size=256,
        dropout=0.2,
        lr=1e-3,
        steps=5000,
        bias=False,
        eval_every=250,  # nanoGPT's eval_interval: the run overfits, the best evaluation is kept
    ),
}

GPT_QUICK = dict(
    n_layer=2, n_head=4, n_embd=64, block_size=32, batch_size=32, steps=300, warmup_steps=30,
    eval_every=30,
)  # quick mode's changes to either recipe: checks that everything runs, not a result  # fmt: skip


def gpt_recipe(device) -> GPTRecipe:
    """The recipe for ``device``: "gpu" on CUDA, "cpu" elsewhere (CPU, Apple MPS)."""
    return GPT_RECIPES["gpu" if torch.device(device).type == "cuda" else "cpu"]
