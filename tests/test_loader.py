import pytest
import torch

from helpers import loader


def test_tensor_loader_batches_everything_once():
    x, y = torch.arange(10).float(), torch.arange(10)
    batcher = loader.TensorLoader(
        x, y, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    batches = list(batcher)
    assert len(batcher) == len(batches) == 3 and [len(b[0]) for b in batches] == [4, 4, 2]
    seen_x, seen_y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    assert sorted(seen_y.tolist()) == list(range(10)) and torch.equal(seen_x.long(), seen_y)
    assert len(loader.TensorLoader(x, y, batch_size=4, drop_last=True)) == 2
    doubled = next(iter(loader.TensorLoader(x, y, batch_size=3, transform=lambda b: 2 * b)))
    assert doubled[0].tolist() == [0.0, 2.0, 4.0] and doubled[1].tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="same length"):
        loader.TensorLoader(x, y[:5], batch_size=2)


def test_random_windows_are_shifted_by_one():
    data = torch.arange(100)
    x, y = next(
        loader.random_windows(
            data, block_size=8, batch_size=4, generator=torch.Generator().manual_seed(0)
        )
    )
    assert x.shape == y.shape == (4, 8)
    assert torch.equal(y, x + 1) and torch.equal(x[:, 1:], x[:, :-1] + 1)
    with pytest.raises(ValueError, match="longer than block_size"):
        next(loader.random_windows(data[:8], block_size=8, batch_size=2))


def test_split_windows_cover_the_text_once():
    data = torch.arange(50)
    x, y = loader.split_windows(data, 8)
    assert x.shape == (6, 8) and torch.equal(x.flatten(), data[:48]) and torch.equal(y, x + 1)
    assert torch.equal(loader.split_windows(data, 8, every=2)[0], x[::2])


def test_tensor_loader_groups_several_inputs():
    a, b, c = torch.arange(6), torch.arange(6) * 10, torch.arange(6) * 100
    (inputs, target), *_ = loader.TensorLoader(a, b, c, batch_size=4, inputs=2)
    assert (
        isinstance(inputs, tuple) and torch.equal(inputs[1], b[:4]) and torch.equal(target, c[:4])
    )
    with pytest.raises(ValueError, match="leave at least one tensor for the targets"):
        loader.TensorLoader(a, b, batch_size=2, inputs=2)
