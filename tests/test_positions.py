import math

import pytest
import torch
import torch.nn.functional as F

from helpers import gpt, loader, positions


def _gpt(position, seed=0, **overrides):
    torch.manual_seed(seed)
    config = dict(vocab_size=11, block_size=16, n_layer=2, n_head=4, n_embd=32, position=position)
    return gpt.GPT(gpt.GPTConfig(**{**config, **overrides})).eval()


def test_rope_is_a_rotation_by_position_times_frequency():
    x = torch.randn(3, 10, 8, dtype=torch.float64)
    pos = torch.arange(10) + 5
    cos, sin = positions.rope_angles(pos, 8)
    rotated = positions.apply_rope(x, cos, sin)
    # the same rotation as complex numbers: pair (i, i + d/2) times exp(1j * pos * theta_i)
    theta = 10000.0 ** (-torch.arange(0, 8, 2, dtype=torch.float64) / 8)
    turn = torch.polar(torch.ones(10, 4, dtype=torch.float64), pos[:, None] * theta)
    z = torch.complex(x[..., :4], x[..., 4:]) * turn
    assert torch.allclose(rotated, torch.cat([z.real, z.imag], dim=-1), atol=1e-5)
    assert torch.allclose(rotated.norm(dim=-1), x.norm(dim=-1))
    assert positions.rotate_half(torch.tensor([1.0, 2.0, 3.0, 4.0])).tolist() == [-3, -4, 1, 2]
    with pytest.raises(ValueError, match="even"):
        positions.rope_angles(pos, 7)


def test_rope_scores_depend_on_the_offset_only():
    q, k = torch.randn(1, 16), torch.randn(1, 16)

    def rotated(v, p):
        return positions.apply_rope(v, *positions.rope_angles(torch.tensor([p]), 16))

    for m, n in [(0, 3), (7, 10), (100, 103)]:
        score = (rotated(q, m) @ rotated(k, n).T).item()
        assert math.isclose(score, (q @ rotated(k, 3).T).item(), abs_tol=1e-4)


def test_alibi_slopes_and_bias():
    assert torch.allclose(positions.alibi_slopes(8), 2.0 ** -torch.arange(1.0, 9.0))
    # 6 heads: the 4-head slopes, then every other slope of the 8-head sequence (ALiBi's code)
    expected = [2**-2, 2**-4, 2**-6, 2**-8, 2**-1, 2**-3]
    assert torch.allclose(positions.alibi_slopes(6), torch.tensor(expected))
    bias = positions.alibi_bias(2, 4, 4)  # 2 heads: slopes 2^-4 and 2^-8
    assert bias[0, 3, 1].item() == -(2**-4) * 2 and bias[1, 2, 2].item() == 0
    assert torch.isinf(bias[:, 0, 1:]).all()  # the causal mask is part of the bias
    # queries that follow cached keys: the last row of the full matrix
    assert torch.equal(positions.alibi_bias(2, 1, 4)[:, 0], bias[:, -1])
    with pytest.raises(ValueError, match="at least 1"):
        positions.alibi_slopes(0)


def test_sinusoidal_matches_the_formula():
    table = positions.sinusoidal(50, 8, torch.float64)
    t, i = 17, 2
    omega = 10000 ** (-2 * i / 8)
    assert math.isclose(table[t, 2 * i], math.sin(t * omega))
    assert math.isclose(table[t, 2 * i + 1], math.cos(t * omega))


@pytest.mark.parametrize("position", ["rope", "alibi"])
def test_relative_gpt_cache_generation_and_length(position):
    model = _gpt(position)
    assert model.pos_emb is None and "position" in model.config.to_dict()
    x = torch.randint(0, 11, (3, 16), generator=torch.Generator().manual_seed(1))
    full = model(x)
    cache = gpt.KVCache(2)
    steps = [model(x[:, :5], cache)] + [model(x[:, i : i + 1], cache) for i in range(5, 16)]
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)
    runs = [
        model.generate(
            x[:, :3], 30, 0.8, 5, use_cache=c, generator=torch.Generator().manual_seed(2)
        )
        for c in (False, True)
    ]
    assert torch.equal(runs[0], runs[1])
    assert model(torch.randint(0, 11, (2, 40))).shape == (2, 40, 11)  # longer than block_size


def test_relative_positions_change_the_output_learned_and_checkpoint_default():
    x = torch.randint(0, 11, (2, 16), generator=torch.Generator().manual_seed(3))
    assert not torch.allclose(_gpt("rope")(x), _gpt("alibi")(x))
    with pytest.raises(ValueError, match="do not fit the context"):
        _gpt("learned")(torch.randint(0, 11, (1, 17)))
    with pytest.raises(ValueError, match="position should be one of"):
        gpt.GPTConfig(vocab_size=11, position="sinusoidal")
    old = {k: v for k, v in gpt.GPTConfig(vocab_size=11).to_dict().items() if k != "position"}
    assert gpt.GPTConfig.from_dict(old).position == "learned"  # checkpoints saved before the option


def test_token_losses_are_the_loss_of_every_window_and_position():
    model = _gpt("alibi")
    ids = torch.randint(0, 11, (200,), generator=torch.Generator().manual_seed(4))
    losses = positions.token_losses(model, ids, 24, batch_size=3)
    x, y = loader.split_windows(ids, 24)
    with torch.no_grad():
        expected = F.cross_entropy(model(x).transpose(1, 2), y, reduction="none")
    assert losses.shape == (len(x), 24) and torch.allclose(losses, expected, atol=1e-5)
