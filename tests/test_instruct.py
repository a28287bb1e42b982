import torch
import torch.nn.functional as F

from helpers import gpt, instruct, shakespeare, tokenizer

TEXT = "ANNE:\nGood morrow, gentle sir.\n\nBEN:\nWell met, fair lady.\n\nANNE:\nWhat news?"


def _setup():
    tok = tokenizer.CharTokenizer.from_text(TEXT + instruct.TEMPLATE + "0123456789")
    pairs = instruct.speech_pairs(shakespeare.speeches(TEXT), ["ANNE", "BEN"], cue_chars=8)
    return tok, pairs


def test_pairs_and_template():
    _, pairs = _setup()
    assert [p[2] for p in pairs] == ["BEN", "ANNE"]  # the first speech answers nobody
    prompt, response, _ = pairs[0]
    assert prompt == "Cue: gentle sir.\nAs BEN:\n".replace("gentle sir.", "sir.")
    assert response == "Well met, fair lady."


def test_masked_batch_targets_only_the_response():
    tok, pairs = _setup()
    x, y = instruct.masked_batch(pairs, tok, block_size=30)
    prompt, response, _ = pairs[0]
    p = len(prompt)
    ids = tok.encode(prompt + response)[:31]
    assert x[0, : len(ids) - 1].tolist() == ids[:-1]
    assert (y[0, : p - 1] == instruct.IGNORE).all()  # positions that predict prompt tokens
    assert tok.decode(y[0, p - 1 : len(ids) - 1].tolist()) == (prompt + response)[p:31]
    assert (y[0, len(ids) - 1 :] == instruct.IGNORE).all()  # padding


def test_masked_loss_is_the_mean_over_response_tokens():
    tok, pairs = _setup()
    x, y = instruct.masked_batch(pairs, tok, block_size=40)
    torch.manual_seed(0)
    model = gpt.GPT(
        gpt.GPTConfig(vocab_size=tok.vocab_size, block_size=40, n_layer=1, n_head=2, n_embd=16)
    ).eval()
    with torch.no_grad():
        logits = model(x)
    losses = []
    for i, (prompt, response, _) in enumerate(pairs):
        ids = tok.encode(prompt + response)[:41]
        for k in range(len(prompt), len(ids)):
            losses.append(-logits[i, k - 1].log_softmax(-1)[ids[k]])
    by_hand = torch.stack(losses).mean()
    masked = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    assert torch.allclose(masked, by_hand, atol=1e-6)
    assert abs(instruct.response_loss(model, x, y, batch_size=1) - by_hand.item()) < 1e-5


def test_a_prompt_longer_than_the_context_is_an_error():
    tok, pairs = _setup()
    try:
        instruct.masked_batch(pairs, tok, block_size=10)
    except ValueError as error:
        assert "cue_chars" in str(error)
    else:
        raise AssertionError("expected a ValueError")
