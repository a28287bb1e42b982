import hashlib
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import data


def _write_idx(folder, prefix, n, seed):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(
        struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes()
    )
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(
        struct.pack(">II", 2049, n) + labels.tobytes()
    )
    return images, labels


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(data, "_download_torchvision", offline)
    monkeypatch.setattr(data, "_download_url", offline)
    return tmp_path


def test_data_dir_default_and_variable(tmp_path, monkeypatch):
    assert data.data_dir() == data.DEFAULT_DATA_DIR
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    assert data.data_dir() == tmp_path
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "typo"))
    with pytest.raises(FileNotFoundError, match="COURSE_DATA_DIR"):
        data.data_dir()


@pytest.mark.parametrize(
    "loader, folder", [(data.mnist, "MNIST"), (data.fashion_mnist, "FashionMNIST")]
)
def test_idx_loaders_read_fixture_files(data_root, loader, folder):
    raw = data_root / folder / "raw"
    raw.mkdir(parents=True)
    train_x, train_y = _write_idx(raw, "train", 6, seed=0)
    test_x, test_y = _write_idx(raw, "t10k", 4, seed=1)
    train, test = loader(train=True), loader(train=False)
    assert len(train) == 6 and len(test) == 4
    x, y = data.as_tensors(test)
    assert x.shape == (4, 1, 28, 28) and x.dtype == torch.uint8
    assert torch.equal(x[:, 0], torch.from_numpy(test_x)) and y.tolist() == test_y.tolist()


@pytest.mark.parametrize(
    "loader, folder", [(data.mnist, "MNIST"), (data.fashion_mnist, "FashionMNIST")]
)
def test_missing_idx_files_offline_give_a_clear_error(data_root, loader, folder):
    with pytest.raises(FileNotFoundError) as info:
        loader()
    message = str(info.value)
    assert "COURSE_DATA_DIR" in message and "network is unreachable" in message
    assert str(data_root / folder / "raw" / "train-images-idx3-ubyte") in message
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no urllib traceback


def _write_image_folder(root, per_class):
    colours = {}
    for split, n in (("train", per_class), ("test", 1)):
        for label, name in enumerate(data.CIFAR10_CLASSES):
            folder = root / "cifar10" / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                colour = (label * 25, 255 - label * 25, i * 60)
                Image.new("RGB", (32, 32), colour).save(folder / f"{i:04d}.png")
                colours[(split, label, i)] = colour
    return colours


def test_cifar10_image_folder(data_root, capsys):
    colours = _write_image_folder(data_root, per_class=2)
    train = data.cifar10(train=True)
    assert "image folder" in capsys.readouterr().out
    assert train.data.shape == (20, 32, 32, 3) and train.data.dtype == np.uint8
    assert train.targets == [label for label in range(10) for _ in range(2)]
    assert train.classes == list(data.CIFAR10_CLASSES)
    assert tuple(train.data[3, 0, 0]) == colours[("train", 1, 1)]  # PNG: exact colours
    x, y = data.as_tensors(train)
    assert x.shape == (20, 3, 32, 32) and torch.equal(y, torch.tensor(train.targets))
    image, label = train[5]
    assert image.size == (32, 32) and label == 2


def test_cifar10_image_folder_with_wrong_classes(data_root):
    (data_root / "cifar10" / "train" / "kitten").mkdir(parents=True)
    with pytest.raises(ValueError, match="one folder per CIFAR-10 class"):
        data.cifar10(train=True)


def test_cifar10_missing_offline(data_root):
    with pytest.raises(FileNotFoundError, match="COURSE_DATA_DIR") as info:
        data.cifar10()
    assert "cifar-10-batches-py" in str(info.value) and "cifar10" in str(info.value)


def test_text_download_checked_and_cached(data_root, monkeypatch):
    text = b"First Citizen:\nBefore we proceed any further, hear me speak.\n"
    calls = []

    def fake_download(url, dest):
        calls.append(url)
        dest.write_bytes(text)

    monkeypatch.setattr(data, "_download_url", fake_download)
    monkeypatch.setattr(data, "SHAKESPEARE_SHA256", hashlib.sha256(text).hexdigest())
    assert data.tiny_shakespeare() == text.decode()
    assert (
        data.tiny_shakespeare() == text.decode() and len(calls) == 1
    )  # second time from the cache
    assert (data_root / "tinyshakespeare" / "input.txt").read_bytes() == text


def test_checksum_mismatch_is_rejected(data_root, monkeypatch):
    monkeypatch.setattr(data, "_download_url", lambda url, dest: dest.write_bytes(b"an error page"))
    with pytest.raises(ValueError, match="sha256"):
        data.tiny_shakespeare()
    assert not (data_root / "tinyshakespeare" / "input.txt").exists()  # nothing bad is kept
    path = data_root / "tinyshakespeare" / "input.txt"
    path.write_text("damaged")
    with pytest.raises(ValueError, match="damaged"):
        data.tiny_shakespeare()


def test_text_missing_offline(data_root):
    with pytest.raises(FileNotFoundError) as info:
        data.tiny_shakespeare()
    message = str(info.value)
    assert data.SHAKESPEARE_URL in message and "COURSE_DATA_DIR" in message
    assert str(data_root / "tinyshakespeare" / "input.txt") in message
