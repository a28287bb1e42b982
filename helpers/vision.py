"""Image classification pieces of chapter 03 that later chapters reuse.

- :func:`channel_stats`, :func:`normalize`, :func:`random_crop`, :func:`random_flip` and
  :class:`DeviceAugment`: the data pipeline as batched tensor operations on the device (no
  per-image Python), for uint8 N×C×H×W datasets held whole in memory;
- :func:`baseline_cnn`: the plain three-convolution network most tutorials show;
- :class:`ResNet`: a small residual network in the style of airbench (Keller Jordan) and
  ResNet-9 (David Page), with an optional patch-whitening first layer (:func:`whitening_weights`);
- :class:`FlipTTA`: test-time augmentation that averages the logits of an image and its mirror;
- :func:`param_groups`: weight decay on weights only, not on BatchNorm parameters and biases;
- :func:`train_recipe`: all of it in one function, driven by a config dict (:data:`RECIPE`), so
  that the notebook's baseline, headline run and ablations and ``benchmarks/cifar10.py`` share it.
"""

from __future__ import annotations

import copy
import functools
import time

import torch
import torch.nn.functional as F
from torch import nn

from .data import TensorLoader
from .train import cross_entropy, evaluate, fit


# --------------------------------------------------------------------------- data on the device


def _check_images(images: torch.Tensor, what: str = "images") -> None:
    if images.ndim != 4:
        raise ValueError(f"{what} should be a batch shaped N×C×H×W, got shape {tuple(images.shape)}.")


def channel_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of uint8 (0..255) or float images, in 0..1 units.

    Compute them on the training split only, and normalise every split with them.
    """
    _check_images(images)
    x = images.float()
    if images.dtype == torch.uint8:
        x = x / 255
    x = x.transpose(0, 1).reshape(images.shape[1], -1)
    return x.mean(1), x.std(1)


def normalize(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (0..255) images to float32 ``(x / 255 - mean) / std``, channel by channel."""
    _check_images(images)
    if images.dtype != torch.uint8:
        raise ValueError(f"normalize() expects uint8 images (0..255), got {images.dtype}.")
    mean = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return (images.float() / 255 - mean) / std


def _uniform_ints(high: int, n: int, generator, device) -> torch.Tensor:
    """``n`` random integers in ``[0, high)``, drawn on the generator's device, returned on ``device``."""
    where = generator.device if generator is not None else device
    return torch.randint(0, high, (n, 1), generator=generator, device=where).to(device)


