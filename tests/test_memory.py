"""helpers.memory: the accounting formulas against the real model, accumulation, checkpointing."""

import pytest
import torch
import torch.nn.functional as F
from guards import NoFloat64

from helpers import memory, recipes
from helpers.gpt import GPT, GPTConfig

TINY = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16)


def _batch(n=4, seed=0, config=TINY):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(config.vocab_size, (n, config.block_size), generator=g)
    return x, torch.randint(config.vocab_size, (n, config.block_size), generator=g)


def _loss(model, x, y):
    logits = model(x)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


@pytest.mark.parametrize("bias", [True, False])
def test_parameter_formula_matches_the_model(bias):
    for config in (TINY.replace(bias=bias), GPTConfig(50257, 1024, 12, 12, 768, bias=bias)):
        with torch.device("meta"):
            model = GPT(config)
        assert memory.gpt_parameters(config) == model.num_parameters()


def test_activation_formula_is_exact_in_float32():
    torch.manual_seed(0)
    model = GPT(TINY)
    x, y = _batch(3)
    _, saved = memory.saved_activation_bytes(lambda: _loss(model, x, y), exclude=model)
    assert saved == memory.activation_bytes(TINY, batch_size=3)


def test_state_bytes_match_what_adamw_holds():
    torch.manual_seed(0)
    model = GPT(TINY)
    optimizer, _ = recipes.GPT_RECIPES["cpu"].make_optimizer(model, 10)
    _loss(model, *_batch()).backward()
    optimizer.step()
    held = memory.held_bytes(model, optimizer)
    formula = memory.state_bytes(model.num_parameters(), "fp32")
    assert (held["weights"], held["grads"], held["moments"]) == (
        formula["weights"], formula["grads"], formula["optimizer"]
    )  # fmt: skip


def test_sharding_divides_the_right_parts():
    full = memory.state_bytes(1000, "bf16", "full", world_size=8)
    assert full == {"weights": 250.0, "grads": 250.0, "optimizer": 1500.0}
    zero1 = memory.state_bytes(1000, "bf16", "optimizer", world_size=4)
    assert zero1 == {"weights": 2000, "grads": 2000, "optimizer": 3000.0}
    with pytest.raises(ValueError, match="sharding"):
        memory.state_bytes(1000, sharding="zero9")


def _grads(model):
    return [p.grad.clone() for p in model.parameters()]


def test_accumulation_equals_one_big_batch_even_with_uneven_targets():
    torch.manual_seed(0)
    model = GPT(TINY)
    x, y = _batch(8)
    y[:2, :6] = -100  # the first micro-batch counts fewer targets
    F.cross_entropy(model(x).reshape(-1, 11), y.reshape(-1)).backward()
    big = _grads(model)
    model.zero_grad()
    with NoFloat64():
        memory.accumulate_gradients(model, zip(x.chunk(4), y.chunk(4)))
    for a, b in zip(big, _grads(model)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    model.zero_grad()  # the mistake: the mean of each micro-batch, divided by k
    for xm, ym in zip(x.chunk(4), y.chunk(4)):
        (F.cross_entropy(model(xm).reshape(-1, 11), ym.reshape(-1)) / 4).backward()
    assert not all(torch.allclose(a, b, atol=1e-6) for a, b in zip(big, _grads(model)))


def test_checkpointing_gives_the_same_gradients_and_can_be_undone():
    torch.manual_seed(0)
    model = GPT(TINY)
    x, y = _batch()
    _loss(model, x, y).backward()
    plain = _grads(model)
    model.zero_grad()
    memory.checkpoint_blocks(model)
    assert "forward" in vars(model.blocks[0])
    _loss(model, x, y).backward()
    for a, b in zip(plain, _grads(model)):
        torch.testing.assert_close(a, b)
    memory.checkpoint_blocks(model, enabled=False)
    assert "forward" not in vars(model.blocks[0])
    assert list(model.state_dict()) == list(GPT(TINY).state_dict())


def test_peak_bytes_on_cpu_sees_checkpointing_save_memory():
    torch.manual_seed(0)
    config = TINY.replace(n_layer=4, block_size=32)
    model = GPT(config)
    x, y = _batch(16, config=config)
    plain = memory.peak_bytes(lambda: _loss(model, x, y).backward(), "cpu")[1]
    memory.checkpoint_blocks(model)
    model.zero_grad(set_to_none=True)
    saved = memory.peak_bytes(lambda: _loss(model, x, y).backward(), "cpu")[1]
    assert 0 < saved < plain
    assert memory.activation_bytes(config, 16, checkpointing=True) < memory.activation_bytes(
        config, 16
    )
