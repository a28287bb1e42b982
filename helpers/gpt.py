"""A small GPT for characters: tokenizer, causal self-attention, the block, the model, its recipe.

Chapter 04 builds every piece from the formulas and checks it against PyTorch's own modules;
chapter 05 loads the trained model with :func:`load_gpt`. The attention uses
``F.scaled_dot_product_attention`` (fused kernels); ``generate`` samples with temperature and
top-k, optionally with a KV cache that gives the same tokens as recomputing everything.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

# --------------------------------------------------------------------------- tokenizer


class CharTokenizer:
    """One token per character: ``encode`` maps text to ids, ``decode`` maps ids back."""

    def __init__(self, chars):
        chars = "".join(chars)
        if not chars or len(set(chars)) != len(chars):
            raise ValueError("CharTokenizer needs a non-empty string of distinct characters; "
                             "use CharTokenizer.from_text(text) to build one from a text.")
        self.chars = chars
        self.stoi = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        """The vocabulary is every character of ``text``, sorted."""
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[c] for c in text]
        except KeyError:
            unknown = sorted(set(text) - self.stoi.keys())
            raise ValueError(
                f"characters {unknown} are not in this tokenizer's vocabulary of {self.vocab_size} "
                "characters; remove them from the text, or build the tokenizer from a text that "
                "contains them (CharTokenizer.from_text)."
            ) from None

    def decode(self, ids) -> str:
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        if any(not 0 <= i < self.vocab_size for i in ids):
            bad = sorted({i for i in ids if not 0 <= i < self.vocab_size})
            raise ValueError(f"ids {bad[:10]} are outside the vocabulary (0 to {self.vocab_size - 1}).")
        return "".join(self.chars[i] for i in ids)

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


# --------------------------------------------------------------------------- model


@dataclass
class GPTConfig:
    """The shape of a GPT; ``to_dict``/``from_dict`` round-trip it through a checkpoint."""

    vocab_size: int
    block_size: int = 128  # the longest context (learned positions exist for 0..block_size-1)
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True

    def __post_init__(self):
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head} "
                             "(each head gets n_embd // n_head dimensions).")
        if min(self.vocab_size, self.block_size, self.n_layer, self.n_head) < 1:
            raise ValueError(f"every size in {self} must be at least 1.")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, config: dict) -> "GPTConfig":
        unknown = set(config) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown GPTConfig keys {sorted(unknown)}; "
                             f"known: {[f.name for f in fields(cls)]}.")
        return cls(**config)


class LayerCache:
    """The keys and values one attention layer has seen so far, shaped (B, heads, T, head_dim)."""

    def __init__(self):
        self.k = self.v = None

    def extend(self, k: torch.Tensor, v: torch.Tensor):
        if self.k is not None:
            k, v = torch.cat([self.k, k], dim=2), torch.cat([self.v, v], dim=2)
        self.k, self.v = k, v
        return k, v


class KVCache:
    """One :class:`LayerCache` per block; ``len(cache)`` is the number of positions cached."""

    def __init__(self, n_layer: int):
        self.layers = [LayerCache() for _ in range(n_layer)]

    def __len__(self) -> int:
        first = self.layers[0].k
        return 0 if first is None else first.shape[2]


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position t sees positions 0..t only.

    One linear layer computes Q, K and V together (the layout of ``nn.MultiheadAttention``'s
    ``in_proj_weight``: rows for Q, then K, then V); ``proj`` is W_O.
    """

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"n_embd={n_embd} must be divisible by n_head={n_head}.")
        self.n_head, self.dropout = n_head, dropout
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, cache: LayerCache | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        # (B, T, C) -> (B, heads, T, head_dim): every head attends on its own slice of C
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if cache is not None:
            k, v = cache.extend(k, v)  # the new tokens attend to everything cached before them
        past = k.shape[2] - T
        mask = None
        if past and T > 1:  # new queries sit at positions past..past+T-1: a shifted triangle
            mask = torch.ones(T, T + past, dtype=torch.bool, device=x.device).tril(diagonal=past)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=(past == 0 and T > 1),
            dropout_p=self.dropout if self.training else 0.0,
        )
        y = y.transpose(1, 2).reshape(B, T, C)  # concatenate the heads
        return self.resid_dropout(self.proj(y))


