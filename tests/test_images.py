import pytest
import torch

from helpers import augment, models, optim
from helpers.loader import TensorLoader


def _constant_images(labels, size=8):
    """Image i is filled with the value labels[i]: any crop or flip of it keeps that value."""
    return labels.to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, size, size).contiguous()


def test_augmentation_keeps_shapes_and_label_order():
    labels = torch.arange(64) % 10
    images = _constant_images(labels)
    transform = augment.DeviceAugment(mean=[0, 0, 0], std=[1 / 255] * 3, padding=3, flip=True)
    loader = TensorLoader(
        images,
        labels,
        batch_size=16,
        shuffle=True,
        transform=transform,
        generator=torch.Generator().manual_seed(0),
    )
    seen = 0
    for x, y in loader:
        assert x.shape == (len(y), 3, 8, 8) and x.dtype == torch.float32
        assert torch.allclose(
            x, y.float().view(-1, 1, 1, 1).expand_as(x), atol=1e-4
        )  # each image matches its label
        seen += len(y)
    assert seen == 64


def test_random_crop_is_a_shift_of_each_image_and_flip_a_mirror():
    torch.manual_seed(0)
    x = torch.randn(32, 3, 10, 10)
    cropped = augment.random_crop(x, padding=2, mode="constant")
    assert cropped.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(len(x)):  # each output is one of the 25 windows of its own padded image
        windows = [padded[i, :, dy : dy + 10, dx : dx + 10] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(cropped[i], w) for w in windows)
    flipped = augment.random_flip(x)
    same = [torch.equal(a, b) for a, b in zip(flipped, x)]
    mirrored = [torch.equal(a, b.flip(2)) for a, b in zip(flipped, x)]
    assert all(s or m for s, m in zip(same, mirrored)) and any(same) and any(mirrored)
    assert torch.equal(augment.random_crop(x, padding=0), x)


def test_augmentation_varies_and_eval_transform_only_normalises():
    images = torch.randint(0, 256, (16, 3, 12, 12), dtype=torch.uint8)
    mean, std = augment.channel_stats(images)
    train, test = augment.DeviceAugment(mean, std), augment.DeviceAugment(mean, std, train=False)
    assert not torch.equal(train(images), train(images))
    expected = (images.float() / 255 - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    assert torch.allclose(test(images), expected)
    normalised = test(images)
    assert torch.allclose(normalised.mean((0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(normalised.std((0, 2, 3)), torch.ones(3), atol=1e-4)


def test_flip_tta_equals_averaging_the_two_views():
    torch.manual_seed(0)
    model = models.ResNet(widths=(8, 16, 16)).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = (model(x) + model(torch.flip(x, dims=[3]))) / 2
        assert torch.allclose(models.FlipTTA(model)(x), expected, atol=1e-6)
        symmetric = x + x.flip(3)  # a mirror-symmetric image: TTA changes nothing
        assert torch.allclose(models.FlipTTA(model)(symmetric), model(symmetric), atol=1e-5)


@pytest.mark.parametrize("residual", [True, False])
def test_resnet_output_shape_features_and_config(residual):
    model = models.ResNet(widths=(8, 16, 32), num_classes=7, residual=residual)
    x = torch.randn(5, 3, 32, 32)
    assert model(x).shape == (5, 7)
    assert model.features(x).shape == (5, 32)
    rebuilt = models.ResNet(**model.config)
    rebuilt.load_state_dict(model.state_dict())
    model.eval(), rebuilt.eval()
    assert torch.equal(rebuilt(x), model(x))
    assert models.baseline_cnn()(x).shape == (5, 10)


def test_whitening_stem_decorrelates_patches():
    torch.manual_seed(0)
    mixing = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.5, 0.5, 0.7]])
    images = torch.einsum(
        "ij,njhw->nihw", mixing, torch.randn(200, 3, 16, 16)
    )  # correlated channels
    model = models.ResNet(widths=(8, 8, 8)).whiten(images)
    assert not model.stem.weight.requires_grad and model.stem.bias.requires_grad
    with torch.no_grad():
        out = torch.nn.functional.conv2d(images, model.stem.weight[:12])  # the 12 positive filters
    flat = out.transpose(0, 1).reshape(12, -1)
    covariance = flat @ flat.T / flat.shape[1]
    assert torch.allclose(covariance, torch.eye(12), atol=0.05)


def test_param_groups_put_no_decay_on_norms_and_biases():
    model = models.ResNet(widths=(8, 8, 8)).whiten(torch.randn(10, 3, 8, 8))
    decay, no_decay = optim.param_groups(model, 5e-4)
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert all(
        p is not model.stem.weight for p in decay["params"] + no_decay["params"]
    )  # frozen: not optimised
    assert len(decay["params"]) + len(no_decay["params"]) == len(
        [p for p in model.parameters() if p.requires_grad]
    )


def test_bad_input_gives_clear_errors():
    with pytest.raises(ValueError, match="N×C×H×W"):
        augment.normalize(torch.zeros(3, 8, 8, dtype=torch.uint8), [0] * 3, [1] * 3)
    with pytest.raises(ValueError, match="uint8"):
        augment.normalize(torch.zeros(1, 3, 8, 8), [0] * 3, [1] * 3)
    with pytest.raises(ValueError, match="widths"):
        models.ResNet(widths=(8, 16))


def test_identity_init_makes_3x3_convs_pass_their_input_through():
    torch.manual_seed(0)
    model = models.identity_init(models.ResNet(widths=(8, 16, 16)))
    conv = model.groups[1].conv1  # 8 -> 16 channels: the first 8 filters are the identity
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        assert torch.allclose(conv(x)[:, :8], x, atol=1e-6)
    assert model.stem.kernel_size == (2, 2)  # the stem is left to the whitening


def test_translate_tta_is_airbench_weighting_of_flips_and_shifts():
    torch.manual_seed(0)
    model = models.ResNet(widths=(8, 8, 8)).eval()
    x = torch.randn(2, 3, 32, 32)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    flip = models.FlipTTA(model)
    with torch.no_grad():
        expected = 0.5 * flip(x) + 0.25 * (flip(padded[..., :32, :32]) + flip(padded[..., 2:, 2:]))
        assert torch.allclose(models.TranslateTTA(model)(x), expected, atol=1e-6)
        cl = x.contiguous(memory_format=torch.channels_last)
        assert torch.allclose(models.TranslateTTA(model)(cl), expected, atol=1e-5)
