"""helpers.optim: SGD and Adam agree with torch.optim after every step, from identical starts."""

import pytest
import torch

from helpers.hand_optim import SGD, Adam

SGD_SETTINGS = [
    dict(lr=0.1),
    dict(lr=0.1, momentum=0.9),
    dict(lr=0.05, momentum=0.8, dampening=0.3),
    dict(lr=0.05, momentum=0.9, nesterov=True),
    dict(lr=0.1, weight_decay=1e-2),
    dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-3),
    dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2),
]
ADAM_SETTINGS = [
    dict(),
    dict(lr=1e-2),
    dict(lr=3e-2, betas=(0.8, 0.99)),
    dict(lr=1e-2, eps=1e-3),
    dict(lr=1e-2, weight_decay=1e-2),
    dict(lr=5e-3, betas=(0.5, 0.9), eps=1e-6, weight_decay=0.1),
]


def make_params(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(4, 3), (4,), (2, 4), (2,)]
    return [torch.randn(s, generator=g, dtype=dtype) for s in shapes]


def loss_fn(params, step):
    """A smooth non-quadratic loss whose gradients change from step to step."""
    w1, b1, w2, b2 = params
    g = torch.Generator().manual_seed(100 + step)
    x = torch.randn(8, 3, generator=g, dtype=w1.dtype)
    y = torch.randn(8, 2, generator=g, dtype=w1.dtype)
    hidden = torch.tanh(x @ w1.T + b1)
    return ((hidden @ w2.T + b2 - y) ** 2).mean()


def run_side_by_side(ours_cls, theirs_cls, settings, dtype, steps=25, skip_last=False):
    ours_params = [p.clone().requires_grad_() for p in make_params(dtype)]
    theirs_params = [p.clone().requires_grad_() for p in make_params(dtype)]
    ours = ours_cls(ours_params, **settings)
    theirs = theirs_cls(theirs_params, **settings)
    tol = dict(rtol=1e-12, atol=1e-14) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    for step in range(steps):
        for params, opt in ((ours_params, ours), (theirs_params, theirs)):
            opt.zero_grad()
            loss_fn(params, step).backward()
            if skip_last:  # a parameter without a gradient must be left alone
                params[-1].grad = None
            opt.step()
        for a, b in zip(ours_params, theirs_params):
            assert torch.allclose(a, b, **tol), (
                f"step {step}: max diff {(a - b).abs().max().item():.2e}"
            )
    return ours_params


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("settings", SGD_SETTINGS, ids=str)
def test_sgd_matches_torch_every_step(settings, dtype):
    run_side_by_side(SGD, torch.optim.SGD, settings, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("settings", ADAM_SETTINGS, ids=str)
def test_adam_matches_torch_every_step(settings, dtype):
    run_side_by_side(Adam, torch.optim.Adam, settings, dtype)


@pytest.mark.parametrize(
    "cls, settings", [(SGD, dict(lr=0.1, momentum=0.9)), (Adam, dict(lr=1e-2))]
)
def test_parameters_without_gradient_are_skipped(cls, settings):
    torch_cls = torch.optim.SGD if cls is SGD else torch.optim.Adam
    params = run_side_by_side(cls, torch_cls, settings, torch.float64, steps=5, skip_last=True)
    assert torch.equal(params[-1].detach(), make_params(torch.float64)[-1])


def test_adam_epsilon_is_added_after_the_square_root():
    """With tiny gradients the placement of eps decides the step size: sqrt(v_hat) + eps."""
    p = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = Adam([p], lr=1.0, eps=1e-8)
    p.grad = torch.full_like(p, -1e-8)
    opt.step()
    # t = 1: m_hat = g, sqrt(v_hat) = |g|, so the step is lr * g / (|g| + eps) = 1/2
    assert p.item() == pytest.approx(0.5, rel=1e-12)


def test_first_momentum_step_uses_the_gradient_itself():
    p = torch.zeros(1, requires_grad=True)
    opt = SGD([p], lr=1.0, momentum=0.9, dampening=0.5)
    p.grad = torch.ones(1)
    opt.step()
    assert p.item() == -1.0  # buffer = g on the first step, not (1 - dampening) * g
    p.grad = torch.ones(1)
    opt.step()
    assert p.item() == pytest.approx(-1.0 - (0.9 * 1.0 + 0.5 * 1.0))


def test_zero_grad_sets_none():
    p = torch.zeros(2, requires_grad=True)
    p.grad = torch.ones(2)
    opt = Adam([p])
    opt.zero_grad()
    assert p.grad is None


def test_works_with_plain_tensors_and_hand_written_gradients():
    """The chapter's hand-written backward passes fill .grad of tensors that need no autograd."""
    p = torch.ones(3)
    opt = SGD([p], lr=0.5)
    p.grad = torch.full((3,), 2.0)
    opt.step()
    assert torch.equal(p, torch.zeros(3))


def test_clear_errors():
    p = [torch.zeros(1, requires_grad=True)]
    with pytest.raises(ValueError, match="no parameters"):
        SGD([], lr=0.1)
    with pytest.raises(ValueError, match="learning rate"):
        SGD(p, lr=-1.0)
    with pytest.raises(ValueError, match="nesterov"):
        SGD(p, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="nesterov"):
        SGD(p, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True)
    with pytest.raises(ValueError, match="betas"):
        Adam(p, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match=">= 0"):
        Adam(p, eps=-1.0)
    with pytest.raises(TypeError, match="tensors"):
        SGD([1.0], lr=0.1)
