"""A scalar reverse-mode autograd engine and a small MLP on top of it (chapter 01).

Every operation creates a new :class:`Value` that remembers its inputs and the *local*
derivatives of its output with respect to each input. :meth:`Value.backward` then walks the
graph once, outputs before inputs, and applies the chain rule::

    child.grad += local_derivative * node.grad

``+=`` (not ``=``) is what makes a node that is used twice (``b = a + a``) receive the sum of
both contributions. The notebook develops this engine step by step and checks it against
``torch.autograd``; the unit tests in ``tests/test_autograd.py`` guard the same equivalence.
"""

from __future__ import annotations

import math
import numbers
import random

__all__ = ["Value", "Module", "Neuron", "Layer", "MLP"]


def _sigmoid(x: float) -> float:
    """1 / (1 + e^-x) in one of two equal forms, so that exp never overflows."""
    if x >= 0:
        return 1 / (1 + math.exp(-x))
    e = math.exp(x)
    return e / (1 + e)


class Value:
    """A scalar that records how it was computed, so that gradients can flow back to its inputs."""

    __slots__ = ("data", "grad", "label", "_prev", "_local_grads", "_op")

    def __init__(self, data, _prev=(), _local_grads=(), _op="", label=""):
        if isinstance(data, Value) or not isinstance(data, numbers.Real) or isinstance(data, bool):
            raise TypeError(
                f"Value holds one real number (int or float), got {type(data).__name__}; "
                "for a tensor, use torch.tensor(..., requires_grad=True) instead."
            )
        self.data = float(data)
        self.grad = 0.0  # d(output of the last backward) / d(this value)
        self.label = label  # a name for drawings and error messages
        self._prev = tuple(_prev)  # the inputs of the operation that made this value
        self._local_grads = tuple(_local_grads)  # d(this value) / d(each input), same order
        self._op = _op  # the operation's name, for drawings

    def __repr__(self) -> str:
        name = f"{self.label}: " if self.label else ""
        return f"Value({name}data={self.data:.6g}, grad={self.grad:.6g})"

    # ------------------------------------------------------------------ binary operations

    @staticmethod
    def _lift(other):
        """Numbers become constant leaves; anything else is not ours to combine with."""
        if isinstance(other, Value):
            return other
        if isinstance(other, numbers.Real) and not isinstance(other, bool):
            return Value(other)
        return None

    def __add__(self, other):
        other = self._lift(other)
        if other is None:
            return NotImplemented
        return Value(self.data + other.data, (self, other), (1.0, 1.0), "+")

    def __sub__(self, other):
        other = self._lift(other)
        if other is None:
            return NotImplemented
        return Value(self.data - other.data, (self, other), (1.0, -1.0), "-")

    def __mul__(self, other):
        other = self._lift(other)
        if other is None:
            return NotImplemented
        return Value(self.data * other.data, (self, other), (other.data, self.data), "*")

    def __truediv__(self, other):
        other = self._lift(other)
        if other is None:
            return NotImplemented
        if other.data == 0:
            raise ZeroDivisionError(f"division by a Value that is 0 ({other!r})")
        a, b = self.data, other.data
        return Value(a / b, (self, other), (1 / b, -a / b**2), "/")

    def __pow__(self, exponent):
        if isinstance(exponent, Value):
            raise TypeError(
                "Value ** Value is not supported: the exponent must be a plain number. "
                "For a learnable exponent b, write (b * a.log()).exp()."
            )
        if not isinstance(exponent, numbers.Real) or isinstance(exponent, bool):
            return NotImplemented
        k = float(exponent)
        a = self.data
        if a < 0 and not k.is_integer():
            raise ValueError(
                f"({a:g}) ** {k:g} is not a real number: use a positive base or an integer exponent"
            )
        if a == 0 and 0 < k < 1:
            raise ZeroDivisionError(f"0 ** {k:g} has no finite derivative")
        local = 0.0 if k == 0 else k * a ** (k - 1)
        return Value(a**k, (self,), (local,), f"**{k:g}")

    def __radd__(self, other):  # 2 + a
        return self + other

    def __rmul__(self, other):  # 2 * a
        return self * other

    def __rsub__(self, other):  # 2 - a
        other = self._lift(other)
        return NotImplemented if other is None else other - self

    def __rtruediv__(self, other):  # 2 / a
        other = self._lift(other)
        return NotImplemented if other is None else other / self

    def __neg__(self):
        return Value(-self.data, (self,), (-1.0,), "neg")

    # ------------------------------------------------------------------ unary functions

    def exp(self):
        out = math.exp(self.data)
        return Value(out, (self,), (out,), "exp")

    def log(self):
        if self.data <= 0:
            raise ValueError(f"log needs a positive number, got {self.data:g} ({self!r})")
        return Value(math.log(self.data), (self,), (1 / self.data,), "log")

    def tanh(self):
        t = math.tanh(self.data)
        return Value(t, (self,), (1 - t * t,), "tanh")

    def relu(self):
        # the derivative at exactly 0 is taken as 0, as PyTorch does
        return Value(max(self.data, 0.0), (self,), (1.0 if self.data > 0 else 0.0,), "relu")

    def sigmoid(self):
        s = _sigmoid(self.data)
        return Value(s, (self,), (s * (1 - s),), "sigmoid")

    def softplus(self):
        """log(1 + e^x), as max(x, 0) + log1p(e^-|x|): exp never overflows, whatever x is.

        Its derivative is the sigmoid. The logistic loss of a score s is ``(-s).softplus()``.
        """
        x = self.data
        out = max(x, 0.0) + math.log1p(math.exp(-abs(x)))
        return Value(out, (self,), (_sigmoid(x),), "softplus")

    # ------------------------------------------------------------------ backpropagation

    def topological_order(self) -> list[Value]:
        """Every node this value depends on, inputs before the nodes computed from them.

        An explicit stack instead of recursion, so graphs thousands of nodes deep (a long sum)
        do not hit Python's recursion limit.
        """
        order, seen = [], set()
        stack = [(self, False)]
        while stack:
            node, children_done = stack.pop()
            if children_done:
                order.append(node)
                continue
            if node in seen:
                continue
            seen.add(node)
            stack.append((node, True))
            # reversed, so that the first input is visited first, as a recursive search would
            stack.extend((child, False) for child in reversed(node._prev) if child not in seen)
        return order

    def backward(self) -> None:
        """Add d(self)/d(node) to ``node.grad`` for every leaf below ``self``.

        Like PyTorch, leaves *accumulate* across calls (zero them between steps), while the
        intermediate nodes start from zero in every call.
        """
        order = self.topological_order()
        for node in order:
            if node._prev:  # intermediate node: its gradient belongs to this pass only
                node.grad = 0.0
        self.grad += 1.0  # d(self)/d(self)
        for node in reversed(order):  # outputs before inputs
            for child, local in zip(node._prev, node._local_grads):
                child.grad += local * node.grad  # chain rule; += sums over every path


