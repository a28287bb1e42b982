"""DPO by hand (helpers.dpo): the loss from its formula, its gradient, and the pair builders."""

import math

import pytest
import torch

from helpers import dpo, gpt, instruct
from helpers.tokenizer import CharTokenizer


def test_dpo_loss_matches_the_formula_on_two_pairs():
    pc, pr = torch.tensor([-3.0, -8.0]), torch.tensor([-5.0, -2.0])
    rc, rr = torch.tensor([-4.0, -7.5]), torch.tensor([-4.5, -2.5])
    beta = 0.5
    by_hand = [
        math.log(1 + math.exp(-beta * ((a - c) - (b - d))))
        for a, b, c, d in zip(pc.tolist(), pr.tolist(), rc.tolist(), rr.tolist())
    ]
    loss, chosen, rejected = dpo.dpo_loss(pc, pr, rc, rr, beta)
    assert loss.item() == pytest.approx(sum(by_hand) / 2, abs=1e-6)
    assert chosen.tolist() == [0.5, -0.25] and rejected.tolist() == [-0.25, 0.25]


def test_dpo_gradient_by_finite_differences_and_its_closed_form():
    torch.manual_seed(0)
    pc, pr, rc, rr = (torch.randn(5, dtype=torch.float64) * 3 for _ in range(4))
    inputs = [pc.requires_grad_(), pr.requires_grad_()]
    assert torch.autograd.gradcheck(lambda a, b: dpo.dpo_loss(a, b, rc, rr, 0.3)[0], inputs)
    dpo.dpo_loss(*inputs, rc, rr, 0.3)[0].backward()
    margin = 0.3 * ((pc - rc) - (pr - rr))
    assert torch.allclose(pc.grad, -0.3 * torch.sigmoid(-margin) / 5)
    assert torch.allclose(pr.grad, -pc.grad)


def test_policy_equal_to_reference_gives_log_2():
    x = torch.randn(4)
    loss, chosen, rejected = dpo.dpo_loss(x, x - 1, x, x - 1, 0.1)
    assert loss.item() == pytest.approx(math.log(2)) and not chosen.any() and not rejected.any()
    with pytest.raises(ValueError, match="beta must be positive"):
        dpo.dpo_loss(x, x, x, x, 0.0)


@pytest.fixture
def tiny():
    tokenizer = CharTokenizer("abcdefghijklmnopqrstuvwxyz :\n" + instruct.END)
    torch.manual_seed(0)
    config = gpt.GPTConfig(vocab_size=tokenizer.vocab_size, block_size=24, n_layer=1, n_embd=32)
    model = gpt.GPT(config)
    return model.eval(), tokenizer


def test_sequence_logprobs_sum_the_reply_tokens_only(tiny):
    model, tokenizer = tiny
    triples = [("first: ab cd\n", "ab" + instruct.END, "abc" + instruct.END)]
    t = dpo.preference_tensors(triples, tokenizer, 24)
    logp = model(t["xc"]).log_softmax(-1)[0]
    ids = tokenizer.encode(triples[0][0] + triples[0][1])
    start = len(tokenizer.encode(triples[0][0]))
    by_hand = sum(logp[k - 1, ids[k]] for k in range(start, len(ids)))
    ours = dpo.sequence_logprobs(model, t["xc"], t["yc"])[0]
    assert ours.item() == pytest.approx(by_hand.item(), abs=1e-5)
    batched = dpo.reference_logprobs(model, t["xc"], t["yc"], batch_size=1)
    assert torch.allclose(batched, by_hand.view(1))
    assert (t["yr"] != instruct.IGNORE).sum() == 4  # "abc" and END: the prompt is never a target


def test_sample_replies_and_triples(tiny):
    model, tokenizer = tiny
    pairs = [("first: ab cd\n", "ab", "first"), ("last: ab cd\n", "cd", "last")]
    replies = dpo.sample_replies(model, [p for p, _, _ in pairs], tokenizer, samples=3, seed=0)
    assert [len(r) for r in replies] == [3, 3]
    for (prompt, _, _), sampled in zip(pairs, replies):
        for reply in sampled:  # cut after END, or as long as the context allows
            assert reply.endswith(instruct.END) or len(prompt) + len(reply) == 24
            assert instruct.END not in reply[:-1]
    triples = dpo.preference_triples(pairs, [["ab" + instruct.END, "xy"], ["cd" + instruct.END]])
    assert triples == [("first: ab cd\n", "ab" + instruct.END, "xy")]  # the second pair: all right
    with pytest.raises(ValueError, match="one list of replies per pair"):
        dpo.preference_triples(pairs, [[]])