class MLP(nn.Module):
    """Position-wise feed-forward network: Linear(C, 4C), GELU, Linear(4C, C), dropout."""

    def __init__(self, n_embd: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        self.fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.gelu = nn.GELU()
        self.proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(self.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, bias)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = MLP(n_embd, dropout, bias)

    def forward(self, x: torch.Tensor, cache: LayerCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Decoder-only transformer: token + learned position embeddings, blocks, LayerNorm, head.

    The output head shares its weight with the token embedding (tied embeddings). Weights start
    GPT-2 style: normal(0, 0.02), zero biases, and the two projections that write into the
    residual stream (``attn.proj``, ``mlp.proj``) scaled down by sqrt(2 * n_layer).
    """

    def __init__(self, config: GPTConfig | dict):
        super().__init__()
        config = GPTConfig.from_dict(config) if isinstance(config, dict) else config
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            Block(config.n_embd, config.n_head, config.dropout, config.bias) for _ in range(config.n_layer)
        )
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight  # tied: one matrix reads and writes tokens
        init_gpt_weights(self)

    def num_parameters(self) -> int:
        """Parameters counted once (the tied matrix is one tensor)."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Logits (B, T, vocab) for token ids (B, T). With a cache, ``idx`` holds only the new tokens."""
        B, T = idx.shape
        start = len(cache) if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"{start + T} positions do not fit the context of {self.config.block_size}; "
                             "crop the input to its last block_size tokens (generate() does).")
        pos = torch.arange(start, start + T, device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))
        for i, block in enumerate(self.blocks):
            x = block(x, cache.layers[i] if cache is not None else None)
        return self.head(self.ln_f(x))

    @torch.inference_mode()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, use_cache: bool = True,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Append ``max_new_tokens`` sampled tokens to ``idx`` (B, T) and return the whole sequence.

        ``temperature`` divides the logits (0 means greedy: always the most likely token);
        ``top_k`` keeps only the k most likely tokens. With ``use_cache`` the keys and values of
        earlier positions are kept, so each step computes one new position. That is exact while
        the sequence fits in ``block_size``; beyond it the window slides, every position moves,
        and each step recomputes the last ``block_size`` tokens, with or without cache.
        """
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}.")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be a positive integer or None, got {top_k}.")
        was_training = self.training
        self.eval()
        block = self.config.block_size
        cache = KVCache(self.config.n_layer) if use_cache else None
        for _ in range(max_new_tokens):
            if cache is not None and idx.shape[1] <= block:
                logits = self(idx[:, len(cache):], cache)  # only the positions not yet cached
            else:
                logits = self(idx[:, -block:])
            idx_next = sample_next(logits[:, -1, :], temperature, top_k, generator)
            idx = torch.cat([idx, idx_next], dim=1)
        self.train(was_training)
        return idx


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """One token id per row of ``logits`` (B, vocab): softmax(logits / temperature) over the top k."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)


