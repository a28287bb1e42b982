import random

import numpy as np
import pytest
import torch

import helpers
from helpers import device, install


def test_pick_follows_course_quick(monkeypatch):
    assert helpers.env.pick(full=12, quick=1) == 12 and helpers.env.run_mode() == "full"
    monkeypatch.setenv("COURSE_QUICK", "1")
    assert helpers.env.pick(full=12, quick=1) == 1 and helpers.env.run_mode() == "quick"
    monkeypatch.setenv("COURSE_QUICK", "0")
    assert helpers.env.pick(full=12, quick=1) == 12


def test_bad_course_quick_is_an_error(monkeypatch):
    monkeypatch.setenv("COURSE_QUICK", "maybe")
    with pytest.raises(ValueError, match="COURSE_QUICK"):
        helpers.env.pick(full=1, quick=0)


def _fake_hardware(monkeypatch, cuda: bool, mps: bool):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1 if cuda else 0)
    monkeypatch.setattr(device, "mps_available", lambda: mps)


@pytest.mark.parametrize(
    "cuda, mps, expected", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")]
)
def test_device_preference_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    _fake_hardware(monkeypatch, cuda, mps)
    assert helpers.device.get_device().type == expected


def test_course_device_overrides(monkeypatch):
    _fake_hardware(monkeypatch, cuda=True, mps=False)
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    assert helpers.device.get_device() == torch.device("cpu")
    assert helpers.device.get_device("cuda:0") == torch.device(
        "cuda:0"
    )  # an argument wins over the variable


@pytest.mark.parametrize(
    "value, message",
    [
        ("gpu", "not a device name"),
        ("xla", "supports cpu, cuda and mps"),
        ("mps", "cannot use mps"),
        ("cuda", "cannot use cuda"),
    ],
)
def test_unknown_or_unavailable_device_is_a_clear_error(monkeypatch, value, message):
    _fake_hardware(monkeypatch, cuda=False, mps=False)
    monkeypatch.setenv("COURSE_DEVICE", value)
    with pytest.raises(ValueError, match=message):
        helpers.device.get_device()


def test_cuda_index_out_of_range(monkeypatch):
    _fake_hardware(monkeypatch, cuda=True, mps=False)
    with pytest.raises(ValueError, match="only 1 CUDA device"):
        helpers.device.get_device("cuda:3")


def test_setup_seeds_and_reports(capsys):
    chosen = helpers.env.setup(seed=123, device="cpu")
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    helpers.env.setup(seed=123, device="cpu")
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first
    line = capsys.readouterr().out.splitlines()[0]
    assert chosen == torch.device("cpu")
    for part in (
        "mode full",
        "device cpu",
        "precision float32",
        f"torch {torch.__version__}",
        "torchvision",
        "seed 123",
    ):
        assert part in line


def test_check_install_reads_the_project_requirements(monkeypatch, capsys):
    assert install.check_install() is True
    out = capsys.readouterr().out
    assert (
        "OK   torch" in out and "OK   Python" in out and "jupyter" not in out
    )  # extras are skipped

    real_version = install.metadata.version
    monkeypatch.setattr(
        install.metadata, "version", lambda name: "1.0" if name == "torch" else real_version(name)
    )
    assert install.check_install() is False
    assert (
        "FAIL torch 1.0 (needs >=2.4)  ->  upgrade: pip install -U 'torch>=2.4'"
        in capsys.readouterr().out
    )


def test_check_install_without_the_project(capsys):
    assert install.check_install("no-such-project") is False
    assert "FAIL no-such-project is not installed" in capsys.readouterr().out
