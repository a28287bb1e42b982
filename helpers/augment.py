"""The image pipeline as batched tensor operations on the device (no per-image Python).

For uint8 N×C×H×W datasets held whole in memory: :func:`channel_stats`, :func:`normalize`,
:func:`random_crop`, :func:`random_flip`, and :class:`DeviceAugment`, which chains them as the
batch transform of :class:`helpers.loader.TensorLoader`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def check_images(images: torch.Tensor, what: str = "images") -> None:
    if images.ndim != 4:
        raise ValueError(
            f"{what} should be a batch shaped N×C×H×W, got shape {tuple(images.shape)}."
        )


def channel_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of uint8 (0..255) or float images, in 0..1 units.

    Compute them on the training split only, and normalise every split with them.
    """
    check_images(images)
    x = images.float()
    if images.dtype == torch.uint8:
        x = x / 255
    x = x.transpose(0, 1).reshape(images.shape[1], -1)
    return x.mean(1), x.std(1)


def normalize(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (0..255) images to float32 ``(x / 255 - mean) / std``, channel by channel."""
    check_images(images)
    if images.dtype != torch.uint8:
        raise ValueError(f"normalize() expects uint8 images (0..255), got {images.dtype}.")
    mean = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return (images.float() / 255 - mean) / std


def _uniform_ints(high: int, n: int, generator, device) -> torch.Tensor:
    """``n`` random integers in ``[0, high)``, drawn where the generator lives, on ``device``."""
    where = generator.device if generator is not None else device
    return torch.randint(0, high, (n, 1), generator=generator, device=where).to(device)


def random_crop(
    images: torch.Tensor,
    padding: int = 4,
    mode: str = "reflect",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pad a batch by ``padding`` pixels, then cut every image at its own random offset.

    The same as torchvision's ``RandomCrop(size, padding)`` applied image by image, but done for
    the whole batch at once with one indexing operation: image ``i`` is cut at offset
    ``(dy_i, dx_i)`` of its padded version, each uniform in ``[0, 2·padding]`` (drawn in that
    order), i.e. shifted by up to ``padding`` pixels each way.
    """
    check_images(images)
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}.")
    if padding == 0:
        return images
    n, c, h, w = images.shape
    device = images.device
    padded = F.pad(images, (padding,) * 4, mode=mode)
    dy = _uniform_ints(2 * padding + 1, n, generator, device)
    dx = _uniform_ints(2 * padding + 1, n, generator, device)
    rows = (torch.arange(h, device=device) + dy)[
        :, None, :, None
    ]  # n×1×h×1: source row of each output row
    cols = (torch.arange(w, device=device) + dx)[:, None, None, :]  # n×1×1×w: source column
    batch = torch.arange(n, device=device)[:, None, None, None]
    channels = torch.arange(c, device=device)[None, :, None, None]
    return padded[batch, channels, rows, cols]  # broadcast to n×c×h×w


def random_flip(
    images: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Mirror each image left-right with probability ``p`` (one coin per image)."""
    check_images(images)
    where = generator.device if generator is not None else images.device
    coins = torch.rand(len(images), generator=generator, device=where).to(images.device)
    return torch.where((coins < p).view(-1, 1, 1, 1), images.flip(3), images)


class DeviceAugment:
    """The batch transform for :class:`helpers.data.TensorLoader`: uint8 batch -> float batch.

    Normalises with ``mean``/``std``, then (``train=True``) random-crops with ``padding`` and
    flips; ``channels_last`` returns the batch in the memory layout convolutions prefer.
    """

    def __init__(
        self,
        mean,
        std,
        train: bool = True,
        padding: int = 4,
        flip: bool = True,
        channels_last: bool = False,
        generator: torch.Generator | None = None,
    ):
        self.mean, self.std, self.train = mean, std, train
        self.padding, self.flip, self.channels_last, self.generator = (
            padding,
            flip,
            channels_last,
            generator,
        )

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
