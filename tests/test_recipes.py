"""The chapter recipes at toy size, the shared optimizer builder, and the recipe dataclasses."""

import math

import pytest
import torch
from guards import NoFloat64
from torch import nn

import helpers
from helpers import gpt, loader, models, optim, recipes


def _cifar_like(n, seed):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    images = (torch.rand(n, 3, 32, 32, generator=g) * 60 + labels.view(-1, 1, 1, 1) * 19).to(
        torch.uint8
    )
    return images, labels


@pytest.mark.parametrize(
    "change", [{}, recipes.CIFAR_BASELINE, {"flip": "random", "tta": "flip", "bias_lr_scale": 8.0}]
)
def test_cifar_recipe_at_toy_size_without_float64(change):
    (train_x, train_y), (val_x, val_y) = _cifar_like(256, 0), _cifar_like(128, 1)
    mean = torch.tensor([0.5, 0.5, 0.5])
    std = torch.tensor([0.25, 0.25, 0.25])
    recipe = recipes.CifarRecipe().replace(**recipes.CIFAR_BUDGETS["quick"]).replace(**change)
    with NoFloat64():
        result = recipes.train_cifar(
            recipe,
            train_x,
            train_y,
            val_x,
            val_y,
            mean=mean,
            std=std,
            device="cpu",
            progress=False,
        )
    assert len(result["history"]["val_accuracy"]) == recipe.epochs
    assert 0 <= result["val_accuracy"] <= 1 and result["images_per_second"] > 0


def test_gpt_recipe_at_toy_size_without_float64():
    recipe = recipes.GPT_RECIPES["cpu"].replace(
        n_layer=1, n_embd=16, n_head=2, block_size=8, batch_size=8, steps=20
    )
    torch.manual_seed(0)
    data = torch.arange(400) % 7
    model = gpt.GPT(recipe.model_config(vocab_size=7))
    optimizer, scheduler = recipe.make_optimizer(model)
    stream = loader.random_windows(
        data, recipe.block_size, recipe.batch_size, torch.Generator().manual_seed(0)
    )
    val = loader.TensorLoader(*loader.split_windows(data, recipe.block_size), batch_size=16)
    with NoFloat64():
        history = helpers.train.fit(
            model,
            stream,
            optimizer,
            steps=recipe.steps,
            scheduler=scheduler,
            val_loader=val,
            grad_clip=recipe.grad_clip,
            progress=False,
        )
    assert history["val_loss"][-1] < math.log(7)  # a repeating sequence: learnt something


def _groups_are_right(model, optimizer, weight_decay):
    decay, *no_decay = optimizer.param_groups  # the CIFAR recipe: BatchNorm biases in a third
    assert decay["weight_decay"] == weight_decay and all(g["weight_decay"] == 0 for g in no_decay)
    assert all(p.dim() >= 2 for p in decay["params"])
    assert all(p.dim() < 2 for g in no_decay for p in g["params"])
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == trainable


def test_one_builder_for_the_resnet_and_the_gpt():
    resnet = models.ResNet(widths=(8, 8, 8)).whiten(torch.randn(10, 3, 8, 8))  # frozen stem weight
    cifar = recipes.CifarRecipe()
    opt, sched = cifar.make_optimizer(resnet, total_steps=100)
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["nesterov"]
    _groups_are_right(resnet, opt, cifar.weight_decay)
    assert all(p is not resnet.stem.weight for g in opt.param_groups for p in g["params"])

    model = gpt.GPT(gpt.GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16))
    gpt_recipe = recipes.GPT_RECIPES["cpu"]
    opt, sched = gpt_recipe.make_optimizer(model, total_steps=100)
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["betas"] == (0.9, 0.99)
    _groups_are_right(model, opt, gpt_recipe.weight_decay)


def _lrs(optimizer, scheduler, steps):
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_schedules_have_the_documented_shape():
    def fresh():
        return torch.optim.SGD([nn.Parameter(torch.zeros(2, 2))], lr=1.0)

    opt = fresh()
    lrs = _lrs(opt, optim.make_schedule(opt, "onecycle", 100, warmup=0.25, min_lr_ratio=1e-3), 100)
    assert (
        lrs[0] == pytest.approx(0.1)
        and max(lrs) == pytest.approx(1.0)
        and abs(lrs.index(max(lrs)) - 24) <= 1
    )
    opt = fresh()
    lrs = _lrs(opt, optim.make_schedule(opt, "cosine", 100, warmup=0.1, min_lr_ratio=0.1), 100)
    assert (
        lrs[0] == pytest.approx(0.1)
        and lrs[9] == pytest.approx(1.0)
        and lrs[-1] == pytest.approx(0.1, abs=1e-3)
    )
    assert optim.make_schedule(fresh(), "constant", 100) is None
    with pytest.raises(ValueError, match="not one of"):
        optim.make_schedule(fresh(), "linear", 100)
    with pytest.raises(ValueError, match="not one of"):
        optim.make_optimizer(nn.Linear(2, 2), "lion", 1e-3)


