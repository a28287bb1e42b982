import pytest
import torch
from torch import nn

from helpers.models import ConvNet
from helpers.summary import layer_table


def test_layer_table_matches_a_hand_computation():
    # conv 1->4, 3x3, no padding on 8x8: 6x6 out, 4*1*9+4 = 40 params, 36*4*9 = 1296 mult-adds
    # pool 2: 3x3; flatten: 4*3*3 = 36; linear 36->5: 36*5+5 = 185 params, 180 mult-adds
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(36, 5),
    )
    model.train()
    before = model[1].running_mean.clone()
    rows = layer_table(model, (1, 8, 8), show=False)
    assert [r["name"] for r in rows] == ["0", "1", "2", "3", "4", "5"]
    assert [r["output_shape"] for r in rows] == [
        (4, 6, 6),
        (4, 6, 6),
        (4, 6, 6),
        (4, 3, 3),
        (36,),
        (5,),
    ]
    assert [r["params"] for r in rows] == [40, 8, 0, 0, 0, 185]
    assert [r["mult_adds"] for r in rows] == [1296, 0, 0, 0, 0, 180]
    assert rows[-1]["input_shape"] == (36,)
    assert model.training and torch.equal(
        model[1].running_mean, before
    )  # eval inside, mode restored


def test_layer_table_shows_where_a_flatten_size_is_wrong(capsys):
    # the classic bug: 64*6*6 features expected, but a 28x28 input without pooling gives 64*24*24
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64 * 6 * 6, 10),
    )
    with pytest.raises(RuntimeError, match="36864 and 2304"):
        layer_table(model, (1, 28, 28))
    printed = capsys.readouterr().out
    assert "(64, 24, 24)" in printed and "FAILED in layer '5'" in printed and "(36864,)" in printed


def test_layer_table_rejects_a_bad_shape():
    with pytest.raises(ValueError, match="one example"):
        layer_table(nn.Linear(3, 2), (0, 3))


def test_convnet_shapes_and_parameter_count():
    model = ConvNet()
    x = torch.randn(5, 1, 28, 28)
    assert model(x).shape == (5, 10)
    # conv weights (no bias) + BatchNorm (2 per channel) per block, then 64*3*3 -> 10
    expected = (
        (1 * 16 * 9 + 2 * 16)
        + (16 * 32 * 9 + 2 * 32)
        + (32 * 64 * 9 + 2 * 64)
        + (64 * 3 * 3 * 10 + 10)
    )
    assert sum(p.numel() for p in model.parameters()) == expected == 29_178
    rows = layer_table(model, (1, 28, 28), show=False)
    assert (
        {r["name"]: r["output_shape"] for r in rows}["head.flatten"]
        == (576,)
        == (model.feature_size,)
    )
    assert sum(r["params"] for r in rows) == expected


def test_convnet_config_rebuilds_it_and_other_sizes_work():
    model = ConvNet(
        in_channels=3, num_classes=7, channels=(8, 16), image_size=32, hidden=20, dropout=0.1
    )
    twin = ConvNet(**model.config)
    twin.load_state_dict(model.state_dict())
    assert model.feature_size == 16 * 8 * 8
    model.eval(), twin.eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(x), twin(x)) and model(x).shape == (2, 7)
    with pytest.raises(ValueError, match="shrink to nothing"):
        ConvNet(channels=(8, 8, 8, 8, 8), image_size=28)


def test_layer_table_takes_an_example_batch_or_an_integer_dtype():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(20, 3))
    rows = layer_table(model, torch.zeros(2, 5, dtype=torch.long), show=False)
    assert [r["output_shape"] for r in rows] == [(5, 4), (20,), (3,)]
    assert [r["params"] for r in rows] == [40, 0, 63]
    assert layer_table(model, (5,), dtype=torch.long, show=False) == rows
