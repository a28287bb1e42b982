"""Datasets for every chapter, with one data directory and clear errors when offline.

The data directory is ``COURSE_DATA_DIR`` when set, else ``~/.cache/scratch2finetune/data``.
Files already there are used without any network. Missing files are downloaded through the
standard loaders; when that fails, the error names the files and where to put them.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
import torch
import torchvision

DATA_VAR = "COURSE_DATA_DIR"
DEFAULT_DATA_DIR = Path.home() / ".cache" / "scratch2finetune" / "data"

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


def data_dir() -> Path:
    """Where datasets live: ``$COURSE_DATA_DIR``, or ``~/.cache/scratch2finetune/data``."""
    value = os.environ.get(DATA_VAR, "").strip()
    if not value:
        return DEFAULT_DATA_DIR
    path = Path(value).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"{DATA_VAR}={value!r} is not a directory. Create it, point {DATA_VAR} at the folder "
            f"that holds the datasets, or unset it to use {DEFAULT_DATA_DIR}."
        )
    return path


def _missing(what: str, files: list[Path], source: str, error: Exception) -> FileNotFoundError:
    listing = "\n".join(f"  {f}" for f in files)
    return FileNotFoundError(
        f"{what} is not in the data directory and could not be downloaded from {source} "
        f"({type(error).__name__}: {error}).\nPut these files in place:\n{listing}\n"
        f"or set {DATA_VAR} to a folder that already holds them (now: {data_dir()})."
    )


# --------------------------------------------------------------------------- MNIST family

_IDX_FILES = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]


def _download_torchvision(cls, root: Path) -> None:
    """The network step, kept apart so that tests can make it fail."""
    cls(root=str(root), train=True, download=True)


def _torchvision_digits(cls, train: bool, transform=None):
    root = data_dir()
    raw = root / cls.__name__ / "raw"
    if not all((raw / name).exists() for name in _IDX_FILES):
        try:
            _download_torchvision(cls, root)
        except Exception as error:  # offline, blocked, read-only: all need the same advice
            raise _missing(
                cls.__name__, [raw / n for n in _IDX_FILES], "its mirrors", error
            ) from None
    return cls(root=str(root), train=train, download=False, transform=transform)


def mnist(train: bool = True, transform=None) -> torchvision.datasets.MNIST:
    """MNIST as a torchvision dataset (``.data`` uint8 N×28×28, ``.targets`` int64)."""
    return _torchvision_digits(torchvision.datasets.MNIST, train, transform)


def fashion_mnist(train: bool = True, transform=None) -> torchvision.datasets.FashionMNIST:
    """Fashion-MNIST as a torchvision dataset, same layout as :func:`mnist`."""
    return _torchvision_digits(torchvision.datasets.FashionMNIST, train, transform)


# --------------------------------------------------------------------------- CIFAR-10


class ImageArrayDataset(torch.utils.data.Dataset):
    """Images held in one uint8 array (N×H×W×C), like torchvision's CIFAR10."""

    def __init__(self, data: np.ndarray, targets: list[int], classes, transform=None, source=""):
        self.data, self.targets, self.classes = data, targets, list(classes)
        self.transform, self.source = transform, source

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index):
        from PIL import Image

        image = Image.fromarray(self.data[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]


def _decode(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _read_image_folder(folder: Path) -> tuple[np.ndarray, list[int]]:
    found = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if tuple(found) != CIFAR10_CLASSES:
        raise ValueError(
            f"{folder} should hold one folder per CIFAR-10 class, {', '.join(CIFAR10_CLASSES)}; "
            f"found {found}. Fix the folder names or remove the folder to download the archive."
        )
    paths, targets = [], []
    for label, name in enumerate(CIFAR10_CLASSES):
        files = sorted(
            p for p in (folder / name).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")
        )
        paths += files
        targets += [label] * len(files)
    return np.stack([_decode(p) for p in paths]), targets


def cifar10(train: bool = True, transform=None, verbose: bool = True):
    """CIFAR-10 as a dataset with ``.data`` (uint8 N×32×32×3), ``.targets`` and ``.classes``.

    Reads the standard archive (``<data>/cifar-10-batches-py``) when present, else the
    image-folder copy ``<data>/cifar10/{train,test}/<class>/*.jpg``, else downloads the archive.
    ``.source`` says which one was used.
    """
    root = data_dir()
    split = "train" if train else "test"
    archive = root / "cifar-10-batches-py"
    folder = root / "cifar10" / split
    if not archive.is_dir() and folder.is_dir():
        data, targets = _read_image_folder(folder)
        dataset = ImageArrayDataset(
            data, targets, CIFAR10_CLASSES, transform, f"image folder {folder}"
        )
    else:
        if not archive.is_dir():
            try:
                _download_torchvision(torchvision.datasets.CIFAR10, root)
            except Exception as error:
                raise _missing(
                    "CIFAR-10",
                    [archive / "data_batch_1", folder / "<class>/*.jpg"],
                    "https://www.cs.toronto.edu/~kriz/",
                    error,
                ) from None
        dataset = torchvision.datasets.CIFAR10(
            str(root), train=train, download=False, transform=transform
        )
        dataset.source = f"standard archive {archive}"
    if verbose:
        print(f"CIFAR-10 {split}: {len(dataset)} images from the {dataset.source}")
    return dataset


# --------------------------------------------------------------------------- text


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _download_url(url: str, dest: Path) -> None:
    """Fetch ``url`` into ``dest`` (the network step; tests replace it)."""
    with urllib.request.urlopen(url, timeout=30) as response:
        dest.write_bytes(response.read())


def fetch_checked(url: str, path: Path, expected_sha256: str, what: str) -> Path:
    """Return ``path``, downloading ``url`` there first if needed; the sha256 must match."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            part = Path(tmp) / path.name
            try:
                _download_url(url, part)
            except Exception as error:
                raise _missing(what, [path], url, error) from None
            if sha256(part) != expected_sha256:
                raise ValueError(
                    f"The download of {what} from {url} has sha256 {sha256(part)}, expected "
                    f"{expected_sha256}; it was not saved. Try again, or put a good copy at {path}."
                )
            part.replace(path)
    elif sha256(path) != expected_sha256:
        raise ValueError(
            f"{path} has sha256 {sha256(path)}, expected {expected_sha256}: the file is damaged "
            f"or is not {what}. Delete it to download it again, or replace it with a good copy."
        )
    return path


def tiny_shakespeare() -> str:
    """The Tiny Shakespeare text (1,115,394 characters), downloaded once and checked."""
    path = data_dir() / "tinyshakespeare" / "input.txt"
    return fetch_checked(SHAKESPEARE_URL, path, SHAKESPEARE_SHA256, "Tiny Shakespeare").read_text(
        encoding="utf-8"
    )


# --------------------------------------------------------------------------- tensors


def as_tensors(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole image dataset as ``(images uint8 N×C×H×W, labels int64 N)``."""
    images = torch.as_tensor(np.asarray(dataset.data))
    if images.ndim == 3:  # N×H×W grey images
        images = images.unsqueeze(1)
    else:  # N×H×W×C colour images
        images = images.permute(0, 3, 1, 2).contiguous()
    return images, torch.as_tensor(np.asarray(dataset.targets), dtype=torch.long)
