"""SGD (with momentum) and Adam written by hand, step for step as ``torch.optim`` computes them.

Same interface as ``torch.optim``: build with the parameters (tensors whose ``.grad`` something
filled in), then ``zero_grad()`` and ``step()``. Chapter 01 develops both and checks them against
``torch.optim.SGD`` and ``torch.optim.Adam`` after every step; ``tests/test_optim.py`` does too.
"""

from __future__ import annotations

import math

import torch

__all__ = ["Optimizer", "SGD", "Adam"]


class Optimizer:
    """Keeps the parameter list and one state dictionary per parameter."""

    def __init__(self, params, lr: float):
        self.params = list(params)
        if not self.params:
            raise ValueError(
                "the optimiser got no parameters: pass model.parameters() or a list of tensors"
            )
        if not all(isinstance(p, torch.Tensor) for p in self.params):
            raise TypeError(
                "parameters must be tensors (for the scalar engine, update p.data by hand)"
            )
        if not lr >= 0:
            raise ValueError(f"the learning rate must be >= 0, got lr={lr}")
        self.lr = lr
        self.state = [{} for _ in self.params]

    def zero_grad(self) -> None:
        """Forget the gradients (``None``, as ``torch.optim`` does by default)."""
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    r"""Stochastic gradient descent with momentum, PyTorch's formulation.

    With :math:`g_t = \nabla_\theta L + \lambda\theta_{t-1}` (weight decay :math:`\lambda`):

    .. math::
        b_1 = g_1,\quad b_t = \mu b_{t-1} + (1-\tau) g_t,\qquad
        \theta_t = \theta_{t-1} - \eta\,(g_t + \mu b_t \text{ if nesterov else } b_t).
    """

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ):
        super().__init__(params, lr)
        if momentum < 0 or weight_decay < 0:
            raise ValueError(
                f"momentum and weight_decay must be >= 0, got {momentum} and {weight_decay}"
            )
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(
                "nesterov=True needs momentum > 0 and dampening = 0 (as in torch.optim.SGD)"
            )
        self.momentum, self.dampening = momentum, dampening
        self.weight_decay, self.nesterov = weight_decay, nesterov

    @torch.no_grad()
    def step(self) -> None:
        for p, state in zip(self.params, self.state):
            if p.grad is None:  # a parameter that took no part in the loss is left alone
                continue
            g = p.grad
            if self.weight_decay:
                g = g + self.weight_decay * p  # L2 penalty (lambda/2)|p|^2, added to the gradient
            if self.momentum:
                if "momentum_buffer" not in state:  # first step: the buffer is the gradient itself
                    state["momentum_buffer"] = g.clone()
                else:
                    buf = state["momentum_buffer"]
                    buf.mul_(self.momentum).add_(g, alpha=1 - self.dampening)
                buf = state["momentum_buffer"]
                g = g + self.momentum * buf if self.nesterov else buf
            p.add_(g, alpha=-self.lr)


class Adam(Optimizer):
    r"""Adam (Kingma & Ba, 2015) exactly as ``torch.optim.Adam`` computes it.

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t,\quad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2,\\
        \theta_t = \theta_{t-1} - \frac{\eta}{1-\beta_1^t}\,
                   \frac{m_t}{\sqrt{v_t}/\sqrt{1-\beta_2^t} + \epsilon}

    Epsilon is added to :math:`\sqrt{\hat v_t}`, after the bias correction (not inside the square
    root, and not to :math:`\sqrt{v_t}` before correcting it).
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        super().__init__(params, lr)
        beta1, beta2 = betas
        if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
            raise ValueError(f"betas must lie in [0, 1), got {betas}")
        if eps < 0 or weight_decay < 0:
            raise ValueError(f"eps and weight_decay must be >= 0, got {eps} and {weight_decay}")
        self.betas, self.eps, self.weight_decay = (beta1, beta2), eps, weight_decay

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        for p, state in zip(self.params, self.state):
            if p.grad is None:
                continue
            g = p.grad
            if self.weight_decay:
                g = (
                    g + self.weight_decay * p
                )  # L2 in the gradient (AdamW decays the weights instead)
            if not state:
                state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
            state["step"] += 1
            t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
            m.mul_(beta1).add_(g, alpha=1 - beta1)  # first moment
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)  # second moment
            step_size = self.lr / (1 - beta1**t)  # bias correction of m
            denom = v.sqrt() / math.sqrt(1 - beta2**t) + self.eps  # sqrt(v_hat) + eps
            p.addcdiv_(m, denom, value=-step_size)
