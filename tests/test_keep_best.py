"""fit(keep_best=True): best-checkpoint selection on validation data."""

import pytest
import torch
from torch import nn

import helpers
from helpers.loader import TensorLoader


def test_keep_best_loads_back_the_weights_of_the_best_evaluation():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 2, generator=g)
    y = (x[:, 0] > 0).long()
    good = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)]
    bad = [(xb, 1 - yb) for xb, yb in good]  # then the labels flip: the model unlearns
    val = TensorLoader(x, y, batch_size=128)
    torch.manual_seed(0)
    model = nn.Linear(2, 2)
    history = helpers.train.fit(
        model,
        good * 3 + bad * 3,
        torch.optim.SGD(model.parameters(), lr=0.5),
        steps=48,
        val_loader=val,
        eval_every=8,
        keep_best=True,
        progress=False,
    )
    best = min(range(len(history["val_loss"])), key=history["val_loss"].__getitem__)
    assert history["best_step"] == history["step"][best] < 48  # not the last step
    assert history["val_loss"][-1] > history["val_loss"][best]
    now = helpers.train.evaluate(model, val)["loss"]
    assert now == pytest.approx(history["val_loss"][best], rel=1e-6)


def test_keep_best_needs_validation_data():
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="val_loader"):
        helpers.train.fit(
            model,
            [(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long))],
            torch.optim.SGD(model.parameters(), lr=0.1),
            steps=1,
            keep_best=True,
        )
