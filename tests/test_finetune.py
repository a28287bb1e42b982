"""Fine-tuning tools (chapter 05) at toy size: freezing, BatchNorm, groups, budgets, strategies."""

import types

import pytest
import torch
from guards import NoFloat64
from torch import nn

from helpers import data, finetune, loader, models, optim, summary

SIZE = 12  # toy images: 12 -> 6 -> 3 -> 1 through three blocks


def _source(seed=0):
    torch.manual_seed(seed)
    return models.ConvNet(channels=(4, 6, 8), image_size=SIZE)


def _toy(n_per_class=12, classes=4, seed=0):
    """uint8 images whose brightness pattern depends on the label: learnable, but not trivially."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    images = torch.randint(0, 120, (len(labels), 1, SIZE, SIZE), generator=g)
    for c in range(classes):
        images[labels == c, :, c * 3 : c * 3 + 3, :] += 120
    return images.to(torch.uint8), labels


def _normalise(x):
    return (x.float() / 255 - 0.3) / 0.3


def _settings(**changes):
    return finetune.FinetuneSettings(lr=1e-2, warmup=0.25).replace(**changes)


# ----------------------------------------------------------------------------- freezing


def test_freeze_and_unfreeze_by_name():
    model = _source()
    finetune.freeze(model)
    assert summary.count_parameters(model) == 0
    finetune.unfreeze(model, ["block3", "head.fc"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if n.startswith(("block3", "head"))}
    finetune.freeze(model, "head")
    assert not any(p.requires_grad for p in model.head.parameters())
    assert finetune.is_frozen(model.block1) and not finetune.is_frozen(model.block3)


def test_unknown_names_are_a_clear_error():
    with pytest.raises(ValueError, match="top-level modules are .*block1"):
        finetune.freeze(_source(), ["block9"])


def test_frozen_parameters_get_no_gradient_and_do_not_move():
    model = _source()
    finetune.freeze(model, ["block1", "block2"])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    # the optimizer holds every parameter, with weight decay: frozen ones must still not move
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.5)
    x, y = _toy()
    nn.functional.cross_entropy(model(_normalise(x)), y).backward()
    optimizer.step()
    for name, p in model.named_parameters():
        if name.startswith(("block1", "block2")):
            assert p.grad is None and torch.equal(p, before[name]), name
        else:
            assert p.grad is not None
    assert not torch.equal(model.block3.conv.weight, before["block3.conv.weight"])


def test_frozen_batchnorm_statistics_do_not_move_in_train_mode():
    model = _source()
    finetune.freeze(model, ["block1", "block2"])
    handles = finetune.keep_frozen_batchnorm_in_eval(model)
    stats = {n: b.clone() for n, b in model.named_buffers()}
    x, _ = _toy()
    model.train()  # what fit() does: every layer in training mode
    model(_normalise(x))
    for name, buffer in model.named_buffers():
        moved = not torch.equal(buffer, stats[name])
        assert moved == name.startswith("block3"), name
    assert model.block3.bn.training and not model.block1.bn.training
    for handle in handles:
        handle.remove()
    model.train()
    model(_normalise(x))  # without the hooks, the "frozen" statistics drift
    assert not torch.equal(model.block1.bn.running_mean, stats["block1.bn.running_mean"])


def test_unfreezing_lets_batchnorm_train_again():
    model = finetune.freeze(_source())
    finetune.keep_frozen_batchnorm_in_eval(model)
    finetune.unfreeze(model, "block1")
    mean = model.block1.bn.running_mean.clone()
    model.train()(_normalise(_toy()[0]))
    assert not torch.equal(model.block1.bn.running_mean, mean)


# ----------------------------------------------------------------------------- head and features


def test_replace_head_reads_the_input_size():
    model = _source()
    old = finetune.replace_head(model, 3, std=0.01)
    assert old.out_features == 10 and model.head.fc.in_features == old.in_features == 8
    assert model.head.fc.out_features == 3 and torch.all(model.head.fc.bias == 0)
    assert model.head.fc.weight.std() < 0.03
    back = finetune.with_head(model, old)
    assert back.head.fc.out_features == 10 and model.head.fc.out_features == 3
    with pytest.raises(ValueError, match="no linear layer"):
        finetune.replace_head(model, 3, head="block1.conv")


def test_feature_extractor_gives_the_classifier_input():
    model = _source().eval()
    seen = {}
    model.head.fc.register_forward_pre_hook(lambda m, args: seen.update(x=args[0]))
    x = _normalise(_toy()[0])
    model(x)
    extractor = finetune.feature_extractor(model)
    assert torch.allclose(extractor(x), seen["x"])
    cached = finetune.extract_features(extractor, _toy()[0], _normalise, batch_size=7)
    assert torch.allclose(cached, seen["x"], atol=1e-6) and cached.dtype == torch.float32
    with pytest.raises(ValueError, match="ConvNet-like"):
        finetune.feature_extractor(nn.Linear(2, 2))


# ----------------------------------------------------------------------------- groups


def test_layer_groups_carry_the_stated_learning_rates():
    model = _source()
    groups = finetune.layer_groups(model, 1e-2, decay=0.5, weight_decay=0.1)
    rates = {g["name"]: g["lr"] for g in groups}
    expected = {"head": 1e-2, "block3": 5e-3, "block2": 2.5e-3, "block1": 1.25e-3}
    for name, lr in expected.items():
        assert rates[name] == pytest.approx(lr) and rates[f"{name} (no decay)"] == pytest.approx(lr)
    for g in groups:
        assert g["weight_decay"] == (0.0 if g["name"].endswith("(no decay)") else 0.1)
        assert all((p.dim() >= 2) != g["name"].endswith("(no decay)") for p in g["params"])
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())
    optimizer = optim.make_optimizer(groups, "adamw", 1.0)  # each group keeps its own rate
    assert {g["name"]: g["lr"] for g in optimizer.param_groups} == rates


def test_layer_groups_skip_frozen_parameters_unless_asked():
    model = finetune.freeze(_source(), ["block1", "block2"])
    names = {g["name"] for g in finetune.layer_groups(model, 1e-3)}
    assert names == {"head", "head (no decay)", "block3", "block3 (no decay)"}
    everything = finetune.layer_groups(model, 1e-3, trainable_only=False)
    assert sum(p.numel() for g in everything for p in g["params"]) == sum(
        p.numel() for p in model.parameters()
    )
    with pytest.raises(ValueError, match="decay"):
        finetune.layer_groups(model, 1e-3, decay=2.0)
    with pytest.raises(ValueError, match="no trainable"):
        finetune.layer_groups(finetune.freeze(model), 1e-3)


# ----------------------------------------------------------------------------- budgets


def test_stratified_subsets_are_stratified_disjoint_reproducible_and_nested():
    labels = torch.arange(5).repeat(40)[
        torch.randperm(200, generator=torch.Generator().manual_seed(1))
    ]
    val = finetune.stratified_indices(labels, 8, seed=0)
    assert torch.bincount(labels[val]).tolist() == [8] * 5
    small = finetune.stratified_indices(labels, 3, seed=7, exclude=val)
    large = finetune.stratified_indices(labels, 20, seed=7, exclude=val)
    assert torch.bincount(labels[small]).tolist() == [3] * 5
    assert not set(small.tolist()) & set(val.tolist()) and not set(large.tolist()) & set(
        val.tolist()
    )
    assert torch.equal(small, finetune.stratified_indices(labels, 3, seed=7, exclude=val))
    assert not torch.equal(small, finetune.stratified_indices(labels, 3, seed=8, exclude=val))
    assert set(small.tolist()) <= set(large.tolist())  # nested budgets
    with pytest.raises(ValueError, match="at most 32"):
        finetune.stratified_indices(labels, 33, seed=0, exclude=val)


def test_plan_gives_every_budget_a_batch_and_steps():
    assert finetune.plan(10) == (50, 150)
    batch, steps = finetune.plan(1000)
    assert batch == 128 and steps == 474
    assert finetune.plan(10, scale=0.1)[1] == 15


# ----------------------------------------------------------------------------- strategies


def test_cached_probe_matches_the_probe_through_the_frozen_body():
    source = _source()
    x, y = _toy()
    settings = _settings()
    model, history = finetune.finetune(
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
        head, seconds = finetune.train_linear_probe(
            features, y, settings, steps=12, batch_size=16, seed=3, num_classes=4
        )
    assert torch.allclose(head.weight, model.head.fc.weight, atol=1e-5)
    assert seconds > 0 and len(history["step"]) == 1
    for a, b in zip(
        finetune.feature_extractor(model).state_dict().values(),
        finetune.feature_extractor(source).state_dict().values(),
    ):
        assert torch.equal(a, b)  # nothing in the body moved, BatchNorm statistics included


@pytest.mark.parametrize("strategy", list(finetune.STRATEGIES))
def test_every_strategy_trains_at_toy_size_without_float64(strategy):
    source = _source()
    before = {k: v.clone() for k, v in source.state_dict().items()}
    x, y = _toy()
    probe = nn.Linear(8, 4)
    val = loader.TensorLoader(x, y, batch_size=16, transform=_normalise)
    with NoFloat64():
        model, history = finetune.finetune(
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
    model, history = finetune.finetune(
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
        finetune.finetune("everything", _source(), x, y, _settings(), steps=2, batch_size=4)
    with pytest.raises(ValueError, match="head=probe"):
        finetune.finetune("lp_ft", _source(), x, y, _settings(), steps=2, batch_size=4)


def test_sweep_gives_one_row_per_strategy_budget_and_seed():
    source = _source()
    (x, y), (tx, ty) = _toy(20), _toy(5, seed=1)
    task = finetune.TransferTask(x, y, tx, ty, _normalise, tx, ty, _normalise)
    settings = {s: _settings() for s in finetune.STRATEGIES}
    lines = []
    with NoFloat64():
        rows = finetune.sweep(
            source,
            task,
            settings,
            budgets=[2, 6],
            seeds={2: [0, 1], 6: [0]},
            scale=0.1,
            log=lines.append,
        )
    assert len(rows) == 3 * len(finetune.STRATEGIES) and len(lines) == 2
    table = finetune.summarize(rows)
    assert table["scratch", 2]["n"] == 2 and table["full", 6]["n"] == 1
    assert all(0 <= r["test_accuracy"] <= 1 for r in rows)
    assert ("scratch", 2) not in finetune.summarize(rows, key="source_accuracy")
    assert finetune.summarize(rows, key="source_accuracy")["full", 2]["n"] == 2


# ----------------------------------------------------------------------------- the source model


def _fake_mnist(train, transform=None):
    n = 5_300 if train else 300
    g = torch.Generator().manual_seed(int(train))
    labels = torch.randint(0, 10, (n,), generator=g)
    images = (torch.rand(n, 28, 28, generator=g) * 100 + labels.view(-1, 1, 1) * 15).to(torch.uint8)
    return types.SimpleNamespace(data=images, targets=labels)


def test_load_source_trains_chapter_02s_recipe_when_the_checkpoint_is_missing(
    monkeypatch, tmp_path, capsys
):
    monkeypatch.setenv("COURSE_QUICK", "1")
    monkeypatch.setenv("COURSE_CHECKPOINT_DIR", str(tmp_path))
    monkeypatch.setattr(data, "mnist", _fake_mnist)
    model, config = finetune.load_source("cpu", progress=False)
    assert "training chapter 02's recipe" in capsys.readouterr().out
    assert (tmp_path / "mnist_cnn-quick.pt").exists() and config["model"] == model.config
    assert 0 < config["std"] and 0 <= config["test_accuracy"] <= 1
    again, _ = finetune.load_source("cpu")
    assert "Loading" in capsys.readouterr().out
    assert all(
        torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values())
    )
