import datetime

import pytest
import torch
from torch import nn

from helpers import seq2seq as s2s
from helpers import train
from helpers.loader import TensorLoader

C, HEADS, D_FF, B, S, T = 16, 4, 32, 2, 7, 5


def _randomized(module):
    torch.manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.3)
    return module.eval()


def _copy(ours, theirs):
    with torch.no_grad():
        for mine, other in s2s.torch_layer_pairs(ours, theirs):
            other.copy_(mine)
    return theirs.eval()


def _padding():
    padding = torch.zeros(B, S, dtype=torch.bool)
    padding[1, -2:] = True
    return padding, ~padding[:, None, None, :]


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_equals_pytorch(norm_first):
    ours = _randomized(s2s.EncoderLayer(C, HEADS, D_FF, dropout=0.1, norm_first=norm_first))
    theirs = nn.TransformerEncoderLayer(
        C, HEADS, D_FF, dropout=0.1, batch_first=True, norm_first=norm_first
    )
    _copy(ours, theirs)
    padding, keep = _padding()
    x = torch.randn(B, S, C)
    with torch.no_grad():
        a, b = ours(x, mask=keep), theirs(x, src_key_padding_mask=padding)
    assert torch.allclose(a[~padding], b[~padding], atol=1e-5)


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_layer_equals_pytorch_and_respects_its_masks(norm_first):
    ours = _randomized(s2s.DecoderLayer(C, HEADS, D_FF, dropout=0.1, norm_first=norm_first))
    theirs = nn.TransformerDecoderLayer(
        C, HEADS, D_FF, dropout=0.1, batch_first=True, norm_first=norm_first
    )
    _copy(ours, theirs)
    padding, keep = _padding()
    y, memory = torch.randn(B, T, C), torch.randn(B, S, C)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    with torch.no_grad():
        a = ours(y, memory, causal, keep)
        b = theirs(
            y,
            memory,
            tgt_mask=nn.Transformer.generate_square_subsequent_mask(T),
            memory_key_padding_mask=padding,
        )
        assert torch.allclose(a, b, atol=1e-5)
        later = y.clone()
        later[:, 3] += 1
        assert torch.equal(ours(later, memory, causal, keep)[:, :3], a[:, :3])
        padded = memory.clone()
        padded[1, -1] += 50
        assert torch.equal(ours(y, padded, causal, keep)[1], a[1])


def test_attention_weights_path_equals_the_fused_path():
    attn = _randomized(s2s.Attention(C, HEADS))
    x, context = torch.randn(B, T, C), torch.randn(B, S, C)
    _, keep = _padding()
    with torch.no_grad():
        fused = attn(x, context, mask=keep)
        explicit, weights = attn(x, context, mask=keep, need_weights=True)
    assert torch.allclose(fused, explicit, atol=1e-5) and weights.shape == (B, HEADS, T, S)
    assert torch.allclose(weights.sum(-1), torch.ones(B, HEADS, T))
    assert weights[1, ..., -2:].max() == 0  # padded keys get no weight
    with pytest.raises(ValueError, match="divisible"):
        s2s.Attention(10, 4)


def test_date_splits_are_disjoint_by_day_and_well_formed():
    splits = s2s.date_splits((300, 50, 50), seed=1)
    assert splits == s2s.date_splits((300, 50, 50), seed=1)  # deterministic
    days = {name: {t for _, t in pairs} for name, pairs in splits.items()}
    assert len(days["train"]) == 300 and not days["train"] & (days["val"] | days["test"])
    for source, target in splits["train"]:
        date = datetime.date.fromisoformat(target)
        assert s2s.FORMATS[s2s.format_of(source)](date) == source
    assert s2s.format_of("may 8 1905") == "mon d yyyy"
    assert s2s.format_of("may 8, 1905") == "month d, yyyy"
    with pytest.raises(ValueError, match="exactly one"):
        s2s.format_of("1905-05-08")
    with pytest.raises(ValueError, match="at most"):
        s2s.date_splits((80_000, 1, 1))


def test_tensors_encode_decode_and_teacher_forcing():
    pairs = [("3.3.1998", "1998-03-03"), ("may 1 2000", "2000-05-01")]
    source, decoder_input, target = s2s.to_tensors(pairs)
    assert source.shape == (2, 10) and source[0, -2:].tolist() == [s2s.PAD] * 2
    assert decoder_input.shape == target.shape == (2, s2s.TARGET_LENGTH)
    assert decoder_input[:, 0].eq(s2s.BOS).all() and torch.equal(
        decoder_input[:, 1:], target[:, :-1]
    )
    assert target[:, -1].eq(s2s.EOS).all() and s2s.decode(target[1]) == "2000-05-01"
    assert s2s.decode([s2s.BOS, *s2s.encode("12"), s2s.EOS, *s2s.encode("3")]) == "12"
    with pytest.raises(ValueError, match="outside the vocabulary"):
        s2s.encode("March")


def test_model_learns_with_fit_and_greedy_matches_step_by_step_argmax():
    pairs = s2s.date_splits((400, 50, 1), seed=0)
    source, decoder_input, target = s2s.to_tensors(pairs["train"])
    torch.manual_seed(0)
    model = s2s.Seq2SeqTransformer(d_model=32, n_head=4, n_layer=1, d_ff=64, dropout=0.0)
    data = TensorLoader(source, decoder_input, target, batch_size=32, shuffle=True, inputs=2)
    val = TensorLoader(*s2s.to_tensors(pairs["val"]), batch_size=50, inputs=2)
    optimizer = torch.optim.AdamW(model.parameters(), 3e-3)
    history = train.fit(model, data, optimizer, steps=60, val_loader=val, eval_every=30)
    assert history["val_loss"][-1] < 0.8 * history["val_loss"][0]
    src = s2s.to_tensors(pairs["val"][:4])[0]
    out = model.greedy(src)
    memory, keep = model.encode(src)
    written = torch.full((4, 1), s2s.BOS)
    with torch.no_grad():
        for _ in range(out.shape[1]):
            written = torch.cat(
                [written, model.decode(written, memory, keep)[:, -1:].argmax(-1)], 1
            )
    assert torch.equal(written[:, 1:], out)
    hits = s2s.exact_match(model, pairs["val"], batch_size=16)
    assert hits.dtype == torch.bool and hits.shape == (50,)
    with pytest.raises(ValueError, match="max_len"):
        model(torch.ones(1, 70, dtype=torch.long), decoder_input[:1])
