"""The encoder-decoder transformer of the original paper, and a small translation task for it.

The task (chapter 04b): dates as people write them ("tuesday, march 3, 1998", "3.3.1998") to
ISO dates ("1998-03-03"). :func:`date_splits` gives train / validation / test examples with
disjoint *days*, so a test date was never seen in any format. The model: an encoder reads the
source with unmasked self-attention, a decoder writes the target with masked self-attention and
cross-attention to the encoder's output; post-LN (the paper) or pre-LN (``norm_first=True``),
with the sub-layers and names of ``nn.TransformerEncoderLayer`` / ``nn.TransformerDecoderLayer``.
"""

from __future__ import annotations

import calendar
import datetime
import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from .positions import sinusoidal

# --------------------------------------------------------------------------- the task

PAD, BOS, EOS = 0, 1, 2
SPECIALS = ("<pad>", "<bos>", "<eos>")
CHARS = " ,-./0123456789abcdefghijklmnopqrstuvwxyz"
TARGET_LENGTH = len("1998-03-03") + 1  # every target: ten characters, then <eos>
FIRST_DAY, LAST_DAY = datetime.date(1900, 1, 1), datetime.date(2099, 12, 31)

MONTHS = [m.lower() for m in calendar.month_name[1:]]
WEEKDAYS = [d.lower() for d in calendar.day_name]
FORMATS = {
    "month d, yyyy": lambda d: f"{MONTHS[d.month - 1]} {d.day}, {d.year}",
    "d month yyyy": lambda d: f"{d.day} {MONTHS[d.month - 1]} {d.year}",
    "mon d yyyy": lambda d: f"{MONTHS[d.month - 1][:3]} {d.day} {d.year}",
    "weekday, month d, yyyy": lambda d: (
        f"{WEEKDAYS[d.weekday()]}, {MONTHS[d.month - 1]} {d.day}, {d.year}"
    ),
    "mm/dd/yyyy": lambda d: f"{d.month:02d}/{d.day:02d}/{d.year}",  # US order: month first
    "d.m.yyyy": lambda d: f"{d.day}.{d.month}.{d.year}",  # European order: day first
}


def format_of(source: str) -> str:
    """The name in :data:`FORMATS` of the format ``source`` is written in."""
    matches = [name for name in FORMATS if _pattern(name).fullmatch(source)]
    if len(matches) != 1:
        raise ValueError(f"{source!r} is not written in exactly one of {list(FORMATS)}.")
    return matches[0]


def _pattern(name: str) -> re.Pattern:
    """A format name as a regular expression: yyyy, mm, dd, d, m, month, mon, weekday."""
    alternatives = {"month": MONTHS, "mon": [m[:3] for m in MONTHS], "weekday": WEEKDAYS}
    parts = {"yyyy": r"\d{4}", "mm": r"\d\d", "dd": r"\d\d", "d": r"\d{1,2}", "m": r"\d{1,2}"}
    parts |= {key: "(?:" + "|".join(words) + ")" for key, words in alternatives.items()}
    return re.compile(re.sub(r"[a-z]+", lambda m: parts[m.group()], re.escape(name)))


def encode(text: str) -> list[int]:
    """Character ids (after the three special tokens); other characters are an error."""
    unknown = sorted(set(text) - set(CHARS))
    if unknown:
        raise ValueError(f"{text!r} has characters outside the vocabulary: {unknown}.")
    return [len(SPECIALS) + CHARS.index(c) for c in text]


def decode(ids) -> str:
    """The characters of ``ids`` up to the first <eos>; <pad> and <bos> are skipped."""
    out = []
    for i in ids:
        i = int(i)
        if i == EOS:
            break
        if i >= len(SPECIALS):
            out.append(CHARS[i - len(SPECIALS)])
    return "".join(out)


VOCAB_SIZE = len(SPECIALS) + len(CHARS)


