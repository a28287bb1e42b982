"""Device-correct by construction: the chapter helpers at toy size, model and data on ``meta``.

A CPU-only machine cannot see "a CPU tensor times a CUDA tensor". Here every model and dataset is
put on the ``meta`` device (shapes, no data) and every operation runs under ``guards.SameDevice``,
which fails on any operation whose tensors live on two devices, as a CUDA run would. Tensors
that helpers create without ``device=`` land on the CPU and are caught.
"""

import pytest
import torch
from guards import SameDevice
from torch import nn

import helpers
from helpers import augment, classify, finetune, gpt, loader, pretrained, recipes, train, transfer

META = torch.device("meta")


def _images(n, channels=3, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)
    return images.to(META), (torch.arange(n) % 10).to(META)


# ------------------------------------------------------------------ the guard catches mixed code


def test_the_guard_catches_mixed_device_code():
    x, w = torch.ones(4, 3, device=META), torch.ones(3, 2)
    with pytest.raises(AssertionError, match="mixes tensors on cpu and meta"), SameDevice():
        x @ w  # PyTorch itself lets meta @ cpu through; CUDA would refuse cuda @ cpu

    def statistics_on_the_device_images_on_the_cpu(images, mean, std):  # chapter 03's bug
        return (images.cpu().float() / 255 - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)

    images, _ = _images(4)
    mean, std = torch.full((3,), 0.5, device=META), torch.full((3,), 0.25, device=META)
    with pytest.raises(AssertionError, match="mixes tensors"), SameDevice():
        statistics_on_the_device_images_on_the_cpu(images, mean, std)

    class PositionsOnTheCPU(gpt.GPT):  # a forward that builds a tensor without device=
        def forward(self, idx, targets=None):
            h = self.tok_emb(idx) + self.pos_emb(torch.arange(idx.shape[1]))
            return self.head(self.ln_f(h))

    config = gpt.GPTConfig(vocab_size=7, block_size=8, n_layer=1, n_head=2, n_embd=8)
    model = PositionsOnTheCPU(config).to(META)
    with pytest.raises(AssertionError, match="mixes tensors"), SameDevice():
        model(torch.zeros(2, 8, dtype=torch.long, device=META))
    with SameDevice():
        gpt.GPT(config).to(META)(torch.zeros(2, 8, dtype=torch.long, device=META))  # the real one


def test_the_guard_catches_a_helper_that_forgets_device(monkeypatch):
    def normalize_forgetting_the_device(images, mean, std):  # statistics left on the CPU
        mean = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        return (images.float() / 255 - mean) / std

    images, _ = _images(8)
    monkeypatch.setattr(augment, "normalize", normalize_forgetting_the_device)
    with pytest.raises(AssertionError, match="mixes tensors"), SameDevice():
        augment.DeviceAugment([0.5] * 3, [0.25] * 3)(images)


def test_what_pytorch_allows_is_allowed():
    x = torch.ones(5, device=META)
    with SameDevice():
        x * torch.tensor(2.0)  # a 0-dim CPU tensor is a scalar
        x[torch.tensor([0, 2])]  # CPU indices
        x.to("cpu"), torch.ones(5).to(META)  # copies between devices
        assert x.sum().item() == 1.0 and x.tolist() == [1.0] * 5  # meta reads as ones


# ------------------------------------------------------------------ the helpers, on meta


def test_fit_evaluate_predict_on_one_device():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 2, generator=g).to(META), (torch.arange(64) % 3).to(META)
    model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 3)).to(META)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=8)
    data = loader.TensorLoader(x, y, batch_size=16, shuffle=True, generator=g)
    with SameDevice():
        history = train.fit(model, data, opt, epochs=2, val_loader=data, scheduler=sched,
                            grad_clip=1.0, keep_best=True, progress=False)  # fmt: skip
        train.evaluate(model, data)
        outputs, targets = train.predict(model, data)
    assert history["step"] == [4, 8] and outputs.shape == (64, 3) and targets.shape == (64,)


