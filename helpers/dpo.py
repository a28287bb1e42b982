"""Preference tuning with DPO (direct preference optimisation, Rafailov et al. 2023), by hand.

DPO trains a policy :math:`\\pi_\\theta` on preference triples (prompt :math:`x`, a chosen reply
:math:`y_w`, a rejected one :math:`y_l`) against a frozen **reference** :math:`\\pi_{ref}` (the
model before preference tuning)::

    r(x, y) = beta * (log pi(y | x) - log pi_ref(y | x))          the implicit reward
    loss    = -log sigmoid(r(x, y_w) - r(x, y_l))

It raises the chosen reply's probability *relative to the reference* more than the rejected
one's; ``beta`` sets how far the policy may move from the reference for a given gain.

- :func:`sequence_logprobs`: :math:`\\log \\pi(y | x)`, the sum over the reply's tokens (the
  targets that are not :data:`helpers.instruct.IGNORE`), with gradients;
- :func:`reference_logprobs`: the same for a whole set, in batches, without gradients (the
  reference never changes: computed once);
- :func:`dpo_loss`: the loss and both implicit rewards;
- :func:`sample_replies` and :func:`preference_triples`: a model's own sampled replies, and the
  triples where a program can tell the better one (the right answer against a wrong reply);
- :func:`preference_tensors`: triples as chapter 06's masked batches, chosen and rejected.
"""

from __future__ import annotations

from collections import defaultdict

import torch
import torch.nn.functional as F

from .instruct import END, IGNORE, masked_batch


def sequence_logprobs(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N,): the log-probability of each row's reply, summed over its targets (``y != IGNORE``)."""
    logp = model(x).float().log_softmax(-1)
    mask = y != IGNORE
    picked = logp.gather(-1, y.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(-1)


@torch.inference_mode()
def reference_logprobs(model, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256):
    """:func:`sequence_logprobs` of a whole set (on ``x``'s device), in eval mode, no gradients."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = [
        sequence_logprobs(model, xb.to(device), yb.to(device))
        for xb, yb in zip(x.split(batch_size), y.split(batch_size))
    ]
    model.train(was_training)
    return torch.cat(out).to(x.device)


def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float):
    """``(loss, chosen_rewards, rejected_rewards)``: the mean DPO loss of a batch, and the
    implicit rewards ``beta * (log pi - log pi_ref)`` of each chosen and rejected reply."""
    if beta <= 0:
        raise ValueError(f"beta must be positive (typical values 0.01 to 1), got {beta}.")
    chosen = beta * (policy_chosen - ref_chosen)
    rejected = beta * (policy_rejected - ref_rejected)
    return -F.logsigmoid(chosen - rejected).mean(), chosen, rejected


@torch.inference_mode()
def sample_replies(model, prompts, tokenizer, samples: int = 4, temperature: float = 1.0, seed=0):
    """``samples`` sampled replies per prompt: each one cut just after its first :data:`END`
    (END kept), or, if none came, everything up to the end of the context (no END: unfinished).

    Prompts of equal length are sampled as one batch, ``samples`` copies each.
    """
    device = next(model.parameters()).device
    end = tokenizer.encode(END)[0]
    generator = torch.Generator(device=device).manual_seed(seed)
    encoded = [tokenizer.encode(prompt) for prompt in prompts]
    groups = defaultdict(list)
    for i, ids in enumerate(encoded):
        groups[len(ids)].append(i)
    replies = [[] for _ in prompts]
    for length, members in sorted(groups.items()):
        ids = torch.tensor([encoded[i] for i in members], device=device)
        ids = ids.repeat_interleave(samples, dim=0)
        budget = model.config.block_size - length
        out = model.generate(ids, budget, temperature=temperature, generator=generator)
        for row, tokens in enumerate(out[:, length:].tolist()):
            cut = tokens[: tokens.index(end) + 1] if end in tokens else tokens
            replies[members[row // samples]].append(tokenizer.decode(cut))
    return replies


def preference_triples(pairs, replies) -> list[tuple[str, str, str]]:
    """``(prompt, chosen, rejected)`` for each pair with a wrong reply among its ``replies``: the
    right answer (with :data:`END`) is chosen, the first wrong reply is rejected. Prompts whose
    replies are all right give no triple."""
    if len(pairs) != len(replies):
        raise ValueError(f"need one list of replies per pair, got {len(replies)} for {len(pairs)}.")
    triples = []
    for (prompt, answer, *_), sampled in zip(pairs, replies):
        wrong = [r for r in sampled if r != answer + END]
        if wrong:
            triples.append((prompt, answer + END, wrong[0]))
    return triples


def preference_tensors(triples, tokenizer, block_size: int) -> dict[str, torch.Tensor]:
    """``{"xc", "yc", "xr", "yr"}``: chosen and rejected replies as masked batches (targets only
    on the reply, :func:`helpers.instruct.masked_batch`), row i of each from triple i."""
    chosen = [(p, c) for p, c, _ in triples]
    rejected = [(p, r) for p, _, r in triples]
    xc, yc = masked_batch(chosen, tokenizer, block_size, end=False)
    xr, yr = masked_batch(rejected, tokenizer, block_size, end=False)
    return {"xc": xc, "yc": yc, "xr": xr, "yr": yr}
