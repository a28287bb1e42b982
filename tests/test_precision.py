"""The mixed-precision policy per device, and the fp16 + GradScaler path."""

import pytest
import torch
from torch import nn

from helpers import precision, train
from helpers.loader import TensorLoader


def _fake_cuda(monkeypatch, capability):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)


@pytest.mark.parametrize(
    "capability, name, scaled",
    [
        ((7, 5), "fp16", True),  # Colab's T4: bf16 only emulated
        ((7, 0), "fp16", True),  # V100
        ((8, 0), "bf16", False),  # A100
        ((8, 9), "bf16", False),  # L4, RTX 40xx
        ((9, 0), "bf16", False),  # H100
    ],
)
def test_cuda_policy_follows_the_compute_capability(monkeypatch, capability, name, scaled):
    _fake_cuda(monkeypatch, capability)
    policy = precision.choose("cuda")
    assert (policy.name, policy.scaled) == (name, scaled)
    assert policy.dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[name]
    assert f"{capability[0]}.{capability[1]}" in str(policy)


@pytest.mark.parametrize("device", ["cpu", "mps"])
def test_cpu_and_mps_train_in_float32(device):
    policy = precision.choose(device)
    assert policy.name == "fp32" and policy.dtype is None and not policy.scaled
    assert not policy.grad_scaler().is_enabled()
    with policy.autocast():
        assert nn.Linear(3, 2)(torch.randn(1, 3)).dtype == torch.float32


def test_overrides_and_bad_names():
    assert precision.choose("cpu", "bf16").dtype == torch.bfloat16
    policy = precision.choose("cpu", "fp16")
    assert policy is precision.choose("cuda", policy)  # a ready policy passes through
    with pytest.raises(ValueError, match="not one of"):
        precision.choose("cpu", "float16")
    with pytest.raises(ValueError, match="mps"):
        precision.choose("mps", "bf16")


def test_autocast_runs_matrix_products_in_the_chosen_dtype():
    with precision.choose("cpu", "bf16").autocast():
        assert nn.Linear(3, 2)(torch.randn(1, 3)).dtype == torch.bfloat16


def _blobs(n=256):
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, 4, generator=g) + 3 * y[:, None].float()
    return x, y


def test_fp16_training_goes_through_the_grad_scaler(monkeypatch):
    x, y = _blobs()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    calls = []
    real_step = torch.amp.GradScaler.step
    monkeypatch.setattr(
        torch.amp.GradScaler,
        "step",
        lambda self, opt, *a, **k: calls.append(self.get_scale()) or real_step(self, opt, *a, **k),
    )
    history = train.fit(
        model,
        TensorLoader(x, y, batch_size=32),
        torch.optim.SGD(model.parameters(), lr=0.1),
        epochs=3,
        val_loader=TensorLoader(x, y, batch_size=128),
        precision="fp16",
        grad_clip=1.0,
        progress=False,
    )
    assert len(calls) == 24 and calls[0] == 65536.0  # every step scaled, starting at 2**16
    assert (
        history["val_accuracy"][-1] > 0.95 and history["train_loss"][-1] < history["train_loss"][0]
    )


def test_scaler_skips_a_step_whose_gradients_overflowed():
    policy = precision.choose("cpu", "fp16")
    scaler = policy.grad_scaler()
    param = nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([param], lr=1.0)
    (scaler.scale(param.sum()) * float("inf")).backward()  # an overflow, as fp16 produces
    scaler.step(opt)
    scaler.update()
    assert torch.equal(param.detach(), torch.ones(3))  # the step was skipped
    assert scaler.get_scale() == 65536.0 / 2  # and the scale halved
    opt.zero_grad()
    scaler.scale(param.sum()).backward()
    scaler.step(opt)  # a finite gradient: unscaled (1 per element) and applied
    assert torch.allclose(param.detach(), torch.zeros(3))


def test_unit_roundoff_is_half_the_machine_epsilon():
    assert precision.unit_roundoff(torch.bfloat16) == 2**-8
    assert precision.unit_roundoff(torch.float32) == 2**-24
    x = torch.tensor(1 + 2**-8 + 2**-12)  # the largest relative error of rounding to bf16
    assert abs(x.bfloat16().float() - x) / x <= 2**-8


def _adam_ratio(grads, betas):
    """The last step |m̂ / sqrt(v̂)| of torch.optim.Adam (lr 1, no ε) after ``grads``."""
    w = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.Adam([w], lr=1.0, betas=betas, eps=0.0)
    before = w.detach().clone()
    for g in grads:
        before = w.detach().clone()
        w.grad = torch.tensor([float(g)])
        optimizer.step()
    return abs((w.detach() - before).item())  # lr = 1: the step is the ratio


@pytest.mark.parametrize("steps", [1, 2, 6, 40])
def test_adam_step_bound_is_reached_and_never_exceeded(steps):
    betas = (0.9, 0.99)
    bound = precision.adam_step_bound(steps, betas)
    generator = torch.Generator().manual_seed(steps)
    for _ in range(20):
        grads = torch.randn(steps, generator=generator).tolist()
        assert _adam_ratio(grads, betas) <= bound * (1 + 1e-6)
    b1, b2 = betas  # the worst case: g_i proportional to a_i / b_i
    worst = [
        ((1 - b1) * b1 ** (steps - i)) / ((1 - b2) * b2 ** (steps - i)) for i in range(1, steps + 1)
    ]
    assert _adam_ratio(worst, betas) == pytest.approx(bound, rel=1e-5)
    assert precision.adam_step_bound(1, betas) == 1.0


def test_drift_tolerance_adds_up_the_steps():
    lrs = [3e-3, 2e-3, 1e-3]
    tol = precision.drift_tolerance(lrs, (0.9, 0.99), torch.bfloat16)
    reach = sum(lr * precision.adam_step_bound(s, (0.9, 0.99)) for s, lr in enumerate(lrs, 1))
    assert tol["max"] == pytest.approx(2 * reach) and tol["typical"] == pytest.approx(reach / 256)
    resumed = precision.drift_tolerance(lrs[1:], (0.9, 0.99), torch.float32, first_step=2)
    assert resumed["reach"] < reach and resumed["unit_roundoff"] == 2**-24
