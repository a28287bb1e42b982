import pytest
import torch
import torch.nn.functional as F

from helpers import gpt, instruct, tokenizer

TEXT = "ANNE:\nGood morrow, gentle sir.\nWell met, my lady, well met.\nHow now?\n\nBEN:\nWhat news?"


def _setup():
    tok = tokenizer.CharTokenizer.from_text(TEXT.upper() + TEXT + "".join(instruct.TASKS) + ": ")
    return tok, instruct.instruction_pairs(instruct.phrases(TEXT), seed=0)


def test_phrases_and_the_three_answers():
    assert instruct.phrases(TEXT) == ["Good morrow, gentle sir.", "Well met, my lady,"]
    assert instruct.phrases(TEXT, words=3) == [
        "Good morrow, gentle",
        "Well met, my",
        "lady, well met.",
    ]
    phrase = "Well met, my lady."
    answers = {task: rule(phrase) for task, rule in instruct.TASKS.items()}
    assert answers == {"upper": "WELL MET, MY LADY.", "first": "Well", "last": "lady."}
    _, pairs = _setup()
    for prompt, response, task in pairs:
        phrase = prompt[len(task) + 2 : -1]
        assert prompt == instruct.format_prompt(task, phrase)
        assert response == instruct.TASKS[task](phrase)
    with pytest.raises(ValueError, match="unknown tasks"):
        instruct.instruction_pairs(["a b c"], tasks=["sing"])


def test_end_token_grows_the_tied_embedding_and_keeps_the_old_logits():
    tok, _ = _setup()
    torch.manual_seed(0)
    config = gpt.GPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=16)
    model = gpt.GPT(config).eval()
    x = torch.tensor([tok.encode("Good")])
    with torch.no_grad():
        before = model(x)
    new = instruct.add_end_token(model, tok)
    assert new.vocab_size == tok.vocab_size + 1 and new.chars.endswith(instruct.END)
    assert model.head.weight is model.tok_emb.weight and model.config.vocab_size == new.vocab_size
    with torch.no_grad():
        after = model(x)
    assert torch.equal(after[..., :-1], before)  # the old tokens' logits are unchanged
    assert torch.allclose(model.tok_emb.weight[-1], model.tok_emb.weight[:-1].mean(0))
    with pytest.raises(ValueError, match="once"):
        instruct.add_end_token(model, new)


def test_masked_batch_targets_the_response_and_the_end_token():
    tok, pairs = _setup()
    tok = tokenizer.CharTokenizer(tok.chars + instruct.END)
    x, y = instruct.masked_batch(pairs, tok, block_size=64)
    prompt, response, _ = pairs[0]
    ids = tok.encode(prompt + response + instruct.END)
    p = len(prompt)
    assert x[0, : len(ids) - 1].tolist() == ids[:-1]
    assert (y[0, : p - 1] == instruct.IGNORE).all()  # positions that predict prompt tokens
    assert tok.decode(y[0, p - 1 : len(ids) - 1].tolist()) == response + instruct.END
    assert (y[0, len(ids) - 1 :] == instruct.IGNORE).all()  # padding
    with pytest.raises(ValueError, match="max_chars"):
        instruct.masked_batch(pairs, tok, block_size=20)


def test_masked_loss_is_the_mean_over_response_tokens():
    tok, pairs = _setup()
    tok = tokenizer.CharTokenizer(tok.chars + instruct.END)
    x, y = instruct.masked_batch(pairs, tok, block_size=64)
    torch.manual_seed(0)
    config = gpt.GPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=16)
    model = gpt.GPT(config).eval()
    with torch.no_grad():
        logits = model(x)
    losses = []
    for i, (prompt, response, _) in enumerate(pairs):
        ids = tok.encode(prompt + response + instruct.END)
        for k in range(len(prompt), len(ids)):
            losses.append(-logits[i, k - 1].log_softmax(-1)[ids[k]])
    by_hand = torch.stack(losses).mean()
    masked = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    assert torch.allclose(masked, by_hand, atol=1e-6)
    assert abs(instruct.response_loss(model, x, y, batch_size=1) - by_hand.item()) < 1e-5


def test_respond_stops_at_the_end_token_and_exact_match():
    tok, pairs = _setup()
    torch.manual_seed(0)
    config = gpt.GPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=16)
    model = gpt.GPT(config)
    tok = instruct.add_end_token(model, tok)
    x, y = instruct.masked_batch(pairs, tok, block_size=64)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(300):  # memorise the three pairs
        loss = F.cross_entropy(model(x).transpose(1, 2), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    prompts, answers = [p for p, _, _ in pairs], [r for _, r, _ in pairs]
    replies = instruct.respond(model, prompts, tok)
    assert replies == answers and instruct.exact_match(replies, answers) == 1.0
    assert instruct.respond(model, prompts[:1], tok, max_new_tokens=2) == [None]  # no END in 2
    assert instruct.exact_match([None, "x"], ["a", "x"]) == 0.5
    with pytest.raises(ValueError, match="as many"):
        instruct.exact_match(["a"], [])
