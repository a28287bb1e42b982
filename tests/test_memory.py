"""helpers.memory: the accounting formulas against the real model, accumulation, checkpointing."""

import pytest
import torch
import torch.nn.functional as F
from guards import NoFloat64

from helpers import memory, recipes
from helpers.gpt import GPT, GPTConfig
from helpers.train import cross_entropy

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


@pytest.mark.parametrize("bias", [True, False])
def test_activation_formula_is_exact_under_bf16_autocast(bias):
    config = TINY.replace(bias=bias, n_head=4, n_embd=32)
    torch.manual_seed(0)
    model = GPT(config)
    x, y = _batch(5, config=config)

    def loss():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return _loss(model, x, y)

    _, saved = memory.saved_activation_bytes(loss, exclude=model)
    formula = memory.activation_bytes(config, 5, precision="bf16")
    assert saved == formula + memory.bf16_copy_bytes(config)  # the weight copies are saved too
    assert formula < memory.activation_bytes(config, 5)
    with pytest.raises(ValueError, match="precision"):
        memory.activation_bytes(config, 5, precision="fp16")


def test_the_peak_of_a_forward_pass_is_saved_tensors_plus_logits():
    config = TINY.replace(vocab_size=2000, n_layer=1)
    torch.manual_seed(0)
    model = GPT(config)
    x, y = _batch(4, config=config)
    for precision in ("fp32", "bf16"):

        def loss(precision=precision):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                return cross_entropy(model(x).float(), y)  # as helpers.train_gpt_ddp does

        _, saved = memory.saved_activation_bytes(loss, exclude=model)
        _, peak = memory.peak_bytes(loss, "cpu")
        logits = memory.logit_bytes(config, 4)
        # (the saved token ids and targets were allocated before: not in the peak)
        assert abs(peak - saved - logits) < 0.01 * logits


def test_log_softmax_keeps_4_bytes_per_logit_under_autocast():
    wide = TINY.replace(vocab_size=TINY.vocab_size + 100)
    extra = memory.activation_bytes(wide, 2, precision="bf16") - memory.activation_bytes(
        TINY, 2, precision="bf16"
    )
    assert extra == 4 * 2 * TINY.block_size * 100


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
    zero3 = memory.state_bytes(1000, "bf16_master", "full", world_size=8)
    assert zero3 == {"weights": 250.0, "grads": 250.0, "optimizer": 1500.0}
    zero1 = memory.state_bytes(1000, "bf16_master", "optimizer", world_size=4)
    assert zero1 == {"weights": 2000, "grads": 2000, "optimizer": 3000.0}
    fsdp2 = memory.state_bytes(1000, "fp32", "full", world_size=8)  # float32 shards
    assert fsdp2 == {"weights": 500.0, "grads": 500.0, "optimizer": 1000.0}
    with pytest.raises(ValueError, match="sharding"):
        memory.state_bytes(1000, sharding="zero9")
    with pytest.raises(ValueError, match="layout"):
        memory.state_bytes(1000, "bf16")


def test_training_bytes_counts_bf16_copies_only_over_float32_weights():
    config = TINY.replace(n_layer=4)
    autocast = memory.training_bytes(config, 2, "bf16")
    zero = memory.training_bytes(config, 2, "bf16_master")
    fsdp2 = memory.training_bytes(config, 2, "bf16", "full", world_size=4)
    c, v = config.n_embd, config.vocab_size
    assert autocast["bf16_copies"] == 2 * (4 * 12 * c * c + v * c) and zero["bf16_copies"] == 0
    assert fsdp2["bf16_copies"] == 2 * (2 * 12 * c * c + v * c)  # two blocks gathered at a time
    assert autocast["total"] == sum(v for k, v in autocast.items() if k != "total")
    assert autocast["logits"] == memory.training_bytes(config, 2)["logits"] == 2 * 8 * 11 * 4
    assert (
        autocast["activations"]
        == zero["activations"]
        < memory.training_bytes(config, 2)["activations"]
    )
    with pytest.raises(ValueError, match="precision"):
        memory.training_bytes(config, 2, "fp16")


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