def date_splits(sizes=(20_000, 2_000, 2_000), seed: int = 0) -> dict[str, list[tuple[str, str]]]:
    """{"train", "val", "test"}: (source, target) pairs; each split has its own days.

    Days are drawn without replacement from 1900-2099 (73,049 days), each written in one format
    drawn uniformly from :data:`FORMATS`; the target is the ISO date.
    """
    n_days = (LAST_DAY - FIRST_DAY).days + 1
    if sum(sizes) > n_days:
        raise ValueError(f"at most {n_days} examples in all (one per day), asked for {sum(sizes)}.")
    g = torch.Generator().manual_seed(seed)
    days = torch.randperm(n_days, generator=g)[: sum(sizes)].tolist()
    formats = torch.randint(len(FORMATS), (sum(sizes),), generator=g).tolist()
    writers = list(FORMATS.values())
    pairs = []
    for day, fmt in zip(days, formats):
        date = FIRST_DAY + datetime.timedelta(days=day)
        pairs.append((writers[fmt](date), date.isoformat()))
    bounds = [0, sizes[0], sizes[0] + sizes[1], sum(sizes)]
    return {
        name: pairs[bounds[i] : bounds[i + 1]] for i, name in enumerate(("train", "val", "test"))
    }


def to_tensors(pairs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(source, decoder input, decoder target): sources padded with <pad> to the longest one.

    The decoder input is ``<bos> + target`` and the decoder target ``target + <eos>``, both
    :data:`TARGET_LENGTH` long (teacher forcing: position t reads the true characters before t).
    """
    width = max(len(src) for src, _ in pairs)
    source = torch.full((len(pairs), width), PAD)
    target = torch.empty(len(pairs), TARGET_LENGTH, dtype=torch.long)
    for row, (src, tgt) in enumerate(pairs):
        source[row, : len(src)] = torch.tensor(encode(src))
        target[row] = torch.tensor(encode(tgt) + [EOS])
    decoder_input = torch.cat([torch.full((len(pairs), 1), BOS), target[:, :-1]], dim=1)
    return source, decoder_input, target


# --------------------------------------------------------------------------- the model


class Attention(nn.Module):
    """Multi-head attention of ``x`` (B, T, C) to ``context`` (B, S, C; ``x`` itself if None).

    ``mask`` (boolean, broadcast to (B, heads, T, S)) is True where a query may attend. With
    ``need_weights`` the weights (B, heads, T, S) are computed explicitly and returned too.
    """

    def __init__(self, d_model: int, n_head: int, dropout: float = 0.0):
        super().__init__()
        if d_model % n_head:
            raise ValueError(f"d_model={d_model} must be divisible by n_head={n_head}.")
        self.n_head, self.dropout = n_head, dropout
        self.q, self.k, self.v, self.out = (nn.Linear(d_model, d_model) for _ in range(4))

    def forward(self, x, context=None, mask=None, need_weights: bool = False):
        context = x if context is None else context
        B, T, C = x.shape
        heads = (B, -1, self.n_head, C // self.n_head)
        q = self.q(x).view(heads).transpose(1, 2)
        k, v = (f(context).view(heads).transpose(1, 2) for f in (self.k, self.v))
        dropout = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = q @ k.transpose(-2, -1) / math.sqrt(C // self.n_head)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            weights = scores.softmax(dim=-1)
            y = F.dropout(weights, dropout, self.training) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        y = self.out(y.transpose(1, 2).reshape(B, T, C))
        return (y, weights) if need_weights else y


class FeedForward(nn.Sequential):
    """Linear(C, d_ff), ReLU, dropout, Linear(d_ff, C): the paper's position-wise network."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0):
        super().__init__(
            nn.Linear(d_model, d_ff), nn.ReLU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model)
        )


