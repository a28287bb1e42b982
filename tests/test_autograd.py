"""helpers.autograd: every gradient equals torch.autograd's (float64), reuse, zeroing, errors."""

import math
import random

import pytest
import torch

from helpers.autograd import MLP, Layer, Neuron, Value


def tensors(*values):
    return [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in values]


def grad_or_zero(t):
    return 0.0 if t.grad is None else t.grad.item()


# name -> function of (a, b); Value and torch.Tensor share the operators and method names
OPERATIONS = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "pow_int": lambda a, b: a**3,
    "pow_negative": lambda a, b: a**-2,
    "pow_fraction": lambda a, b: a**0.5,
    "neg": lambda a, b: -a,
    "radd": lambda a, b: 2.5 + a,
    "rsub": lambda a, b: 2.5 - a,
    "rmul": lambda a, b: 2.5 * a,
    "rdiv": lambda a, b: 2.5 / a,
    "exp": lambda a, b: a.exp(),
    "log": lambda a, b: a.log(),
    "tanh": lambda a, b: a.tanh(),
    "relu": lambda a, b: a.relu(),
    "sigmoid": lambda a, b: a.sigmoid(),
    "same_input_twice": lambda a, b: a * a + a / b,
}
POINTS = [(0.7, -1.3), (2.1, 0.4), (1.0, 3.0)]  # a > 0: log and fractional powers are defined


@pytest.mark.parametrize("name", OPERATIONS)
@pytest.mark.parametrize("point", POINTS, ids=str)
def test_each_operation_matches_torch(name, point):
    op = OPERATIONS[name]
    a, b = Value(point[0]), Value(point[1])
    out = op(a, b)
    out.backward()
    ta, tb = tensors(*point)
    tout = op(ta, tb)
    tout.backward()
    assert out.data == pytest.approx(tout.item(), rel=1e-14)
    assert a.grad == pytest.approx(grad_or_zero(ta), rel=1e-13, abs=1e-15)
    assert b.grad == pytest.approx(grad_or_zero(tb), rel=1e-13, abs=1e-15)


@pytest.mark.parametrize("x", [-40.0, -3.0, -1e-3, 0.0, 2.0, 40.0, 800.0, -800.0])
def test_relu_and_sigmoid_at_the_edges(x):
    for name in ("relu", "sigmoid"):
        v = Value(x)
        out = getattr(v, name)()
        out.backward()
        t = tensors(x)[0]
        getattr(t, name)().backward()
        assert out.data == pytest.approx(getattr(torch, name)(t).item(), rel=1e-14, abs=1e-300)
        assert v.grad == pytest.approx(t.grad.item(), rel=1e-12, abs=1e-300), name


@pytest.mark.parametrize("x", [-1000.0, -800.0, -40.0, -1.0, 0.0, 1e-3, 3.0, 40.0, 1000.0])
def test_softplus_is_stable_and_matches_torch(x):
    v = Value(x)
    out = v.softplus()
    out.backward()
    t = tensors(x)[0]
    torch.nn.functional.softplus(t).backward()
    expected = torch.nn.functional.softplus(t).item()
    assert out.data == pytest.approx(expected, rel=1e-14, abs=1e-300)
    assert out.data == pytest.approx(
        -torch.nn.functional.logsigmoid(-t).item(), rel=1e-14, abs=1e-300
    )
    assert v.grad == pytest.approx(t.grad.item(), rel=1e-12, abs=1e-300)


def test_reused_node_accumulates():
    a = Value(3.0)
    b = a + a
    c = b * b
    c.backward()
    assert (a.grad, b.grad) == (24.0, 12.0)  # c = 4a^2: dc/da = 8a; dc/db = 2b

    x = Value(1.5)
    y = x * x * x + x.tanh() * x  # x used four times
    y.backward()
    tx = tensors(1.5)[0]
    (tx * tx * tx + tx.tanh() * tx).backward()
    assert x.grad == pytest.approx(tx.grad.item(), rel=1e-14)


def test_backward_twice_accumulates_like_torch_and_zeroing_resets():
    a, b = Value(2.0), Value(-1.5)
    out = (a * b).tanh() + a.exp()
    out.backward()
    once = (a.grad, b.grad)
    out.backward()
    assert (a.grad, b.grad) == pytest.approx((2 * once[0], 2 * once[1]), rel=1e-15)

    ta, tb = tensors(2.0, -1.5)
    tout = (ta * tb).tanh() + ta.exp()
    tout.backward(retain_graph=True)
    tout.backward()
    assert a.grad == pytest.approx(ta.grad.item(), rel=1e-14)
    assert b.grad == pytest.approx(tb.grad.item(), rel=1e-14)

    a.grad = b.grad = 0.0
    out.backward()
    assert (a.grad, b.grad) == pytest.approx(once, rel=1e-15)


def test_two_losses_sharing_a_node_add_up():
    """Intermediate gradients start from zero in each pass, so nothing is counted twice."""
    x, y = Value(2.0), Value(5.0)
    h = x * y
    (h + 1).backward()
    (h * 3).backward()
    assert x.grad == 4 * 5.0 and y.grad == 4 * 2.0


