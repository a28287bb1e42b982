"""Instruction-style tuning (chapter 06): prompt → response pairs and a loss on the response only.

- :data:`TEMPLATE` and :func:`format_prompt`: a cue (the end of the previous speech) and the
  speaker asked to reply; the response is the start of that speaker's real reply;
- :func:`speech_pairs`: the pairs, from consecutive speeches of Tiny Shakespeare;
- :func:`masked_batch`: prompt + response as one sequence ``x`` and its next-token targets ``y``,
  with ``y = -100`` (:data:`IGNORE`, ``F.cross_entropy``'s ``ignore_index``) on the prompt and the
  padding, so the loss is the mean cross-entropy over the response tokens only;
- :func:`response_loss`: that loss over a whole set, summed exactly (not a mean of batch means).
"""

from __future__ import annotations

import math

import torch

from .precision import choose
from .train import cross_entropy

IGNORE = -100  # F.cross_entropy's default ignore_index
TEMPLATE = "Cue: {cue}\nAs {speaker}:\n"


def _cue(previous: str, max_chars: int) -> str:
    """The last words of the previous speech that fit in ``max_chars`` (one line)."""
    words, cue = previous.replace("\n", " ").split(), ""
    for word in reversed(words):
        if len(word) + len(cue) + 1 > max_chars:
            break
        cue = f"{word} {cue}".strip()
    return cue or previous.replace("\n", " ")[-max_chars:].strip()


def format_prompt(cue: str, speaker: str) -> str:
    """The prompt: the cue, then the speaker asked to answer it."""
    return TEMPLATE.format(cue=cue, speaker=speaker)


def speech_pairs(speeches: list, speakers, cue_chars: int = 12) -> list[tuple[str, str, str]]:
    """``(prompt, response, speaker)`` for every speech by one of ``speakers`` that answers another.

    ``speeches`` is a list of :class:`helpers.shakespeare.Speech` in text order (e.g. one split);
    the cue is the end of the speech just before in the text (by another speaker).
    """
    wanted, pairs = set(speakers), []
    by_index = {s.index: s for s in speeches}
    for s in speeches:
        before = by_index.get(s.index - 1)
        if s.speaker in wanted and before is not None and before.speaker != s.speaker:
            pairs.append(
                (format_prompt(_cue(before.body, cue_chars), s.speaker), s.body, s.speaker)
            )
    return pairs


def masked_batch(pairs, tokenizer, block_size: int, pad: int = 0):
    """``(x, y)`` long tensors (N, block_size): prompt + response, targets masked on the prompt.

    The sequence is ``prompt + response`` cut to ``block_size + 1`` tokens; ``x`` is all but the
    last token (padded with ``pad``, a real token id that no target ever sees), ``y`` the next
    token at each position, :data:`IGNORE` where that token belongs to the prompt or is padding.
    """
    x = torch.full((len(pairs), block_size), pad, dtype=torch.long)
    y = torch.full((len(pairs), block_size), IGNORE, dtype=torch.long)
    for i, (prompt, response, *_) in enumerate(pairs):
        p, r = tokenizer.encode(prompt), tokenizer.encode(response)
        if len(p) >= block_size:
            raise ValueError(
                f"prompt {i} ({len(p)} tokens) leaves no room for a response in "
                f"{block_size} tokens: shorten the cue (cue_chars)."
            )
        ids = torch.tensor((p + r)[: block_size + 1], dtype=torch.long)
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