class EncoderLayer(nn.Module):
    """Self-attention (no causal mask) and a feed-forward network, each with a residual.

    post-LN (``norm_first=False``, the paper): x = LN(x + sublayer(x)).
    pre-LN (``norm_first=True``, GPT-2 and most models since): x = x + sublayer(LN(x)).
    """

    def __init__(self, d_model, n_head, d_ff, dropout=0.0, norm_first=False):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = Attention(d_model, n_head, dropout)
        self.ff = FeedForward(d_model, d_ff, dropout)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.drop1, self.drop2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, x, mask=None):
        if self.norm_first:
            x = x + self.drop1(self.self_attn(self.norm1(x), mask=mask))
            return x + self.drop2(self.ff(self.norm2(x)))
        x = self.norm1(x + self.drop1(self.self_attn(x, mask=mask)))
        return self.norm2(x + self.drop2(self.ff(x)))


class DecoderLayer(nn.Module):
    """Masked self-attention, cross-attention to the encoder's output, feed-forward network.

    Queries of the cross-attention come from the decoder, keys and values from ``memory``.
    """

    def __init__(self, d_model, n_head, d_ff, dropout=0.0, norm_first=False):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = Attention(d_model, n_head, dropout)
        self.cross_attn = Attention(d_model, n_head, dropout)
        self.ff = FeedForward(d_model, d_ff, dropout)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(d_model) for _ in range(3))
        self.drop1, self.drop2, self.drop3 = (nn.Dropout(dropout) for _ in range(3))

    def forward(self, x, memory, self_mask=None, memory_mask=None):
        def attend(h):
            return self.cross_attn(h, memory, mask=memory_mask)

        sublayers = [
            (lambda h: self.self_attn(h, mask=self_mask), self.norm1, self.drop1),
            (attend, self.norm2, self.drop2),
            (self.ff, self.norm3, self.drop3),
        ]
        for sublayer, norm, drop in sublayers:
            if self.norm_first:
                x = x + drop(sublayer(norm(x)))
            else:
                x = norm(x + drop(sublayer(x)))
        return x


class Seq2SeqTransformer(nn.Module):
    """Encoder-decoder transformer: shared, tied embeddings; sinusoidal positions; greedy decoding.

    ``forward(source, decoder_input)`` gives next-character logits (B, T, vocab) for teacher
    forcing; :meth:`greedy` writes an output one character at a time.
    """

    def __init__(
        self,
        vocab_size: int = VOCAB_SIZE,
        d_model: int = 128,
        n_head: int = 4,
        n_layer: int = 2,
        d_ff: int = 512,
        dropout: float = 0.1,
        norm_first: bool = False,
        max_len: int = 64,
    ):
        super().__init__()
        self.d_model = d_model
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=PAD)
        self.register_buffer("positions", sinusoidal(max_len, d_model), persistent=False)
        self.drop = nn.Dropout(dropout)
        args = (d_model, n_head, d_ff, dropout, norm_first)
        self.encoder = nn.ModuleList(EncoderLayer(*args) for _ in range(n_layer))
        self.decoder = nn.ModuleList(DecoderLayer(*args) for _ in range(n_layer))
        # pre-LN leaves the residual stream unnormalised: one LayerNorm after each stack
        self.encoder_norm = nn.LayerNorm(d_model) if norm_first else nn.Identity()
        self.decoder_norm = nn.LayerNorm(d_model) if norm_first else nn.Identity()
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        self.head.weight = self.embed.weight  # tied: one matrix reads and writes characters
        # std d^-1/2, so that embed * sqrt(d) has unit scale, like the positions (nn.Embedding's
        # default std 1 would give vectors of scale sqrt(d) that drown the positions)
        nn.init.normal_(self.embed.weight, std=d_model**-0.5)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def embed_positions(self, ids):
        if ids.shape[1] > len(self.positions):
            raise ValueError(
                f"{ids.shape[1]} positions exceed max_len={len(self.positions)}; "
                "build the model with a larger max_len."
            )
        return self.drop(self.embed(ids) * math.sqrt(self.d_model) + self.positions[: ids.shape[1]])

    def encode(self, source):
        """The encoder's output (B, S, C) and the padding mask (B, 1, 1, S) of the source."""
        keep = (source != PAD)[:, None, None, :]  # no query attends to padding
        x = self.embed_positions(source)
        for layer in self.encoder:
            x = layer(x, mask=keep)
        return self.encoder_norm(x), keep

    def decode(self, decoder_input, memory, memory_mask):
        """Logits (B, T, vocab) for each decoder position, given the encoded source."""
        T = decoder_input.shape[1]
        causal = torch.ones(T, T, dtype=torch.bool, device=decoder_input.device).tril()
        x = self.embed_positions(decoder_input)
        for layer in self.decoder:
            x = layer(x, memory, self_mask=causal, memory_mask=memory_mask)
        return self.head(self.decoder_norm(x))

    def forward(self, source, decoder_input):
        memory, keep = self.encode(source)
        return self.decode(decoder_input, memory, keep)

    @torch.inference_mode()
    def greedy(self, source, max_new_tokens: int = TARGET_LENGTH) -> torch.Tensor:
        """Ids (B, <= max_new_tokens) written by always taking the most likely next character.

        The source is encoded once; each step runs the decoder on everything written so far
        and stops early when every row has written <eos>.
        """
        was_training = self.training
        self.eval()
        memory, keep = self.encode(source)
        out = torch.full((len(source), 1), BOS, device=source.device)
        done = torch.zeros(len(source), dtype=torch.bool, device=source.device)
        for _ in range(max_new_tokens):
            next_id = self.decode(out, memory, keep)[:, -1].argmax(-1)
            out = torch.cat([out, next_id.unsqueeze(1)], dim=1)
            done |= next_id == EOS
            if done.all():
                break
        self.train(was_training)
        return out[:, 1:]


