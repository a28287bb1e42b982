"""Instruction tuning (chapter 06): instructions with one right answer, an end token, a masked loss.

- :data:`TASKS`: three instructions on a phrase of verse, each with exactly one right response
  (``upper``: the phrase in capitals; ``first`` / ``last``: its first / last word), and
  :func:`instruction_pairs` that builds ``(prompt, response)`` pairs from the :func:`phrases` of
  a text;
- :data:`END` and :func:`add_end_token`: a new token (one more row in the tied embedding) that
  ends every response, so a tuned model learns to *stop*;
- :func:`masked_batch`: prompt + response + END as one sequence ``x`` and its next-token targets
  ``y``, with ``y = -100`` (:data:`IGNORE`, ``F.cross_entropy``'s ``ignore_index``) on the prompt
  and the padding: the loss is the mean cross-entropy over the response tokens (END included);
- :func:`response_loss`: that loss over a whole set, summed exactly (not a mean of batch means);
- :func:`respond` and :func:`exact_match`: greedy replies, cut at END, compared with the answer.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict

import torch
from torch import nn

from .precision import choose
from .tokenizer import CharTokenizer
from .train import cross_entropy

IGNORE = -100  # F.cross_entropy's default ignore_index
END = "\u2404"  # "␄" (end of transmission): not a character of Tiny Shakespeare
TASKS = {
    "upper": lambda phrase: phrase.upper(),
    "first": lambda phrase: phrase.split()[0],
    "last": lambda phrase: phrase.split()[-1],
}


def format_prompt(task: str, phrase: str) -> str:
    """The prompt: the instruction's name, the phrase, a new line where the response starts."""
    return f"{task}: {phrase}\n"


def phrases(text: str, words: int = 4, max_chars: int = 28) -> list[str]:
    """Every line of verse (not a speaker's name) cut into phrases of ``words`` words (a last
    piece of at least 3 words kept), at most ``max_chars`` characters long, in text order."""
    out = []
    for line in text.split("\n"):
        tokens = line.split()
        if not tokens or line.endswith(":"):
            continue
        for i in range(0, len(tokens), words):
            phrase = " ".join(tokens[i : i + words])
            if len(tokens[i : i + words]) >= 3 and len(phrase) <= max_chars:
                out.append(phrase)
    return out


def instruction_pairs(texts, tasks=tuple(TASKS), seed: int = 0) -> list[tuple[str, str, str]]:
    """``(prompt, response, task)`` for each of ``texts`` (phrases), with one of ``tasks`` drawn
    at random for it."""
    unknown = set(tasks) - TASKS.keys()
    if unknown:
        raise ValueError(f"unknown tasks {sorted(unknown)}; choose from {list(TASKS)}.")
    rng = random.Random(seed)
    pairs = []
    for phrase in texts:
        task = rng.choice(list(tasks))
        pairs.append((format_prompt(task, phrase), TASKS[task](phrase), task))
    return pairs


def add_end_token(model: nn.Module, tokenizer: CharTokenizer) -> CharTokenizer:
    """Give ``model`` (a :class:`helpers.gpt.GPT`, changed in place) the :data:`END` token.

    The tied embedding grows by one row, started at the mean of the others (a neutral token: its
    first logits are the mean logit, neither certain nor impossible). Returns the new tokenizer.
    """
    if END in tokenizer.chars:
        raise ValueError("the tokenizer already has the END token: call add_end_token once.")
    old = model.tok_emb.weight.data
    new = nn.Embedding(old.shape[0] + 1, old.shape[1]).to(old.device, old.dtype)
    with torch.no_grad():
        new.weight[:-1] = old
        new.weight[-1] = old.mean(0)
    model.tok_emb = new
    model.head = nn.Linear(old.shape[1], old.shape[0] + 1, bias=False).to(old.device, old.dtype)
    model.head.weight = model.tok_emb.weight  # tied again
    model.config = model.config.replace(vocab_size=old.shape[0] + 1)
    return CharTokenizer(tokenizer.chars + END)


def masked_batch(pairs, tokenizer, block_size: int, pad: int = 0, end: bool = True):
    """``(x, y)`` long tensors (N, block_size): prompt + response + END, targets only on the
    response and END (``end=False``: the responses are taken as they are, no END appended; a
    response may then end with END itself, or not end at all).

    ``x`` is the sequence without its last token (padded with ``pad``, a real token id that no
    target ever sees), ``y`` the next token at each position, :data:`IGNORE` where that token
    belongs to the prompt or is padding.
    """
    x = torch.full((len(pairs), block_size), pad, dtype=torch.long)
    y = torch.full((len(pairs), block_size), IGNORE, dtype=torch.long)
    for i, (prompt, response, *_) in enumerate(pairs):
        p, r = tokenizer.encode(prompt), tokenizer.encode(response + END if end else response)
        if len(p) + len(r) > block_size + 1:
            raise ValueError(
                f"pair {i} needs {len(p) + len(r)} tokens, more than block_size + 1 = "
                f"{block_size + 1}: use shorter phrases (phrases(max_chars=...))."
            )
        ids = torch.tensor(p + r, dtype=torch.long)
        x[i, : len(ids) - 1] = ids[:-1]
        y[i, len(p) - 1 : len(ids) - 1] = ids[len(p) :]  # predict response token j from all before
    return x, y


@torch.inference_mode()
def response_loss(model, x, y, batch_size: int = 256) -> float:
    """Mean cross-entropy over every response token (targets != :data:`IGNORE`) of a set."""
    device = next(model.parameters()).device
    policy = choose(device)
    was_training = model.training
    count = int((y != IGNORE).sum())  # once, before the loop: no wait for the device per batch
    if count == 0:
        raise ValueError("no response tokens: every target is IGNORE.")
    model.eval()
    sums = []
    for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
        xb, yb = xb.to(device), yb.to(device)
        with policy.autocast():
            logits = model(xb)
        sums.append(cross_entropy(logits.float(), yb, reduction="sum"))
    model.train(was_training)
    return math.fsum(torch.stack(sums).tolist()) / count


@torch.inference_mode()
def respond(model, prompts, tokenizer, max_new_tokens: int | None = None) -> list[str]:
    """Greedy replies to ``prompts``, each cut at its first :data:`END` (``None`` where none came).

    Prompts of equal length are generated as one batch (the GPT has no padding mask). A reply
    that does not end within ``max_new_tokens`` (default: what the context leaves) is ``None``.
    """
    device = next(model.parameters()).device
    end = tokenizer.encode(END)[0]
    groups = defaultdict(list)
    for i, prompt in enumerate(prompts):
        groups[len(prompt)].append(i)
    replies = [None] * len(prompts)
    for length, members in groups.items():
        budget = max_new_tokens or model.config.block_size - length
        ids = torch.tensor([tokenizer.encode(prompts[i]) for i in members], device=device)
        out = model.generate(ids, budget, temperature=0.0)[:, length:].tolist()
        for i, tokens in zip(members, out):
            if end in tokens:
                replies[i] = tokenizer.decode(tokens[: tokens.index(end)])
    return replies


def exact_match(replies, answers) -> float:
    """The share of replies equal to their answer, character for character (``None`` fails)."""
    if len(replies) != len(answers) or not answers:
        raise ValueError(
            f"need as many replies as answers (> 0), got {len(replies)}, {len(answers)}."
        )
    return sum(r == a for r, a in zip(replies, answers)) / len(answers)