# ---------------------------------------------------------------------- a small MLP


class Module:
    """Has parameters: ``parameters()`` lists them, ``zero_grad()`` resets their gradients."""

    def parameters(self) -> list[Value]:
        return []

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = 0.0


class Neuron(Module):
    """``relu(w · x + b)`` (or ``w · x + b`` when ``nonlin=False``).

    Weights and bias start uniform in ``±1/sqrt(nin)``, PyTorch's default for ``nn.Linear``.
    """

    def __init__(self, nin: int, nonlin: bool = True, rng: random.Random | None = None):
        if not isinstance(nin, int) or nin < 1:
            raise ValueError(f"a neuron needs at least one input, got nin={nin!r}")
        rng = rng or random
        bound = 1 / math.sqrt(nin)
        self.w = [Value(rng.uniform(-bound, bound)) for _ in range(nin)]
        self.b = Value(rng.uniform(-bound, bound))
        self.nonlin = nonlin

    def __call__(self, x) -> Value:
        if len(x) != len(self.w):
            raise ValueError(f"this neuron takes {len(self.w)} inputs, got {len(x)}")
        act = sum((wi * xi for wi, xi in zip(self.w, x)), self.b)
        return act.relu() if self.nonlin else act

    def parameters(self) -> list[Value]:
        return self.w + [self.b]

    def __repr__(self) -> str:
        return f"{'ReLU' if self.nonlin else 'Linear'}Neuron({len(self.w)})"


class Layer(Module):
    """``nout`` neurons that read the same inputs."""

    def __init__(self, nin: int, nout: int, nonlin: bool = True, rng: random.Random | None = None):
        if not isinstance(nout, int) or nout < 1:
            raise ValueError(f"a layer needs at least one neuron, got nout={nout!r}")
        self.neurons = [Neuron(nin, nonlin, rng) for _ in range(nout)]

    def __call__(self, x) -> list[Value]:
        return [n(x) for n in self.neurons]

    def parameters(self) -> list[Value]:
        return [p for n in self.neurons for p in n.parameters()]

    def __repr__(self) -> str:
        return f"Layer([{', '.join(map(repr, self.neurons[:1]))} x {len(self.neurons)}])"


class MLP(Module):
    """Layers of sizes ``nin -> nouts[0] -> ... -> nouts[-1]``, ReLU between them, none at the end.

    Called on a list of ``nin`` numbers (or Values); returns one Value when the last layer has
    one neuron, else a list.
    """

    def __init__(self, nin: int, nouts: list[int], rng: random.Random | None = None):
        if not nouts:
            raise ValueError("an MLP needs at least one layer: pass nouts=[...], e.g. [16, 16, 1]")
        sizes = [nin] + list(nouts)
        self.layers = [
            Layer(sizes[i], sizes[i + 1], nonlin=i < len(nouts) - 1, rng=rng)
            for i in range(len(nouts))
        ]

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x[0] if len(x) == 1 else x

    def parameters(self) -> list[Value]:
        return [p for layer in self.layers for p in layer.parameters()]

    def __repr__(self) -> str:
        sizes = [len(self.layers[0].neurons[0].w)] + [len(layer.neurons) for layer in self.layers]
        return f"MLP({' -> '.join(map(str, sizes))}, {len(self.parameters())} parameters)"