def test_per_group_learning_rates_survive_the_builder():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    groups = [
        {"params": model[0].parameters(), "lr": 0.01},
        {"params": model[1].parameters(), "lr": 0.1},
    ]
    opt = optim.make_optimizer(groups, "adamw", lr=0.1)
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.1]
    sched = optim.make_schedule(opt, "onecycle", 10, warmup=0.3)
    seen = []
    for _ in range(10):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    assert [max(lrs) for lrs in zip(*seen)] == pytest.approx(
        [0.01, 0.1]
    )  # each group peaks at its own rate


def test_recipes_reject_unknown_keys_in_one_place():
    with pytest.raises(ValueError, match=r"unknown CifarRecipe keys \['epoch'\]"):
        recipes.CifarRecipe().replace(epoch=3)
    with pytest.raises(ValueError, match=r"unknown GPTRecipe keys \['n_embed'\]"):
        recipes.GPTRecipe.from_dict({"n_embed": 64})
    with pytest.raises(ValueError, match="'resnet' or 'baseline'"):
        recipes.CifarRecipe(model="vgg")
    recipe = recipes.CifarRecipe().replace(widths=[8, 8, 8])
    assert recipe.widths == (8, 8, 8) and recipes.CifarRecipe.from_dict(recipe.to_dict()) == recipe
    assert recipes.gpt_recipe("cpu").name == "cpu" and recipes.gpt_recipe("cuda").name == "gpu"


def test_holdout_split_is_disjoint_stratified_and_deterministic():
    labels = torch.arange(300) % 10  # 30 images of each class
    train, val = recipes.holdout_split(labels, per_class=5, seed=3)
    assert len(val) == 50 and len(train) == 250
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(300))
    assert torch.bincount(labels[val]).tolist() == [5] * 10  # stratified
    again_train, again_val = recipes.holdout_split(labels, per_class=5, seed=3)
    assert torch.equal(val, again_val) and torch.equal(train, again_train)
    assert not torch.equal(val, recipes.holdout_split(labels, per_class=5, seed=4)[1])
    with pytest.raises(ValueError, match="lower per_class"):
        recipes.holdout_split(labels, per_class=30)


def test_bias_lr_scale_gives_batchnorm_biases_their_own_group():
    model = models.ResNet(widths=(8, 8, 8)).whiten(torch.randn(10, 3, 8, 8))
    recipe = recipes.CifarRecipe().replace(bias_lr_scale=64.0, lr=0.5)
    opt, _ = recipe.make_optimizer(model, total_steps=10)
    biases = {id(m.bias) for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
    fast = opt.param_groups[-1]
    assert {id(p) for p in fast["params"]} == biases and fast["weight_decay"] == 0
    assert fast["max_lr"] == pytest.approx(32.0)  # the one-cycle peak of this group
    assert all(id(p) not in biases for g in opt.param_groups[:-1] for p in g["params"])
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for g in opt.param_groups for p in g["params"]} == trainable


def test_alternating_flip_mirrors_every_image_on_every_second_epoch():
    images = torch.arange(8 * 3 * 4 * 4, dtype=torch.uint8).view(8, 3, 4, 4)
    labels = torch.arange(8)
    loader = recipes.AlternatingFlipLoader(images, labels, batch_size=4, shuffle=True)
    epochs = [dict(zip(y.tolist(), x)) for _ in range(3) for x, y in [_gather(loader)]]
    for i in range(8):
        assert torch.equal(epochs[0][i], images[i]) and torch.equal(epochs[2][i], images[i])
        assert torch.equal(epochs[1][i], images[i].flip(2))


def _gather(loader):
    xs, ys = zip(*loader)
    return torch.cat(xs), torch.cat(ys)


def test_cifar_tta_modes_and_evaluation():
    torch.manual_seed(0)
    model = models.ResNet(widths=(8, 8, 8)).eval()
    assert recipes.cifar_tta(model, "none") is model
    assert isinstance(recipes.cifar_tta(model, "flip"), models.FlipTTA)
    assert isinstance(recipes.cifar_tta(model, "translate"), models.TranslateTTA)
    with pytest.raises(ValueError, match="tta"):
        recipes.cifar_tta(model, "roll")
    images, labels = _cifar_like(20, 2)
    accuracy = recipes.evaluate_cifar(
        model, images, labels, mean=[0.5] * 3, std=[0.25] * 3, tta="translate"
    )
    assert 0 <= accuracy <= 1


def test_frozen_batchnorm_scales_stay_at_one_and_leave_the_optimizer():
    recipe = recipes.CifarRecipe(widths=(8, 16, 16), whiten=False, freeze_bn_scales=True)
    model = recipes.cifar_model(recipe)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(not m.weight.requires_grad and m.bias.requires_grad for m in norms)
    optimizer, _ = recipe.replace(bias_lr_scale=64.0).make_optimizer(model, total_steps=10)
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert not in_optimizer & {id(m.weight) for m in norms}
    assert {id(m.bias) for m in norms} <= in_optimizer
