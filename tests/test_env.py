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


def test_describe_hardware_on_a_cpu(monkeypatch):
    _fake_hardware(monkeypatch, cuda=False, mps=False)
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    lines = helpers.device.describe_hardware().splitlines()
    assert len(lines) == 3 and lines[0].startswith("CPU: ") and "bf16 instructions:" in lines[0]
    assert lines[1].startswith("CUDA available: False | PyTorch built with CUDA 12.4. On a CUDA")
    assert "compute capability" in lines[1] and "bf16 is native (8.0 and up)" in lines[1]
    assert lines[2].startswith("MPS (Apple GPU) available: False | built with MPS: ")
    monkeypatch.setattr(torch.version, "cuda", None)  # a CPU-only wheel
    assert "PyTorch built without CUDA." in helpers.device.describe_hardware()


def test_describe_hardware_with_two_gpus(monkeypatch):
    _fake_hardware(monkeypatch, cuda=True, mps=False)
    gpus = [("NVIDIA A100-SXM4-40GB", (8, 0)), ("Tesla T4", (7, 5))]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: gpus[i][0])
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i: gpus[i][1])
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.backends.cudnn, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 90100)
    assert helpers.device.describe_hardware().splitlines()[1:-1] == [
        "CUDA available: True | PyTorch built with CUDA 12.4, cuDNN 9.1.0",
        "  cuda:0 NVIDIA A100-SXM4-40GB: compute capability 8.0, bf16 native",
        "  cuda:1 Tesla T4: compute capability 7.5, bf16 not native (fp16 + GradScaler)",
    ]


@pytest.mark.parametrize(
    "number, text", [(90100, "9.1.0"), (92400, "9.24.0"), (8902, "8.9.2"), (None, "not available")]
)
def test_cudnn_version_in_words(number, text):
    assert helpers.device.cudnn_version(number) == text


def test_bf16_native_from_compute_capability_8_0():
    assert helpers.device.bf16_native((8, 0)) and helpers.device.bf16_native((9, 0))
    assert not helpers.device.bf16_native((7, 5))


def test_cpu_bf16_flags_read_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 amx_bf16 avx512f avx512_bf16\n\n")
    assert helpers.device.cpu_bf16_flags(cpuinfo) == ["avx512_bf16", "amx_bf16"]
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f\n")
    assert helpers.device.cpu_bf16_flags(cpuinfo) == []
    assert helpers.device.cpu_bf16_flags(tmp_path / "missing") is None  # macOS, Windows
