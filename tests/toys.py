"""Toy image tasks and models for the fine-tuning tests (chapter 05's helpers)."""

import types

import numpy as np
import torch

from helpers import models

SIZE = 12  # toy images: 12 -> 6 -> 3 -> 1 through three blocks


def convnet(seed=0, num_classes=10):
    torch.manual_seed(seed)
    return models.ConvNet(channels=(4, 6, 8), image_size=SIZE, num_classes=num_classes)


def resnet(seed=0, num_classes=10):
    """A tiny ResNet (chapter 03's family) for 3-channel images, its stem frozen as trained."""
    torch.manual_seed(seed)
    model = models.ResNet((4, 6, 8), num_classes=num_classes)
    model.stem.weight.requires_grad_(False)
    return model


def images(n_per_class=12, classes=4, seed=0, channels=1, size=SIZE):
    """uint8 images whose brightness pattern depends on the label: learnable, but not trivially."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    x = torch.randint(0, 120, (len(labels), channels, size, size), generator=g)
    for c in range(classes):
        x[labels == c, :, c * 3 : c * 3 + 3, :] += 120
    return x.to(torch.uint8), labels


def normalise(x):
    return (x.float() / 255 - 0.3) / 0.3


def fake_cifar(train=True, transform=None, verbose=True):
    """600 training (or 100 test) images per class, whose colour says the class."""
    n = 600 if train else 100
    g = np.random.default_rng(int(train))
    targets = np.repeat(np.arange(10), n)
    pixels = g.integers(0, 100, (10 * n, 32, 32, 3)) + (targets * 15)[:, None, None, None]
    return types.SimpleNamespace(data=pixels.astype(np.uint8), targets=targets.tolist())
