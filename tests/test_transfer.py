"""Chapter 05's experiment (helpers.transfer) at toy size: the strategies, the probe, the sweep."""

import pytest
import torch
from guards import NoFloat64
from torch import nn
from toys import convnet as _source
from toys import fake_cifar, resnet
from toys import images as _toy
from toys import normalise as _normalise

from helpers import data, finetune, loader, summary, transfer


def _settings(**changes):
    return transfer.FinetuneSettings(lr=1e-2, warmup=0.25).replace(**changes)


def _new_model(x):
    return _source(seed=1, num_classes=4)


def test_plan_gives_every_budget_a_batch_and_steps():
    assert transfer.plan(10) == (50, 150)
    batch, steps = transfer.plan(1000)
    assert batch == 128 and steps == 474
    assert transfer.plan(10, scale=0.1)[1] == 15


# ----------------------------------------------------------------------------- strategies


def test_cached_probe_matches_the_probe_through_the_frozen_body():
    source = _source()
    x, y = _toy()
    settings = _settings()
    model, history = transfer.finetune(
        "linear_probe",
        source,
        x,
        y,
        settings,
        steps=12,
        batch_size=16,
        transform=_normalise,
        seed=3,
        num_classes=4,
    )
    features = finetune.extract_features(finetune.feature_extractor(source), x, _normalise)
    with NoFloat64():
        probe, probe_history = transfer.train_linear_probe(
            features, y, settings, steps=12, batch_size=16, seed=3, num_classes=4, like=source
        )
    assert torch.allclose(probe.fc.weight, model.head.fc.weight, atol=1e-5)
    assert probe_history["seconds"][-1] > 0 and len(history["step"]) == 1
    body = {k: v for k, v in source.state_dict().items() if not k.startswith("head")}
    assert all(torch.equal(model.state_dict()[k], v) for k, v in body.items())
    # nothing in the body moved, BatchNorm statistics included


@pytest.mark.parametrize("strategy", list(transfer.STRATEGIES))
def test_every_strategy_trains_at_toy_size_without_float64(strategy):
    source = _source()
    before = {k: v.clone() for k, v in source.state_dict().items()}
    x, y = _toy()
    probe = nn.Linear(8, 4)
    val = loader.TensorLoader(x, y, batch_size=16, transform=_normalise)
    with NoFloat64():
        model, history = transfer.finetune(
            strategy,
            source,
            x,
            y,
            _settings(layer_decay=0.5),
            steps=16,
            batch_size=16,
            transform=_normalise,
            head=probe,
            num_classes=4,
            new_model=_new_model,
            val_loader=val,
            eval_every=4,
        )
    assert history["step"][-1] == 16 and history["seconds"] == sorted(history["seconds"])
    assert history["val_accuracy"][-1] > 0.25  # better than chance on 4 classes
    assert all(torch.equal(v, before[k]) for k, v in source.state_dict().items())
    frozen = {"linear_probe": 3, "last_block": 2}.get(strategy, 0)
    assert sum(finetune.is_frozen(getattr(model, f"block{i}")) for i in (1, 2, 3)) == frozen
    if strategy == "lp_ft":
        assert not torch.equal(model.head.fc.weight, probe.weight)  # started there, then trained


def test_gradual_unfreezing_opens_one_block_per_phase():
    model, history = transfer.finetune(
        "gradual",
        _source(),
        *_toy(),
        _settings(),
        steps=20,
        batch_size=16,
        transform=_normalise,
        num_classes=4,
        val_loader=None,
        eval_every=5,
    )
    assert history["step"] == [5, 10, 15, 20] and summary.count_parameters(model) == sum(
        p.numel() for p in model.parameters()
    )


def test_strategy_errors_name_the_fix():
    x, y = _toy()
    with pytest.raises(ValueError, match="not one of"):
        transfer.finetune("everything", _source(), x, y, _settings(), steps=2, batch_size=4)
    with pytest.raises(ValueError, match="head=probe"):
        transfer.finetune("lp_ft", _source(), x, y, _settings(), steps=2, batch_size=4)
    with pytest.raises(ValueError, match="at least 4 steps"):
        transfer.finetune("gradual", _source(), x, y, _settings(), steps=3, batch_size=4)
    with pytest.raises(ValueError, match="new_model"):
        transfer.finetune("scratch", _source(), x, y, _settings(), steps=2, batch_size=4)