def exact_match(
    model: Seq2SeqTransformer, pairs, batch_size: int = 500, device=None
) -> torch.Tensor:
    """One bool per pair: did greedy decoding write exactly the target string?"""
    device = device or next(model.parameters()).device
    hits = []
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i : i + batch_size]
        source = to_tensors(chunk)[0].to(device)
        written = model.greedy(source).cpu()
        hits += [decode(row) == tgt for row, (_, tgt) in zip(written, chunk)]
    return torch.tensor(hits)


def torch_layer_pairs(ours: nn.Module, theirs: nn.Module) -> list:
    """(our tensor, the matching one) for ``nn.TransformerEncoderLayer`` or ``DecoderLayer``.

    PyTorch stacks W_Q, W_K, W_V in one ``in_proj_weight`` (rows: Q, then K, then V); slices are
    views, so ``theirs_tensor.copy_(our_tensor)`` copies in place.
    """
    decoder = hasattr(ours, "cross_attn")  # any module with these names: ours, or a notebook's
    attentions = [(ours.self_attn, theirs.self_attn)]
    if decoder:
        attentions.append((ours.cross_attn, theirs.multihead_attn))
    pairs = []
    for mine, torch_attn in attentions:
        stacked_w = torch_attn.in_proj_weight.chunk(3)
        stacked_b = torch_attn.in_proj_bias.chunk(3)
        for i, proj in enumerate((mine.q, mine.k, mine.v)):
            pairs += [(proj.weight, stacked_w[i]), (proj.bias, stacked_b[i])]
        out = torch_attn.out_proj
        pairs += [(mine.out.weight, out.weight), (mine.out.bias, out.bias)]
    norms = ["norm1", "norm2"] + (["norm3"] if decoder else [])
    modules = [(ours.ff[0], theirs.linear1), (ours.ff[3], theirs.linear2)]
    modules += [(getattr(ours, n), getattr(theirs, n)) for n in norms]
    for mine, other in modules:
        pairs += [(mine.weight, other.weight), (mine.bias, other.bias)]
    return pairs
