"""The networks later chapters reuse.

- :class:`ConvNet`: the compact CNN of chapter 02 (MNIST); its ``config`` rebuilds it;
- :func:`baseline_cnn`: the plain three-convolution network most tutorials show (chapter 03);
- :class:`ResNet`: a small residual network in the style of airbench (Keller Jordan) and
  ResNet-9 (David Page), with a patch-whitening first layer (:func:`whitening_weights`);
- :func:`identity_init`: airbench's identity (dirac) initialisation of a network's 3×3 convs;
- :class:`FlipTTA`: test-time augmentation that averages the logits of an image and its mirror;
  :class:`TranslateTTA` adds airbench94's two one-pixel translations (reflect padding).

The GPT lives in :mod:`helpers.gpt`; the recipes that train these in :mod:`helpers.recipes`.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from .augment import check_images


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """conv 3×3 (padding 1, no bias: BatchNorm adds one) → BatchNorm → ReLU → max-pool 2×2."""
    layers = OrderedDict(
        conv=nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        bn=nn.BatchNorm2d(c_out),
        relu=nn.ReLU(inplace=True),
        pool=nn.MaxPool2d(2),
    )
    return nn.Sequential(layers)


class ConvNet(nn.Sequential):
    """A compact CNN: ``len(channels)`` blocks of conv 3×3 (padding 1) → BatchNorm → ReLU →
    max-pool 2×2, then flatten and a linear classifier (with an optional hidden layer and dropout).

    Each block keeps the height and width (padding 1), then the pooling halves them, rounding
    down: 28 → 14 → 7 → 3 for three blocks. The flatten size is ``channels[-1] * side * side``.
    Layers are named ``block1.conv``, ..., ``head.fc``; replace ``model.head.fc`` to fine-tune on
    other classes. ``ConvNet(**model.config)`` rebuilds the same architecture.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        channels=(16, 32, 64),
        image_size: int = 28,
        hidden: int = 0,
        dropout: float = 0.0,
    ):
        channels = tuple(int(c) for c in channels)
        side = image_size
        for _ in channels:
            side //= 2
        if not channels or side < 1:
            raise ValueError(
                f"{len(channels)} blocks each halve the image: {image_size}x{image_size} would "
                f"shrink to nothing; use fewer blocks (channels) or larger images."
            )
        widths = zip((in_channels,) + channels[:-1], channels)
        blocks = [
            (f"block{i}", conv_block(c_in, c_out)) for i, (c_in, c_out) in enumerate(widths, 1)
        ]
        features = channels[-1] * side * side
        head = [("flatten", nn.Flatten())]
        if hidden:
            head += [("hidden", nn.Linear(features, hidden)), ("relu", nn.ReLU(inplace=True))]
        if dropout:
            head.append(("dropout", nn.Dropout(dropout)))
        head.append(("fc", nn.Linear(hidden or features, num_classes)))
        super().__init__(OrderedDict(blocks + [("head", nn.Sequential(OrderedDict(head)))]))
        self.config = {
            "in_channels": in_channels,
            "num_classes": num_classes,
            "channels": list(channels),
            "image_size": image_size,
            "hidden": hidden,
            "dropout": dropout,
        }
        self.feature_size = features

    def transfer_layers(self) -> list[str]:
        """The body's blocks, input to output, then the classifier (see helpers.finetune)."""
        return [f"block{i}" for i in range(1, len(self.config["channels"]) + 1)] + ["head.fc"]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The classifier's input: every block, then the head up to (not including) ``fc``."""
        for name, module in self.named_children():
            if name != "head":
                x = module(x)
        for name, module in self.head.named_children():
            if name != "fc":
                x = module(x)
        return x


