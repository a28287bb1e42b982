import math

import pytest
import torch
from torch import nn

import helpers
from helpers.loader import TensorLoader


def _problem(n=512, seed=0):
    """Three well-separated Gaussian blobs in 2-D: learnable in a few epochs."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    centres = torch.tensor([[0.0, 3.0], [3.0, -2.0], [-3.0, -2.0]])
    x = centres[y] + torch.randn(n, 2, generator=g)
    return x, y


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 3))


def test_fit_learns_and_history_is_consistent():
    x, y = _problem()
    train = TensorLoader(x[:384], y[:384], batch_size=32, shuffle=True)
    val = TensorLoader(x[384:], y[384:], batch_size=64)
    model = _model()
    before = helpers.train.evaluate(model, val)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.2, total_steps=4 * len(train))
    history = helpers.train.fit(
        model, train, opt, epochs=4, val_loader=val, scheduler=sched, grad_clip=1.0, progress=False
    )
    assert set(history) == {
        "step",
        "epoch",
        "train_loss",
        "val_loss",
        "val_accuracy",
        "lr",
        "seconds",
    }
    assert all(len(v) == 4 for v in history.values())
    assert history["epoch"] == [1.0, 2.0, 3.0, 4.0] and history["step"] == [12, 24, 36, 48]
    assert history["train_loss"][-1] < history["train_loss"][0] < before["loss"]
    assert history["val_accuracy"][-1] > 0.95 and history["val_accuracy"][-1] > before["accuracy"]
    assert all(b > a for a, b in zip(history["seconds"], history["seconds"][1:]))
    assert (
        history["lr"][-1] < 1e-3
    )  # OneCycle ends near zero: the scheduler was stepped every batch
    after = helpers.train.evaluate(model, val)
    assert math.isclose(after["loss"], history["val_loss"][-1], rel_tol=1e-6)
    assert model.training  # evaluate() restores the mode


def test_fit_by_steps_with_an_endless_loader():
    x, y = _problem()

    def endless():
        g = torch.Generator().manual_seed(1)
        while True:
            i = torch.randint(0, len(x), (32,), generator=g)
            yield x[i], y[i]

    model = _model()
    history = helpers.train.fit(
        model,
        endless(),
        torch.optim.Adam(model.parameters(), 1e-2),
        steps=50,
        val_loader=TensorLoader(x, y, batch_size=128),
        eval_every=20,
        progress=False,
    )
    assert history["step"] == [20, 40, 50] and "epoch" not in history
    assert history["val_accuracy"][-1] > 0.9


def test_fit_evaluates_every_n_steps_in_epoch_mode_too():
    x, y = _problem()
    train = TensorLoader(x[:384], y[:384], batch_size=32)  # 12 batches per epoch
    model = _model()
    history = helpers.train.fit(
        model,
        train,
        torch.optim.SGD(model.parameters(), lr=0.1),
        epochs=2,
        val_loader=TensorLoader(x[384:], y[384:], batch_size=64),
        eval_every=5,
        progress=False,
    )
    assert history["step"] == [5, 10, 15, 20, 24]
    assert history["epoch"] == [5 / 12, 10 / 12, 15 / 12, 20 / 12, 2.0]
    assert len(history["val_accuracy"]) == 5


def test_fit_needs_epochs_or_steps():
    model = _model()
    with pytest.raises(ValueError, match="exactly one"):
        helpers.train.fit(model, [], torch.optim.SGD(model.parameters(), 0.1))


def test_evaluate_and_predict_agree_with_a_manual_pass():
    x, y = _problem(100)
    model = _model()
    loader = TensorLoader(x, y, batch_size=30)
    outputs, targets = helpers.train.predict(model, loader)
    with torch.no_grad():
        logits = model(x)
    assert torch.allclose(outputs, logits, atol=1e-6) and torch.equal(targets, y)
    metrics = helpers.train.evaluate(model, loader)
    assert math.isclose(
        metrics["loss"], nn.functional.cross_entropy(logits, y).item(), rel_tol=1e-5
    )
    assert metrics["accuracy"] == (logits.argmax(1) == y).float().mean().item()


def test_cross_entropy_handles_sequences():
    logits, targets = torch.randn(2, 5, 7), torch.randint(0, 7, (2, 5))
    expected = nn.functional.cross_entropy(logits.transpose(1, 2), targets)
    assert torch.allclose(helpers.train.cross_entropy(logits, targets), expected)


def test_fit_fails_fast_on_empty_exhausted_or_closed_iterators():
    x, y = _problem(64)
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="empty"):
        helpers.train.fit(model, [], opt, epochs=1, progress=False)
    with pytest.raises(ValueError, match="gave no batch"):
        helpers.train.fit(model, [], opt, steps=3, progress=False)
    exhausted = iter([(x, y)])
    next(exhausted)
    with pytest.raises(ValueError, match="gave no batch"):
        helpers.train.fit(model, exhausted, opt, steps=3, progress=False)
    closed = (b for b in [(x, y)] * 5)
    closed.close()
    with pytest.raises(ValueError, match="gave no batch"):
        helpers.train.fit(model, closed, opt, steps=3, progress=False)
    with pytest.raises(ValueError, match="ended after 2 of 5 batches"):
        helpers.train.fit(model, iter([(x, y)] * 2), opt, steps=5, progress=False)
    with pytest.raises(ValueError, match="needs a loader with a length"):
        helpers.train.fit(model, iter([(x, y)]), opt, epochs=1, progress=False)


def test_an_endless_stream_feeds_several_fit_calls():
    from helpers.loader import random_windows

    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 10))
    stream = random_windows(
        torch.arange(200) % 10,
        block_size=8,
        batch_size=4,
        generator=torch.Generator().manual_seed(0),
    )
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    first = helpers.train.fit(model, stream, opt, steps=5, progress=False)
    second = helpers.train.fit(model, stream, opt, steps=5, progress=False)  # used to hang forever
    assert first["step"] == second["step"] == [5]
    assert next(stream)[0].shape == (4, 8)  # still open


def test_a_list_is_restarted_in_step_mode():
    x, y = _problem(64)
    model = _model()
    history = helpers.train.fit(
        model,
        [(x[:32], y[:32]), (x[32:], y[32:])],
        torch.optim.SGD(model.parameters(), 0.1),
        steps=7,
        eval_every=3,
        progress=False,
    )
    assert history["step"] == [3, 6, 7] and history["epoch"] == [1.5, 3.0, 3.5]


def test_no_float64_anywhere_in_fit_evaluate_and_predict():
    from guards import NoFloat64

    x, y = _problem()
    model = _model()
    train = TensorLoader(x[:384], y[:384], batch_size=32, shuffle=True)
    val = TensorLoader(x[384:], y[384:], batch_size=64)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=2 * len(train))
    with NoFloat64():
        history = helpers.train.fit(
            model,
            train,
            opt,
            epochs=2,
            val_loader=val,
            scheduler=sched,
            grad_clip=1.0,
            progress=False,
        )
        helpers.train.evaluate(model, val)
        helpers.train.predict(model, val)
    assert history["val_accuracy"][-1] > 0.9
    with pytest.raises(AssertionError, match="float64"), NoFloat64():  # the guard does catch it
        torch.zeros(3, dtype=torch.float64)


def test_fit_passes_tuple_inputs_and_logs_to_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = _model()

        def forward(self, x, shift):
            return self.net(x + shift)

    x, y = _problem()
    shift = torch.zeros_like(x)
    train_loader = TensorLoader(x[:384], shift[:384], y[:384], batch_size=32, inputs=2)
    val = TensorLoader(x[384:], shift[384:], y[384:], batch_size=64, inputs=2)
    model = TwoInputs()
    optimizer = torch.optim.Adam(model.parameters(), 0.01)
    history = helpers.train.fit(
        model, train_loader, optimizer, epochs=2, val_loader=val, log_dir=tmp_path / "run"
    )
    events = EventAccumulator(str(tmp_path / "run")).Reload()
    logged = [(e.step, e.value) for e in events.Scalars("loss/validation")]
    assert [s for s, _ in logged] == history["step"]
    assert all(math.isclose(v, h, rel_tol=1e-6) for (_, v), h in zip(logged, history["val_loss"]))
    assert {"loss/train", "accuracy/validation", "learning_rate"} <= set(events.Tags()["scalars"])
    evaluated = helpers.train.evaluate(model, val)
    assert math.isclose(evaluated["loss"], history["val_loss"][-1], rel_tol=1e-5)
    outputs, targets = helpers.train.predict(model, val)
    assert outputs.shape == (128, 3) and torch.equal(targets, y[384:])