def test_sweep_gives_one_row_per_strategy_budget_and_seed():
    source = _source()
    (x, y), (tx, ty) = _toy(20), _toy(5, seed=1)
    task = transfer.TransferTask(x, y, tx, ty, _normalise, tx, ty, _normalise, _new_model)
    settings = {s: _settings() for s in transfer.STRATEGIES}
    lines = []
    with NoFloat64():
        rows = transfer.sweep(
            source,
            task,
            settings,
            budgets=[2, 6],
            seeds={2: [0, 1], 6: [0]},
            scale=0.1,
            log=lines.append,
        )
    assert len(rows) == 3 * len(transfer.STRATEGIES) and len(lines) == 2
    table = transfer.summarize(rows)
    assert table["scratch", 2]["n"] == 2 and table["full", 6]["n"] == 1
    assert all(0 <= r["test_accuracy"] <= 1 for r in rows)
    assert ("scratch", 2) not in transfer.summarize(rows, key="source_accuracy")
    assert transfer.summarize(rows, key="source_accuracy")["full", 2]["n"] == 2


def test_summarize_gives_median_mean_and_standard_error_over_seeds():
    rows = [
        {"strategy": "full", "per_class": 10, "test_accuracy": a, "train_seconds": 1.0}
        for a in (0.5, 0.7, 0.6)
    ]
    cell = transfer.summarize(rows)["full", 10]
    assert cell["median"] == 0.6 and cell["min"] == 0.5 and cell["max"] == 0.7
    assert cell["mean"] == pytest.approx(0.6) and cell["se"] == pytest.approx(0.1 / 3**0.5)
    assert transfer.binomial_se(0.5, 100) == pytest.approx(0.05)


# ----------------------------------------------------------------------------- a ResNet source


def _colour(n_per_class=8, seed=0):
    return _toy(n_per_class, classes=4, seed=seed, channels=3, size=16)


def _new_resnet(x):
    return resnet(seed=1, num_classes=4)


@pytest.mark.parametrize("strategy", list(transfer.STRATEGIES))
def test_every_strategy_fine_tunes_chapter_03s_resnet(strategy):
    source = resnet()
    x, y = _colour()
    features = finetune.extract_features(finetune.feature_extractor(source), x, _normalise)
    probe, _ = transfer.train_linear_probe(
        features, y, _settings(), steps=6, batch_size=8, num_classes=4, like=source
    )
    assert probe.fc.bias is None and probe.scale == source.scale  # the ResNet's head, as it is
    with NoFloat64():
        model, history = transfer.finetune(
            strategy, source, x, y, _settings(), steps=8, batch_size=8, transform=_normalise,
            head=probe.fc, num_classes=4, new_model=_new_resnet,
        )  # fmt: skip
    assert history["step"][-1] == 8 and model.head.out_features == 4
    assert not model.stem.weight.requires_grad  # the whitening filters stay fixed
    frozen = {"linear_probe": 4, "last_block": 3}.get(strategy, 0)
    layers = ["stem", "groups.0", "groups.1", "groups.2"]
    assert sum(finetune.is_frozen(model.get_submodule(n)) for n in layers) == frozen


def test_lp_ft_starts_from_exactly_the_probes_predictions():
    source = resnet().eval()
    x, y = _colour()
    features = finetune.extract_features(finetune.feature_extractor(source), x, _normalise)
    probe, _ = transfer.train_linear_probe(
        features, y, _settings(), steps=6, batch_size=8, num_classes=4, like=source
    )
    start = finetune.with_head(source, probe.fc).eval()
    with torch.no_grad():
        assert torch.allclose(start(_normalise(x)), probe(features), atol=1e-5)


def test_cifar_task_holds_out_validation_and_builds_the_scratch_network(monkeypatch):
    monkeypatch.setattr(data, "cifar10", fake_cifar)
    config = {"mean": [0.3] * 3, "std": [0.2] * 3, "recipe": {"widths": (4, 6, 8)}}
    task, (vx, vy) = transfer.cifar_task(
        config,
        "cpu",
        val_per_class=20,
        pool_per_class=30,
        test_per_class=40,
        source_test_per_class=10,
    )
    assert (
        torch.bincount(vy).tolist() == [20] * 5
        and torch.bincount(task.train_labels).tolist() == [30] * 5
    )
    assert torch.bincount(task.test_labels).tolist() == [40] * 5 and len(task.source_labels) == 50
    pool = {bytes(x.numpy()) for x in task.train_images}
    assert not any(bytes(x.numpy()) in pool for x in vx)  # validation images are not in the pool
    net = task.new_model(task.train_images)
    assert net.head.out_features == 5 and not net.stem.weight.requires_grad
    assert task.train_transform.train and not task.transform.train
