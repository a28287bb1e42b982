"""The models chapters hand on (helpers.pretrained): trained when missing, loaded when present."""

import types

import pytest
import torch
from toys import fake_cifar as _fake_cifar

from helpers import data, models, pretrained


def _fake_mnist(train, transform=None):
    n = 60_000 if train else 300
    g = torch.Generator().manual_seed(int(train))
    labels = torch.randint(0, 10, (n,), generator=g)
    images = (torch.rand(n, 28, 28, generator=g) * 100 + labels.view(-1, 1, 1) * 15).to(torch.uint8)
    return types.SimpleNamespace(data=images, targets=labels)


def _trained_then_loaded(loader, says, monkeypatch, tmp_path, capsys):
    """Call ``loader`` in quick mode with no checkpoint (it trains), then again (it loads)."""
    monkeypatch.setenv("COURSE_QUICK", "1")
    monkeypatch.setenv("COURSE_CHECKPOINT_DIR", str(tmp_path))
    model, config = loader("cpu", progress=False)
    assert f"training it first with {says}" in capsys.readouterr().out
    again, _ = loader("cpu")
    assert "Loading" in capsys.readouterr().out
    same = zip(model.state_dict().values(), again.state_dict().values())
    assert all(torch.equal(a, b) for a, b in same)
    return model, config


def test_mnist_split_is_chapter_02s():
    train, val = pretrained.mnist_split(n_train=55_000)
    order = torch.randperm(60_000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(val, order[:5_000]) and torch.equal(train, order[5_000:])


def test_mnist_cnn_trains_chapter_02s_recipe_when_the_checkpoint_is_missing(
    monkeypatch, tmp_path, capsys
):
    monkeypatch.setattr(data, "mnist", _fake_mnist)
    model, config = _trained_then_loaded(
        pretrained.mnist_cnn, "chapter 02's recipe", monkeypatch, tmp_path, capsys
    )
    assert (tmp_path / "mnist_cnn-quick.pt").exists() and config["model"] == model.config
    assert 0 < config["std"] and 0 <= config["test_accuracy"] <= 1 and config["epochs"] == 1


def test_cifar_halves_split_the_classes(monkeypatch):
    monkeypatch.setattr(data, "cifar10", _fake_cifar)
    halves = pretrained.cifar_halves(train=False)
    (sx, sy), (tx, ty) = halves["source"], halves["target"]
    assert sx.shape == tx.shape == (500, 3, 32, 32) and sx.dtype == torch.uint8
    assert torch.bincount(sy).tolist() == torch.bincount(ty).tolist() == [100] * 5
    assert halves["classes"]["source"][0] == "airplane" and halves["classes"]["target"][0] == "dog"
    # a target image of label 0 is a dog (class 5): its colour offset is 5 * 15
    assert sx[sy == 0].float().mean() < tx[ty == 0].float().mean()


def test_cifar5_resnet_trains_when_missing_and_loads_with_a_frozen_stem(
    monkeypatch, tmp_path, capsys
):
    monkeypatch.setattr(data, "cifar10", _fake_cifar)
    model, config = _trained_then_loaded(
        pretrained.cifar5_resnet, "chapter 03's recipe", monkeypatch, tmp_path, capsys
    )
    assert isinstance(model, models.ResNet) and model.head.out_features == 5
    assert not model.stem.weight.requires_grad and model.stem.bias.requires_grad
    assert config["classes"] == [0, 1, 2, 3, 4] and len(config["mean"]) == 3
    assert 0 <= config["test_accuracy"] <= 1 and config["recipe"]["widths"] == [8, 16, 16]


def test_budgets_follow_the_device(monkeypatch):
    monkeypatch.setenv("COURSE_QUICK", "0")
    assert pretrained.cifar5_budget("cpu")["widths"] == (16, 64, 64)
    assert pretrained.cifar5_budget("cuda")["widths"] == (64, 256, 256)
    monkeypatch.setenv("COURSE_QUICK", "1")
    assert pretrained.cifar5_budget("cuda")["epochs"] == 1


def test_load_model_rebuilds_from_the_config_and_names_what_is_missing(tmp_path):
    from helpers import checkpoint

    net = models.ConvNet(channels=(4, 6, 8), image_size=12)
    path = checkpoint.save_checkpoint(tmp_path / "cnn.pt", net, config={"model": net.config})
    again, config = pretrained.load_model(path, models.ConvNet)
    assert config["model"] == net.config
    assert all(
        torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values())
    )
    with pytest.raises(ValueError, match=r"is not chapter 02's model: its config lacks \['mean'\]"):
        pretrained.load_model(
            path, models.ConvNet, needs=("model", "mean"), what="chapter 02's model"
        )