def random_crop(images: torch.Tensor, padding: int = 4, mode: str = "reflect",
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Pad a batch by ``padding`` pixels, then cut every image at its own random offset.

    The same as torchvision's ``RandomCrop(size, padding)`` applied image by image, but done for
    the whole batch at once with one indexing operation: image ``i`` is cut at offset
    ``(dy_i, dx_i)`` of its padded version, each uniform in ``[0, 2·padding]`` (drawn in that
    order), i.e. shifted by up to ``padding`` pixels each way.
    """
    _check_images(images)
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}.")
    if padding == 0:
        return images
    n, c, h, w = images.shape
    device = images.device
    padded = F.pad(images, (padding,) * 4, mode=mode)
    dy = _uniform_ints(2 * padding + 1, n, generator, device)
    dx = _uniform_ints(2 * padding + 1, n, generator, device)
    rows = (torch.arange(h, device=device) + dy)[:, None, :, None]  # n×1×h×1: source row of each output row
    cols = (torch.arange(w, device=device) + dx)[:, None, None, :]  # n×1×1×w: source column
    batch = torch.arange(n, device=device)[:, None, None, None]
    channels = torch.arange(c, device=device)[None, :, None, None]
    return padded[batch, channels, rows, cols]  # broadcast to n×c×h×w


def random_flip(images: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror each image left-right with probability ``p`` (one coin per image)."""
    _check_images(images)
    where = generator.device if generator is not None else images.device
    coins = torch.rand(len(images), generator=generator, device=where).to(images.device)
    return torch.where((coins < p).view(-1, 1, 1, 1), images.flip(3), images)


class DeviceAugment:
    """The batch transform for :class:`helpers.data.TensorLoader`: uint8 batch -> float batch.

    Normalises with ``mean``/``std``, then (``train=True``) random-crops with ``padding`` and
    flips; ``channels_last`` returns the batch in the memory layout convolutions prefer.
    """

    def __init__(self, mean, std, train: bool = True, padding: int = 4, flip: bool = True,
                 channels_last: bool = False, generator: torch.Generator | None = None):
        self.mean, self.std, self.train = mean, std, train
        self.padding, self.flip, self.channels_last, self.generator = padding, flip, channels_last, generator

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = normalize(images, self.mean, self.std)
        if self.train:
            x = random_crop(x, self.padding, generator=self.generator)
            if self.flip:
                x = random_flip(x, generator=self.generator)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def __repr__(self) -> str:
        aug = f"crop(pad {self.padding}), flip {self.flip}" if self.train else "no augmentation"
        return f"DeviceAugment({aug}, channels_last {self.channels_last})"


# --------------------------------------------------------------------------- networks


def baseline_cnn(num_classes: int = 10) -> nn.Sequential:
    """The plain three-convolution network of most tutorials: conv-ReLU-pool three times, two linears."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, num_classes),
    )


def whitening_weights(images: torch.Tensor, kernel_size: int = 2, eps: float = 5e-4) -> torch.Tensor:
    """Weights of a conv layer that whitens ``kernel_size``² patches (PCA whitening), airbench style.

    ``images`` are normalised float images (N×C×H×W). The covariance of all their patches has
    eigenvectors ``v_k`` and eigenvalues ``λ_k`` (largest first); filter ``k`` is ``v_k / sqrt(λ_k + eps)``, so the
    layer's outputs are uncorrelated with unit variance. Each filter also comes with its negative
    (so a following ReLU/GELU loses nothing): ``2·C·k²`` filters in all.
    """
    _check_images(images)
    c = images.shape[1]
    patches = images.float().unfold(2, kernel_size, 1).unfold(3, kernel_size, 1)  # N×C×H'×W'×k×k
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * kernel_size**2)
    covariance = patches.T @ patches / len(patches)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)  # largest variance first
    filters = (eigenvectors.T / torch.sqrt(eigenvalues.clamp_min(0) + eps)[:, None]).reshape(-1, c, kernel_size, kernel_size)
    return torch.cat([filters, -filters])


class ConvGroup(nn.Module):
    """conv → max-pool → BN → GELU, then a second conv → BN → GELU, added back when ``residual``."""

    def __init__(self, in_channels: int, out_channels: int, residual: bool = True, batchnorm: bool = True):
        super().__init__()
        norm = nn.BatchNorm2d if batchnorm else (lambda c: nn.Identity())
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=not batchnorm)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=not batchnorm)
        self.norm2 = norm(out_channels)
        self.act = nn.GELU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        y = self.act(self.norm2(self.conv2(x)))
        return x + y if self.residual else y


class ResNet(nn.Module):
    """A small residual network for 32×32 images, after airbench94 (and ResNet-9).

    ``stem`` (a 2×2 convolution with ``2·3·2² = 24`` filters, set by :meth:`whiten` from data) →
    three :class:`ConvGroup` of ``widths`` channels, each halving the resolution (31 → 15 → 7 → 3)
    → global max-pool → a linear layer, whose logits are multiplied by ``scale``.
    ``features(x)`` returns the pooled feature vector (``widths[-1]`` numbers) for fine-tuning.
    airbench94 uses ``widths=(64, 256, 256)``.
    """

    def __init__(self, widths=(64, 256, 256), num_classes: int = 10, residual: bool = True,
                 batchnorm: bool = True, scale: float = 1 / 9):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) != 3 or min(widths) < 1:
            raise ValueError(f"widths should be three positive channel counts such as (64, 256, 256), got {widths}.")
        self.config = {"widths": list(widths), "num_classes": num_classes, "residual": residual,
                       "batchnorm": batchnorm, "scale": scale}
        self.stem = nn.Conv2d(3, 24, kernel_size=2, padding=0, bias=True)
        self.groups = nn.Sequential(
            ConvGroup(24, widths[0], residual, batchnorm),
            ConvGroup(widths[0], widths[1], residual, batchnorm),
            ConvGroup(widths[1], widths[2], residual, batchnorm),
        )
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(widths[2], num_classes, bias=False)
        self.scale = scale

    @torch.no_grad()
    def whiten(self, images: torch.Tensor, freeze: bool = True) -> "ResNet":
        """Set the stem to whiten 2×2 patches of ``images`` (normalised training images).

        ``freeze=True`` keeps the stem's weights fixed during training (its bias still learns).
        """
        self.stem.weight.copy_(whitening_weights(images.to(self.stem.weight.device), kernel_size=2))
        self.stem.weight.requires_grad_(not freeze)
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.stem(x))
        return self.pool(self.groups(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)) * self.scale


class FlipTTA(nn.Module):
    """Test-time augmentation: the mean of the logits for each image and its mirror image."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.model(x) + self.model(x.flip(3))) / 2


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Optimizer groups: weight decay on conv/linear weights (ndim > 1), none on biases and BN."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --------------------------------------------------------------------------- the recipe in one function

RECIPE = {
    "model": "resnet",        # or "baseline" (baseline_cnn)
    "widths": (64, 256, 256),  # ResNet channels per group (airbench94's)
    "residual": True,          # ResNet: add the second conv's output back
    "batchnorm": True,         # ResNet: BatchNorm after every conv (else conv biases)
    "whiten": True,            # ResNet: stem set by PCA whitening of 2x2 patches, frozen
    "epochs": 10,
    "batch_size": 256,
    "optimizer": "sgd",        # "sgd" (Nesterov momentum), "adamw" or "adam" (no weight decay)
    "lr": 0.8,                 # peak learning rate
    "momentum": 0.9,
    "weight_decay": 1e-3,      # on conv/linear weights only (param_groups)
    "label_smoothing": 0.2,
    "schedule": "onecycle",    # linear warm-up then linear decay (OneCycleLR), or "constant"
    "warmup": 0.25,            # fraction of the steps spent warming up
    "augment": True,           # random crop (translation) and flip
    "padding": 2,              # random translation by up to this many pixels
    "tta": True,               # flip test-time augmentation in the final evaluation
    "channels_last": True,
}

# The sizes of the recipe by hardware (the notebook and benchmarks/cifar10.py choose by device).
BUDGETS = {
    # airbench94-sized, for an A100/H100-class GPU; batch 1024 with airbench94's learning rate,
    # momentum and weight decay translated to a mean loss (not measured when chapter 03 was written)
    "gpu": {"widths": (64, 256, 256), "epochs": 16, "batch_size": 1024, "lr": 1.5, "momentum": 0.85,
            "weight_decay": 1.3e-3},
    # a 2-core CPU: half the width (a quarter of the computation per image), 8 epochs
    "cpu": {"widths": (32, 128, 128), "epochs": 8},
    # CI-sized
    "quick": {"widths": (16, 32, 32), "epochs": 2, "batch_size": 64},
}

# What most tutorials do: the three-conv network, Adam at its default rate, small batches,
# no augmentation, no schedule, no label smoothing, no test-time augmentation.
BASELINE = {"model": "baseline", "optimizer": "adam", "lr": 1e-3, "batch_size": 64, "schedule": "constant",
            "label_smoothing": 0.0, "augment": False, "tta": False}


def build_model(config: dict, train_images: torch.Tensor | None = None, mean=None, std=None) -> nn.Module:
    """The network a config describes (on the CPU); the whitening stem is set from ``train_images``."""
    config = {**RECIPE, **config}
    if config["model"] == "baseline":
        return baseline_cnn()
    if config["model"] != "resnet":
        raise ValueError(f"config['model'] should be 'resnet' or 'baseline', got {config['model']!r}.")
    model = ResNet(config["widths"], residual=config["residual"], batchnorm=config["batchnorm"])
    if config["whiten"]:
        if train_images is None:
            raise ValueError("whiten=True needs train_images (uint8) and mean/std to compute the stem from.")
        every = max(1, len(train_images) // 5000)  # 5,000 images spread over the split (it may be sorted by class)
        model.whiten(normalize(train_images[::every][:5000].cpu(), mean, std))
    return model


def make_optimizer(model: nn.Module, config: dict, total_steps: int):
    """The optimizer and (per-step) scheduler a config describes."""
    c = {**RECIPE, **config}
    if c["optimizer"] == "sgd":  # Nesterov momentum, weight decay on weights only
        optimizer = torch.optim.SGD(param_groups(model, c["weight_decay"]), lr=c["lr"], momentum=c["momentum"], nesterov=True)
    elif c["optimizer"] == "adamw":
        optimizer = torch.optim.AdamW(param_groups(model, c["weight_decay"]), lr=c["lr"])
    elif c["optimizer"] == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=c["lr"])
    else:
        raise ValueError(f"config['optimizer'] should be 'sgd', 'adamw' or 'adam', got {c['optimizer']!r}.")
    if c["schedule"] == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=c["lr"], total_steps=total_steps, pct_start=c["warmup"], anneal_strategy="linear",
            cycle_momentum=False, div_factor=10, final_div_factor=100)
    elif c["schedule"] == "constant":
        scheduler = None
    else:
        raise ValueError(f"config['schedule'] should be 'onecycle' or 'constant', got {c['schedule']!r}.")
    return optimizer, scheduler


