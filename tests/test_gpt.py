import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import helpers
from helpers import gpt, optim, tokenizer


def _model(seed=0, **overrides):
    torch.manual_seed(seed)
    config = dict(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=16)
    return gpt.GPT(gpt.GPTConfig(**{**config, **overrides})).eval()


def _ids(batch=2, length=12, seed=1):
    return torch.randint(0, 11, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_tokenizer_round_trip_and_clear_errors():
    text = "First Citizen:\nBefore we proceed any further, hear me speak."
    tok = tokenizer.CharTokenizer.from_text(text)
    assert tok.vocab_size == len(set(text)) and tok.chars == "".join(sorted(set(text)))
    ids = tok.encode(text)
    assert tok.decode(ids) == text and tok.decode(torch.tensor(ids)) == text
    with pytest.raises(ValueError, match=r"\['Z', 'x'\] are not in this tokenizer's vocabulary"):
        tok.encode("Zero x")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([0, tok.vocab_size])
    with pytest.raises(ValueError, match="distinct characters"):
        tokenizer.CharTokenizer("aab")


def test_config_round_trips_and_rejects_bad_values():
    config = gpt.GPTConfig(vocab_size=65, n_layer=3, dropout=0.1)
    assert gpt.GPTConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="divisible by n_head"):
        gpt.GPTConfig(vocab_size=65, n_embd=10, n_head=4)
    with pytest.raises(ValueError, match="unknown GPTConfig keys"):
        gpt.GPTConfig.from_dict({"vocab_size": 65, "n_embed": 64})


def test_future_tokens_never_change_earlier_outputs():
    model = _model()
    ids = _ids()
    changed = ids.clone()
    changed[:, 7:] = (changed[:, 7:] + 3) % 11
    with torch.no_grad():
        a, b = model(ids), model(changed)
    assert torch.equal(a[:, :7], b[:, :7])
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_attention_matches_the_formula_and_sdpa():
    torch.manual_seed(0)
    attn = gpt.CausalSelfAttention(n_embd=16, n_head=4).eval()
    x = torch.randn(3, 10, 16)
    q, k, v = attn.qkv(x).split(16, dim=2)
    q, k, v = (t.view(3, 10, 4, 4).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-2, -1) / math.sqrt(4)
    scores = scores.masked_fill(torch.ones(10, 10, dtype=torch.bool).triu(1), float("-inf"))
    by_hand = (scores.softmax(-1) @ v).transpose(1, 2).reshape(3, 10, 16)
    sdpa = (
        F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(3, 10, 16)
    )
    with torch.no_grad():
        assert torch.allclose(by_hand, sdpa, atol=1e-6)
        assert torch.allclose(attn(x), attn.proj(by_hand), atol=1e-6)


def test_block_matches_transformer_encoder_layer():
    torch.manual_seed(0)
    block = gpt.Block(n_embd=16, n_head=4).eval()
    layer = nn.TransformerEncoderLayer(
        16, 4, dim_feedforward=64, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
    ).eval()
    with torch.no_grad():
        pairs = [
            (layer.self_attn.in_proj_weight, block.attn.qkv.weight),
            (layer.self_attn.in_proj_bias, block.attn.qkv.bias),
            (layer.self_attn.out_proj.weight, block.attn.proj.weight),
            (layer.self_attn.out_proj.bias, block.attn.proj.bias),
            (layer.linear1.weight, block.mlp.fc.weight),
            (layer.linear1.bias, block.mlp.fc.bias),
            (layer.linear2.weight, block.mlp.proj.weight),
            (layer.linear2.bias, block.mlp.proj.bias),
            (layer.norm1.weight, block.ln_1.weight),
            (layer.norm1.bias, block.ln_1.bias),
            (layer.norm2.weight, block.ln_2.weight),
            (layer.norm2.bias, block.ln_2.bias),
        ]
        for theirs, ours in pairs:
            theirs.copy_(torch.randn_like(ours) * 0.3)
            ours.copy_(theirs)
        x = torch.randn(2, 9, 16)
        mask = nn.Transformer.generate_square_subsequent_mask(9)
        assert torch.allclose(block(x), layer(x, src_mask=mask, is_causal=True), atol=1e-5)