def baseline_cnn(num_classes: int = 10) -> nn.Sequential:
    """The plain three-conv network of most tutorials: conv-ReLU-pool three times, two linears."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, num_classes),
    )


def whitening_weights(
    images: torch.Tensor, kernel_size: int = 2, eps: float = 5e-4
) -> torch.Tensor:
    """Weights of a conv layer that whitens ``kernel_size``² patches (PCA whitening, as airbench).

    ``images`` are normalised float images (N×C×H×W). The covariance of all their patches has
    eigenvectors ``v_k`` and eigenvalues ``λ_k`` (largest first); filter ``k`` is
    ``v_k / sqrt(λ_k + eps)``, so the
    layer's outputs are uncorrelated, with variance ``λ_k / (λ_k + eps)``: close to 1 where
    ``λ_k`` is well above ``eps``, smaller for the faintest directions (``eps`` keeps them from
    being blown up). Each filter also comes with its negative
    (so a following ReLU/GELU loses nothing): ``2·C·k²`` filters in all.
    """
    check_images(images)
    c = images.shape[1]
    patches = images.float().unfold(2, kernel_size, 1).unfold(3, kernel_size, 1)  # N×C×H'×W'×k×k
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * kernel_size**2)
    covariance = patches.T @ patches / len(patches)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)  # largest variance first
    filters = (eigenvectors.T / torch.sqrt(eigenvalues.clamp_min(0) + eps)[:, None]).reshape(
        -1, c, kernel_size, kernel_size
    )
    return torch.cat([filters, -filters])


class ConvGroup(nn.Module):
    """conv → max-pool → BN → GELU, then a second conv → BN → GELU, added back when ``residual``."""

    def __init__(
        self, in_channels: int, out_channels: int, residual: bool = True, batchnorm: bool = True
    ):
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


@torch.no_grad()
def identity_init(model: nn.Module) -> nn.Module:
    """Set the first ``in_channels`` filters of every 3×3 convolution to the identity (dirac).

    As airbench94 does (its ``Conv.reset_parameters``): at initialisation such a conv passes its
    input through to its first outputs unchanged (the remaining filters keep PyTorch's random
    initialisation), so even a network without residual connections starts close to an identity
    map. Returns ``model``.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and module.kernel_size == (3, 3):
            weight = module.weight
            nn.init.dirac_(weight[: min(weight.shape[0], weight.shape[1])])
    return model


class ResNet(nn.Module):
    """A small residual network for 32×32 images, after airbench94 (and ResNet-9).

    ``stem`` (a 2×2 convolution with ``2·3·2² = 24`` filters, set by :meth:`whiten` from data) →
    three :class:`ConvGroup` of ``widths`` channels, each halving the resolution (31 → 15 → 7 → 3)
    → global max-pool → a linear layer, whose logits are multiplied by ``scale``.
    ``features(x)`` returns the pooled feature vector (``widths[-1]`` numbers) for fine-tuning.
    airbench94 uses ``widths=(64, 256, 256)``.
    """

    def __init__(
        self,
        widths=(64, 256, 256),
        num_classes: int = 10,
        residual: bool = True,
        batchnorm: bool = True,
        scale: float = 1 / 9,
    ):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) != 3 or min(widths) < 1:
            raise ValueError(
                f"widths should be three positive channel counts such as (64, 256, 256), "
                f"got {widths}."
            )
        self.config = {
            "widths": list(widths),
            "num_classes": num_classes,
            "residual": residual,
            "batchnorm": batchnorm,
            "scale": scale,
        }
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

    def transfer_layers(self) -> list[str]:
        """The body's layers, input to output, then the classifier (see helpers.finetune)."""
        return ["stem", "groups.0", "groups.1", "groups.2", "head"]

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


class TranslateTTA(nn.Module):
    """airbench94's test-time augmentation (its ``tta_level=2``): flips and translations.

    ``0.5 · flip-TTA(x) + 0.25 · flip-TTA(x shifted by (+shift, +shift)) + 0.25 · flip-TTA(x
    shifted by (-shift, -shift))``, where a shift reflect-pads the batch by ``shift`` pixels and
    cuts a window at a corner (no pixel wraps around, unlike ``torch.roll``). Six forward passes.
    """

    def __init__(self, model: nn.Module, shift: int = 1):
        super().__init__()
        self.flip, self.shift = FlipTTA(model), shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w, s = x.shape[-2], x.shape[-1], self.shift
        padded = F.pad(x, (s,) * 4, mode="reflect")
        shifted = [padded[..., :h, :w], padded[..., 2 * s : 2 * s + h, 2 * s : 2 * s + w]]
        if x.is_contiguous(memory_format=torch.channels_last):
            shifted = [v.contiguous(memory_format=torch.channels_last) for v in shifted]
        return 0.5 * self.flip(x) + 0.25 * (self.flip(shifted[0]) + self.flip(shifted[1]))