def init_gpt_weights(model: GPT) -> None:
    """GPT-2 initialisation (see :class:`GPT`)."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    residual_std = 0.02 / math.sqrt(2 * model.config.n_layer)
    for block in model.blocks:
        nn.init.normal_(block.attn.proj.weight, mean=0.0, std=residual_std)
        nn.init.normal_(block.mlp.proj.weight, mean=0.0, std=residual_std)


# --------------------------------------------------------------------------- training recipe


def random_windows(data: torch.Tensor, block_size: int, batch_size: int,
                   generator: torch.Generator | None = None):
    """Endless batches ``(x, y)`` of random windows from a 1-D token tensor; y is x shifted by one."""
    if len(data) <= block_size:
        raise ValueError(f"the data ({len(data)} tokens) must be longer than block_size={block_size}.")
    windows = data.unfold(0, block_size + 1, 1)  # a view: every window of block_size + 1 tokens
    while True:
        starts = torch.randint(len(windows), (batch_size,), generator=generator).to(data.device)
        chunk = windows[starts]
        yield chunk[:, :-1], chunk[:, 1:]


def split_windows(data: torch.Tensor, block_size: int, every: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-overlapping windows ``(x, y)`` covering a whole 1-D token tensor (every ``every``-th one kept).

    Evaluating on all of them scores every token of a validation text once, each with the context
    it has inside its window, like training windows do on average.
    """
    n = (len(data) - 1) // block_size
    if n < 1:
        raise ValueError(f"the data ({len(data)} tokens) must be longer than block_size={block_size}.")
    x = data[:n * block_size].view(n, block_size)[::every]
    y = data[1:n * block_size + 1].view(n, block_size)[::every]
    return x, y


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on matrices (2-D and up), none on biases and LayerNorm gains."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                  min_lr_ratio: float = 0.1) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup from 0 to the base learning rate, then a cosine down to ``min_lr_ratio`` of it."""
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(f"need 0 <= warmup_steps < total_steps, got {warmup_steps} and {total_steps}.")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# The chapter's two recipes. "cpu": what 5 minutes on 2 CPU cores can do (also used on MPS);
# "gpu": nanoGPT's Shakespeare-character recipe (config/train_shakespeare_char.py).
RECIPES = {
    "cpu": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0, batch_size=64,
                lr=3e-3, min_lr_ratio=0.1, warmup_steps=100, steps=1000, weight_decay=0.1,
                betas=(0.9, 0.99), grad_clip=1.0),
    "gpu": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, dropout=0.2, batch_size=64,
                lr=1e-3, min_lr_ratio=0.1, warmup_steps=100, steps=5000, weight_decay=0.1,
                betas=(0.9, 0.99), grad_clip=1.0, bias=False),
}


def recipe_for(device: torch.device) -> dict:
    """A copy of the recipe for ``device``: "gpu" on CUDA, "cpu" elsewhere (CPU, Apple MPS)."""
    name = "gpu" if torch.device(device).type == "cuda" else "cpu"
    return {"name": name, **RECIPES[name]}


def model_config(recipe: dict, vocab_size: int) -> GPTConfig:
    """The :class:`GPTConfig` part of a recipe."""
    keys = {f.name for f in fields(GPTConfig)} - {"vocab_size"}
    return GPTConfig(vocab_size=vocab_size, **{k: v for k, v in recipe.items() if k in keys})


def make_optimizer(model: nn.Module, recipe: dict, total_steps: int | None = None):
    """AdamW (fused on CUDA) with decay on matrices only, and the warmup + cosine schedule."""
    fused = {"fused": True} if next(model.parameters()).device.type == "cuda" else {}
    optimizer = torch.optim.AdamW(param_groups(model, recipe["weight_decay"]), lr=recipe["lr"],
                                  betas=recipe["betas"], **fused)
    total = total_steps or recipe["steps"]
    scheduler = warmup_cosine(optimizer, min(recipe["warmup_steps"], total // 10), total, recipe["min_lr_ratio"])
    return optimizer, scheduler


# --------------------------------------------------------------------------- checkpoints


def load_gpt(path, device="cpu") -> tuple[GPT, CharTokenizer, dict]:
    """A GPT saved by chapter 04 (weights, config, tokenizer), in eval mode; also the whole checkpoint."""
    from .checkpoint import load_checkpoint

    state = load_checkpoint(path, map_location=device)
    if "tokenizer" not in state or not state.get("config"):
        raise ValueError(f"{path} holds no GPT config and tokenizer; it was not written by chapter 04. "
                         "Run notebooks/04_transformer_from_scratch.ipynb to create it.")
    model = GPT(GPTConfig.from_dict(state["config"])).to(device)
    model.load_state_dict(state["model"])
    return model.eval(), CharTokenizer(state["tokenizer"]), state
