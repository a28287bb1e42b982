"""A GPT as a classifier (chapter 06): a new head on the last real token's hidden state.

- :func:`pad_sequences`: variable-length id lists to one tensor, right-padded with :data:`PAD`
  (``-1``, not a token) and truncated to the context;
- :class:`GPTClassifier`: a GPT body and a linear head read at each sequence's last real token.
  Under the causal mask that token is the only one that has seen the whole input, and padding to
  its right cannot change it;
- :func:`speaker_task` and :func:`shuffled_task`: windows of the speeches of chosen speakers,
  split by runs of consecutive speeches; who says it, or is it real or word-shuffled;
  :func:`lm_loss_per_example`: the language model's own score, for a zero-shot baseline;
- :data:`STRATEGIES` and :func:`train_classifier`: the same budget for a random-init model, the
  head only, the last block + head, every weight, or LoRA adapters + head;
  :func:`saved_bytes`: the size on disk of what a strategy must save.
"""

from __future__ import annotations

import copy
import io
import random
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


# --------------------------------------------------------------------------- the tasks


@dataclass
class WindowTask:
    """Inputs (PAD-padded ids), labels and texts of each split, and the class names."""

    classes: list
    x: dict  # split -> (N, block_size) long
    y: dict  # split -> (N,) long
    texts: dict  # split -> list of the windows' texts

    def majority_baseline(self, split: str = "test") -> float:
        """Accuracy of always answering the most frequent training class."""
        top = Counter(self.y["train"].tolist()).most_common(1)[0][0]
        return (self.y[split] == top).float().mean().item()


def speech_windows(speeches, width: int) -> list[tuple[str, object]]:
    """``(window, speech)``: each speech's words cut into consecutive ``width``-character
    windows; a last piece shorter than ``width // 2`` is dropped (too little to go on)."""
    out = []
    for speech in speeches:
        body = speech.body
        for i in range(0, len(body), width):
            if len(body[i : i + width]) >= width // 2:
                out.append((body[i : i + width], speech))
    return out


def shuffle_words(window: str, rng: random.Random) -> str:
    """The window's words (split at spaces, line breaks kept inside words) in another order."""
    words = window.split(" ")
    for _ in range(20):
        shuffled = rng.sample(words, len(words))
        if shuffled != words:
            return " ".join(shuffled)
    raise ValueError(f"cannot shuffle {window!r}: it needs two different words.")


def _window_task(text, tokenizer, speakers, width, run, pattern, label) -> WindowTask:
    from .shakespeare import speeches, split_by_position

    chosen = [s for s in speeches(text) if s.speaker in set(speakers)]
    missing = set(speakers) - {s.speaker for s in chosen}
    if missing:
        raise ValueError(f"no speeches by {sorted(missing)} in this text.")
    x, y, texts = {}, {}, {}
    for name, part in split_by_position(chosen, run=run, pattern=pattern).items():
        examples = label(speech_windows(part, width), name)
        texts[name] = [window for window, _ in examples]
        x[name] = pad_sequences([tokenizer.encode(w) for w in texts[name]], width)
        y[name] = torch.tensor([c for _, c in examples], dtype=torch.long)
    return x, y, texts


def speaker_task(
    text: str, tokenizer, speakers, width: int = 64, run: int = 10, pattern=(5, 1, 4)
) -> WindowTask:
    """Who says a ``width``-character window of a speech, among ``speakers``?

    The speakers' speeches (in text order) are cut into runs of ``run`` consecutive speeches and
    the runs dealt out by ``pattern`` to train / val / test
    (:func:`helpers.shakespeare.split_by_position`): every window of a speech, and every speech of
    one exchange, lands in one split.
    """
    index = {name: i for i, name in enumerate(speakers)}

    def label(windows, split):
        return [(w, index[s.speaker]) for w, s in windows]

    x, y, texts = _window_task(text, tokenizer, speakers, width, run, pattern, label)
    return WindowTask(list(speakers), x, y, texts)


def shuffled_task(
    text: str, tokenizer, speakers, width: int = 64, run: int = 10, pattern=(5, 1, 4), seed=0
) -> WindowTask:
    """Real or word-shuffled? Every window of :func:`speaker_task` twice: as written (class 1)
    and with its words in a random order (class 0), both in the window's split.

    The two versions have the same characters and words: only knowing how English (and
    Shakespeare) orders words tells them apart.
    """
    rng = random.Random(seed)

    def label(windows, split):
        return [e for w, _ in windows for e in ((shuffle_words(w, rng), 0), (w, 1))]

    x, y, texts = _window_task(text, tokenizer, speakers, width, run, pattern, label)
    return WindowTask(["shuffled", "real"], x, y, texts)


@torch.inference_mode()
def lm_loss_per_example(model: GPT, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """(N,) mean next-token loss over each PAD-padded sequence's real tokens: a zero-shot score."""
    device = next(model.parameters()).device
    out = []
    for xb in x.split(batch_size):
        xb = xb.to(device)
        targets = torch.where(xb[:, 1:] == PAD, -100, xb[:, 1:])
        logits = model(xb.clamp(min=0)[:, :-1]).float()
        loss = nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        out.append((loss.sum(1) / (targets != -100).sum(1)).cpu())
    return torch.cat(out)


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