def train_recipe(config: dict, train_images, train_labels, test_images, test_labels, *, mean, std,
                 device, seed: int = 0, compile: bool = False, progress=None) -> dict:
    """Build, train and evaluate the model a config (see :data:`RECIPE`) describes.

    Images are uint8 N×C×H×W tensors, best already on ``device``. Returns a dict with the
    ``model``, the ``history`` from :func:`helpers.fit`, ``test_accuracy`` (with flip TTA when
    ``config['tta']``), ``test_accuracy_no_tta``, ``train_seconds`` and ``images_per_second``.
    ``compile=True`` runs the model through ``torch.compile`` and warms it up (compiling takes a
    while) before the clock starts, then restores the initial weights; ``compile_seconds`` says
    how long that took.
    """
    c = {**RECIPE, **config}
    unknown = set(config) - set(RECIPE)
    if unknown:
        raise ValueError(f"unknown config keys {sorted(unknown)}; the keys are those of helpers.vision.RECIPE.")
    device = torch.device(device)
    torch.manual_seed(seed)
    memory_format = torch.channels_last if c["channels_last"] else torch.contiguous_format
    model = build_model(c, train_images, mean, std).to(device, memory_format=memory_format)
    augment = DeviceAugment(mean, std, train=c["augment"], padding=c["padding"], channels_last=c["channels_last"])
    train_loader = TensorLoader(train_images, train_labels, batch_size=c["batch_size"], shuffle=True, drop_last=True,
                                transform=augment, generator=torch.Generator().manual_seed(seed))
    test_loader = TensorLoader(test_images, test_labels, batch_size=1000,
                               transform=DeviceAugment(mean, std, train=False, channels_last=c["channels_last"]))
    loss_fn = functools.partial(cross_entropy, label_smoothing=c["label_smoothing"])
    net, compile_seconds = model, 0.0
    if compile:  # compile once, outside the timed run: warm up on a few batches, then reset
        start = time.perf_counter()
        net = torch.compile(model)
        initial = copy.deepcopy(model.state_dict())
        warm_optimizer, _ = make_optimizer(model, {**c, "schedule": "constant"}, 1)
        fit(net, train_loader, warm_optimizer, steps=3, loss_fn=loss_fn, val_loader=test_loader, eval_batches=1,
            device=device, progress=False)
        model.load_state_dict(initial)
        compile_seconds = time.perf_counter() - start
    optimizer, scheduler = make_optimizer(model, c, c["epochs"] * len(train_loader))
    history = fit(net, train_loader, optimizer, epochs=c["epochs"], loss_fn=loss_fn, val_loader=test_loader,
                  scheduler=scheduler, device=device, progress=progress)
    plain = history["val_accuracy"][-1]
    tta = evaluate(FlipTTA(net), test_loader, loss_fn)["accuracy"] if c["tta"] else plain
    seconds = history["seconds"][-1]
    return {"model": model, "history": history, "config": c, "test_accuracy": tta, "test_accuracy_no_tta": plain,
            "train_seconds": seconds, "compile_seconds": compile_seconds,
            "images_per_second": c["epochs"] * len(train_loader) * c["batch_size"] / seconds}