def test_gpt_recipe_training_and_generation_on_one_device():
    recipe = recipes.GPT_RECIPES["cpu"].replace(
        n_layer=1, n_embd=16, n_head=2, block_size=8, batch_size=4, steps=4, eval_every=2
    )
    data = (torch.arange(300) % 7).to(META)
    model = gpt.GPT(recipe.model_config(vocab_size=7)).to(META)
    optimizer, scheduler = recipe.make_optimizer(model)
    stream = loader.random_windows(data, 8, 4, torch.Generator().manual_seed(0))
    val = loader.TensorLoader(*loader.split_windows(data, 8), batch_size=16)
    with SameDevice():
        train.fit(model, stream, optimizer, steps=recipe.steps, scheduler=scheduler, grad_clip=1.0,
                  val_loader=val, eval_every=recipe.eval_every, keep_best=True,
                  progress=False)  # fmt: skip
        start = torch.zeros(1, 1, dtype=torch.long, device=META)
        for use_cache in (False, True):
            model.generate(start, 10, temperature=0, use_cache=use_cache)


def test_pretrain_char_gpt_on_one_device(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_QUICK", "1")
    monkeypatch.setenv("COURSE_CHECKPOINT_DIR", str(tmp_path))
    text = "ANNE:\nGood morrow, sir.\n\nBEN:\nWell met, and how now?\n\n" * 200
    with SameDevice():
        path = pretrained.pretrain_char_gpt(META, text=text, progress=False)
    assert path.exists()


@pytest.mark.parametrize("change", [{}, recipes.CIFAR_BASELINE])
def test_cifar_recipe_on_one_device(change):
    (train_x, train_y), (val_x, val_y) = _images(32), _images(16, seed=1)
    recipe = recipes.CifarRecipe().replace(**recipes.CIFAR_BUDGETS["quick"]).replace(**change)
    recipe = recipe.replace(widths=(8, 8, 8), epochs=1, batch_size=16)
    mean, std = torch.full((3,), 0.5, device=META), torch.full((3,), 0.25, device=META)
    with SameDevice():
        recipes.train_cifar(recipe, train_x, train_y, val_x, val_y, mean=mean, std=std,
                            device=META, progress=False)  # fmt: skip


def test_augment_on_one_device():
    images, _ = _images(8)
    with SameDevice():
        mean, std = augment.channel_stats(images)
        for train_mode in (True, False):
            augment.DeviceAugment(mean, std, train=train_mode, channels_last=True)(images)
        augment.DeviceAugment([0.5] * 3, [0.25] * 3)(images)  # statistics given as lists


def test_finetune_on_one_device():
    source = helpers.models.ConvNet().to(META)
    images, labels = _images(32, channels=1, size=28)
    settings = transfer.FinetuneSettings()
    val = loader.TensorLoader(images, labels, batch_size=16, transform=lambda x: x.float() / 255)

    def new_model(x):
        return helpers.models.ConvNet(**source.config)

    with SameDevice():
        for strategy in ("scratch", "last_block", "full", "gradual"):
            transfer.finetune(strategy, source, images, labels, settings, steps=4, batch_size=8,
                              transform=lambda x: x.float() / 255, val_loader=val,
                              new_model=new_model)  # fmt: skip
        finetune.extract_features(
            finetune.feature_extractor(source), images, lambda x: x.float() / 255
        )


def test_transfer_from_a_resnet_on_one_device():
    torch.manual_seed(0)
    source = helpers.models.ResNet((4, 6, 8), num_classes=10).to(META)
    source.stem.weight.requires_grad_(False)
    images, labels = _images(16, channels=3, size=16)
    settings = transfer.FinetuneSettings()

    def prepare(x):
        return x.float() / 255

    with SameDevice():
        features = finetune.extract_features(finetune.feature_extractor(source), images, prepare)
        probe, _ = transfer.train_linear_probe(
            features, labels, settings, steps=2, batch_size=8, num_classes=4, like=source
        )
        for strategy in ("last_block", "full", "lp_ft", "gradual"):
            transfer.finetune(strategy, source, images, labels, settings, steps=5, batch_size=8,
                              transform=prepare, head=probe.fc, num_classes=4)  # fmt: skip


def test_classify_on_one_device():
    config = gpt.GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=8)
    base = gpt.GPT(config).to(META)
    x = torch.randint(1, 10, (16, 8), generator=torch.Generator().manual_seed(0)).to(META)
    y = (torch.arange(16) % 2).to(META)
    with SameDevice():
        for strategy in ("full", "lora"):
            classify.train_classifier(
                strategy, base, x, y, lr=1e-3, steps=2, batch_size=8, val=(x, y)
            )
