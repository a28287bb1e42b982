"""Fine-tuning tools (helpers.finetune) at toy size: anatomy, freezing, BatchNorm, heads, groups."""

import pytest
import torch
from torch import nn
from toys import convnet as _source
from toys import images as _toy
from toys import normalise as _normalise
from toys import resnet

from helpers import finetune, optim, summary

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
    with pytest.raises(ValueError, match="features"):
        finetune.feature_extractor(nn.Linear(2, 2))


def test_anatomy_names_the_body_and_the_classifier():
    assert finetune.anatomy(_source()) == (["block1", "block2", "block3"], "head.fc")
    net = resnet()
    assert finetune.anatomy(net) == (["stem", "groups.0", "groups.1", "groups.2"], "head")
    assert finetune.default_layers(net) == ["stem", "groups.0", "groups.1", "groups.2", "head"]
    assert finetune.classifier(net) is net.head
    with pytest.raises(ValueError, match="transfer_layers"):
        finetune.anatomy(nn.Sequential(nn.Linear(2, 2)))


def test_resnet_head_and_features():
    net = resnet().eval()
    old = finetune.replace_head(net, 3)
    assert old.out_features == 10 and net.head.bias is None and net.head.in_features == 8
    x = _normalise(_toy(2, channels=3, size=16)[0])
    features = finetune.feature_extractor(net)(x)
    assert torch.allclose(net(x), net.head(features) * finetune.logit_scale(net), atol=1e-6)
    scaled = finetune.ScaledLinear(net.head, finetune.logit_scale(net))
    assert torch.allclose(scaled(features), net(x), atol=1e-6)
    groups = finetune.layer_groups(net, 1e-2, decay=0.5)
    rates = {g["name"]: g["lr"] for g in groups}
    assert (
        rates["head"] == 1e-2 and rates["groups.2"] == 5e-3 and rates["stem (no decay)"] == 6.25e-4
    )
    assert all(p is not net.stem.weight for g in groups for p in g["params"])  # frozen: skipped


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