@pytest.mark.parametrize("temperature,top_k", [(0.0, None), (0.8, 5)])
def test_kv_cache_gives_the_same_tokens(temperature, top_k):
    model = _model()
    prompt = _ids(batch=2, length=3)
    # 20 new tokens: the first 13 fit the context of 16 (cache used), the rest slide the window
    runs = [
        model.generate(
            prompt, 20, temperature, top_k, use_cache=c, generator=torch.Generator().manual_seed(5)
        )
        for c in (False, True)
    ]
    assert runs[0].shape == (2, 23) and torch.equal(runs[0], runs[1])


def test_cached_forward_equals_full_forward():
    model = _model()
    ids = _ids(length=12)
    cache = gpt.KVCache(model.config.n_layer)
    with torch.no_grad():
        parts = [model(ids[:, :5], cache), model(ids[:, 5:6], cache), model(ids[:, 6:], cache)]
        assert len(cache) == 12
        assert torch.allclose(torch.cat(parts, dim=1), model(ids), atol=1e-5)
    with pytest.raises(ValueError, match="do not fit the context"):
        model(_ids(length=17))


def test_init_tied_weights_and_parameter_groups():
    model = _model(n_layer=4)
    assert model.head.weight is model.tok_emb.weight
    assert model.num_parameters() == sum(p.numel() for p in set(model.parameters()))
    std = model.blocks[0].attn.proj.weight.std().item()
    assert math.isclose(std, 0.02 / math.sqrt(8), rel_tol=0.2)
    with torch.no_grad():  # small init: the first loss is close to log(vocab)
        loss = helpers.train.cross_entropy(model(_ids()), _ids(seed=2))
    assert abs(loss.item() - math.log(11)) < 0.1
    decay, no_decay = optim.param_groups(model, 0.1)
    assert all(p.dim() >= 2 for p in decay["params"]) and all(
        p.dim() == 1 for p in no_decay["params"]
    )
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_schedule_warms_up_then_decays():
    opt = torch.optim.AdamW([nn.Parameter(torch.zeros(2, 2))], lr=1.0)
    sched = optim.warmup_cosine(opt, warmup_steps=10, total_steps=100, min_lr_ratio=0.1)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:])) and lrs[-1] == pytest.approx(
        0.1, abs=1e-3
    )


def test_checkpoint_reload_gives_identical_logits(tmp_path):
    model = _model(dropout=0.1)
    tok = tokenizer.CharTokenizer("abcdefghijk")
    path = helpers.checkpoint.save_checkpoint(
        tmp_path / "gpt.pt", model, config=model.config.to_dict(), tokenizer=tok.chars
    )
    loaded, tok2, state = gpt.load_gpt(path)
    assert loaded.config == model.config and tok2.chars == tok.chars and not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(_ids()), model(_ids()))
    helpers.checkpoint.save_checkpoint(tmp_path / "plain.pt", model)
    with pytest.raises(ValueError, match="not written by chapter 04"):
        gpt.load_gpt(tmp_path / "plain.pt")


def test_sample_next_with_a_tiny_temperature_is_the_argmax():
    logits = torch.tensor([[1.0, 3.0, 2.0], [-5.0, -7.0, -6.0]])
    for temperature in (1e-40, 5e-324, 1e-6):
        token = gpt.sample_next(logits, temperature, generator=torch.Generator().manual_seed(0))
        assert token.flatten().tolist() == [1, 0]
    # the shift changes nothing at ordinary temperatures: the same distribution
    shifted = torch.softmax((logits - logits.amax(-1, keepdim=True)) / 0.7, -1)
    assert torch.allclose(shifted, torch.softmax(logits / 0.7, -1))