def test_module_zero_grad():
    model = MLP(3, [4, 2], rng=random.Random(0))
    out = model([1.0, -2.0, 0.5])
    (out[0] * out[1]).backward()
    assert any(p.grad != 0 for p in model.parameters())
    model.zero_grad()
    assert all(p.grad == 0 for p in model.parameters())


def test_deep_graph_needs_no_recursion():
    total = sum(Value(float(i)) for i in range(20_000))
    total.backward()
    assert total.data == sum(range(20_000))
    assert all(node.grad == 1.0 for node in total.topological_order())


OPS = [
    lambda a, b, k: a + b,
    lambda a, b, k: a - b,
    lambda a, b, k: a * b,
    lambda a, b, k: a / (b * b + 1),
    lambda a, b, k: (a.sigmoid() + 0.5) ** k,
    lambda a, b, k: (-(a * a)).exp(),
    lambda a, b, k: (a * a + 1).log(),
    lambda a, b, k: a.tanh() * b,
    lambda a, b, k: a.relu() - b.sigmoid(),
    lambda a, b, k: 1.5 / (a * a + 2) - b,
]


def random_expression(rng, leaves, n_ops):
    """Pick operations and inputs at random; inputs come from everything computed so far (reuse)."""
    pool = list(leaves)
    for _ in range(n_ops):
        op, k = rng.choice(OPS), rng.choice([-1, 0.5, 2, 3])
        pool.append(op(rng.choice(pool), rng.choice(pool), k))
    return sum(pool[len(leaves) :])


@pytest.mark.parametrize("seed", range(40))
def test_random_expressions_match_torch(seed):
    values = [random.Random(seed).uniform(-2, 2) for _ in range(5)]
    n_ops = 5 + seed % 20
    leaves = [Value(v) for v in values]
    out = random_expression(random.Random(seed), leaves, n_ops)
    out.backward()
    tleaves = tensors(*values)
    tout = random_expression(random.Random(seed), tleaves, n_ops)
    tout.backward()
    assert out.data == pytest.approx(tout.item(), rel=1e-12, abs=1e-12)
    for v, t in zip(leaves, tleaves):
        assert v.grad == pytest.approx(grad_or_zero(t), rel=1e-10, abs=1e-12)


def test_mlp_matches_torch():
    model = MLP(3, [5, 4, 2], rng=random.Random(1))
    torch_model = torch.nn.Sequential(
        torch.nn.Linear(3, 5),
        torch.nn.ReLU(),
        torch.nn.Linear(5, 4),
        torch.nn.ReLU(),
        torch.nn.Linear(4, 2),
    ).double()
    with torch.no_grad():
        for layer, linear in zip(model.layers, torch_model[::2]):
            linear.weight.copy_(
                torch.tensor([[w.data for w in n.w] for n in layer.neurons], dtype=torch.float64)
            )
            linear.bias.copy_(torch.tensor([n.b.data for n in layer.neurons], dtype=torch.float64))
    xs = [[0.5, -1.0, 2.0], [1.5, 0.3, -0.7]]
    loss = sum((o - 1.0) ** 2 for x in xs for o in model(x))
    loss.backward()
    torch_loss = ((torch_model(torch.tensor(xs, dtype=torch.float64)) - 1.0) ** 2).sum()
    torch_loss.backward()
    assert loss.data == pytest.approx(torch_loss.item(), rel=1e-13)
    for layer, linear in zip(model.layers, torch_model[::2]):
        grads = torch.tensor([[w.grad for w in n.w] for n in layer.neurons], dtype=torch.float64)
        assert torch.allclose(grads, linear.weight.grad, rtol=1e-12, atol=1e-14)
        assert torch.allclose(
            torch.tensor([n.b.grad for n in layer.neurons], dtype=torch.float64),
            linear.bias.grad,
            rtol=1e-12,
            atol=1e-14,
        )


def test_mlp_structure():
    model = MLP(2, [16, 16, 1], rng=random.Random(0))
    assert len(model.parameters()) == (2 * 16 + 16) + (16 * 16 + 16) + (16 + 1)
    assert isinstance(model([0.1, 0.2]), Value)  # one output: a Value, not a list
    assert [n.nonlin for layer in model.layers for n in layer.neurons[:1]] == [True, True, False]
    bound = 1 / math.sqrt(16)
    assert all(abs(p.data) <= bound for p in model.layers[1].parameters())
    assert len(Layer(3, 4).parameters()) == 16 and len(Neuron(3).parameters()) == 4
    assert "337 parameters" in repr(model)


def test_clear_errors():
    with pytest.raises(TypeError, match="real number"):
        Value("3")
    with pytest.raises(TypeError, match="real number"):
        Value(torch.tensor(1.0))
    with pytest.raises(ValueError, match="positive"):
        Value(-1.0).log()
    with pytest.raises(TypeError, match="exponent"):
        Value(2.0) ** Value(3.0)
    with pytest.raises(ValueError, match="not a real number"):
        Value(-2.0) ** 0.5
    with pytest.raises(ZeroDivisionError):
        Value(1.0) / 0
    with pytest.raises(TypeError):
        Value(1.0) + "x"
    with pytest.raises(ValueError, match="takes 2 inputs"):
        MLP(2, [3, 1])([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="at least one layer"):
        MLP(2, [])
    with pytest.raises(ValueError, match="at least one input"):
        Neuron(0)
