"""A GPT as a classifier (chapter 06): a new head on the last real token's hidden state.

- :func:`pad_sequences`: variable-length id lists to one tensor, right-padded with :data:`PAD`
  (``-1``, not a token) and truncated to the context;
- :class:`GPTClassifier`: a GPT body and a linear head read at each sequence's last real token.
  Under the causal mask that token is the only one that has seen the whole input, and padding to
  its right cannot change it;
- :func:`speaker_task`: which of the K most frequent speakers says a speech of Tiny Shakespeare,
  split by position (:func:`helpers.shakespeare.split_by_position`);
- :data:`STRATEGIES` and :func:`train_classifier`: the same budget for a random-init model, the
  head only, the last block + head, every weight, or LoRA adapters + head;
  :func:`saved_bytes`: the size on disk of what a strategy must save.
"""

from __future__ import annotations

import copy
import io
from collections import Counter
from dataclasses import dataclass

import torch
from torch import nn

from . import optim
from .finetune import freeze, shuffled_loader, unfreeze
from .gpt import GPT
from .loader import TensorLoader
from .lora import adapter_state_dict, apply_lora
from .train import fit

PAD = -1  # marks padding in inputs; it is never looked up in the embedding


def pad_sequences(seqs, block_size: int, pad: int = PAD) -> torch.Tensor:
    """``(N, block_size)`` long tensor: each sequence's first ``block_size`` ids, then ``pad``."""
    if block_size < 1:
        raise ValueError(f"block_size must be at least 1, got {block_size}.")
    out = torch.full((len(seqs), block_size), pad, dtype=torch.long)
    for i, seq in enumerate(seqs):
        if len(seq) == 0:
            raise ValueError(f"sequence {i} is empty: a classifier needs at least one token.")
        seq = torch.as_tensor(seq[:block_size], dtype=torch.long)
        out[i, : len(seq)] = seq
    return out


def hidden_states(gpt: GPT, idx: torch.Tensor) -> torch.Tensor:
    """The GPT's final hidden states (B, T, C), after ``ln_f`` and before the vocabulary head."""
    return gpt.hidden(idx)


class GPTClassifier(nn.Module):
    """Class logits from the hidden state of each sequence's last real (non-:data:`PAD`) token."""

    def __init__(self, gpt: GPT, num_classes: int):
        super().__init__()
        self.gpt = gpt
        self.head = nn.Linear(gpt.config.n_embd, num_classes)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        lengths = (idx != PAD).sum(1)
        if (lengths == 0).any():
            raise ValueError("a sequence has no tokens (only PAD): drop it from the batch.")
        h = hidden_states(self.gpt, idx.clamp(min=0))  # pads after the last token: never seen
        last = h[torch.arange(len(idx), device=idx.device), lengths - 1]
        return self.head(last)


# --------------------------------------------------------------------------- the speaker task


@dataclass
class SpeakerTask:
    """Inputs (PAD-padded ids), labels and the speeches of each split; the K speakers."""

    speakers: list
    x: dict  # split -> (N, block_size) long
    y: dict  # split -> (N,) long
    speeches: dict  # split -> list of helpers.shakespeare.Speech

    def majority_baseline(self, split: str = "test") -> float:
        """Accuracy of always answering the most frequent training speaker."""
        top = Counter(self.y["train"].tolist()).most_common(1)[0][0]
        return (self.y[split] == top).float().mean().item()


def speaker_task(text: str, tokenizer, block_size: int, k: int = 4, **split) -> SpeakerTask:
    """Which of the ``k`` most frequent speakers says a speech (its first ``block_size`` chars).

    Speeches are dealt into train / val / test by runs of consecutive speeches (``split`` goes to
    :func:`helpers.shakespeare.split_by_position`), then those of the ``k`` speakers kept.
    """
    from .shakespeare import speeches, split_by_position

    every = speeches(text)
    speakers = [name for name, _ in Counter(s.speaker for s in every).most_common(k)]
    label = {name: i for i, name in enumerate(speakers)}
    x, y, chosen = {}, {}, {}
    for name, part in split_by_position(every, **split).items():
        chosen[name] = [s for s in part if s.speaker in label]
        x[name] = pad_sequences([tokenizer.encode(s.body) for s in chosen[name]], block_size)
        y[name] = torch.tensor([label[s.speaker] for s in chosen[name]], dtype=torch.long)
    return SpeakerTask(speakers, x, y, chosen)


# --------------------------------------------------------------------------- strategies

STRATEGIES = {
    "scratch": "the same architecture from random weights, everything trained",
    "head": "pretrained body frozen, only the new head trained",
    "last_block": "the last block, the final LayerNorm and the head trained",
    "full": "every weight trained",
    "lora": "LoRA adapters on the attention and MLP layers, and the head, trained",
}
LORA_TARGETS = ("attn.qkv", "attn.proj", "mlp.fc", "mlp.proj")


def make_classifier(
    strategy: str,
    base: GPT,
    num_classes: int,
    *,
    r: int = 8,
    alpha: float = 16.0,
    targets=LORA_TARGETS,
) -> GPTClassifier:
    """A classifier on a copy of ``base`` (or a new GPT of its shape), frozen per ``strategy``."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy {strategy!r} is not one of {list(STRATEGIES)}.")
    device = next(base.parameters()).device
    gpt = GPT(base.config).to(device) if strategy == "scratch" else copy.deepcopy(base)
    model = GPTClassifier(gpt, num_classes).to(device)
    model.requires_grad_(True)
    if strategy == "head":
        freeze(model, "gpt")
    elif strategy == "last_block":
        freeze(model, "gpt")
        unfreeze(model, [f"gpt.blocks.{len(gpt.blocks) - 1}", "gpt.ln_f"])
    elif strategy == "lora":
        apply_lora(model, targets, r=r, alpha=alpha, train=["head"])
    return model


def train_classifier(
    strategy: str,
    base: GPT,
    x,
    y,
    *,
    lr: float,
    steps: int,
    batch_size: int = 32,
    seed: int = 0,
    weight_decay: float = 0.01,
    val=None,
    **lora,
) -> tuple[GPTClassifier, dict]:
    """Train one strategy: AdamW on the trainable parameters, warmup + cosine, clipping at 1.

    Every strategy gets the same ``steps`` of ``batch_size`` examples. ``val`` is an optional
    ``(x, y)`` pair evaluated at the end. Returns (model, history of :func:`helpers.train.fit`).
    """
    torch.manual_seed(seed)
    model = make_classifier(strategy, base, int(y.max()) + 1, **lora)
    optimizer = optim.make_optimizer(model, "adamw", lr, weight_decay=weight_decay)
    schedule = optim.make_schedule(optimizer, "cosine", steps, warmup=0.1, min_lr_ratio=0.1)
    loader = shuffled_loader(x, y, batch_size, seed)
    val_loader = TensorLoader(*val, batch_size=256) if val is not None else None
    history = fit(
        model,
        loader,
        optimizer,
        steps=steps,
        scheduler=schedule,
        grad_clip=1.0,
        val_loader=val_loader,
        progress=False,
    )
    return model, history


def saved_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save`` of the trainable tensors: the file a strategy must keep.

    The frozen rest is the base model, kept once for every task (:func:`helpers.lora.
    adapter_state_dict` lists the trainable tensors, adapters or not).
    """
    buffer = io.BytesIO()
    torch.save(adapter_state_dict(model), buffer)
    return buffer.getbuffer().nbytes
