"""A small GPT: causal self-attention, the transformer block, the model, and sampling.

Chapter 04 builds every piece from the formulas and checks it against PyTorch's own modules;
later chapters load the trained model with :func:`load_gpt`. The attention uses
``F.scaled_dot_product_attention`` (fused kernels); ``generate`` samples with temperature and
top-k, optionally with a KV cache that gives the same tokens as recomputing everything.
The tokenizer lives in :mod:`helpers.tokenizer`, the training recipe in :mod:`helpers.recipes`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import Config
from .positions import POSITIONS, alibi_bias, apply_rope, rope_angles
from .tokenizer import CharTokenizer

# --------------------------------------------------------------------------- model


@dataclass
class GPTConfig(Config):
    """The shape of a GPT; ``to_dict``/``from_dict`` round-trip it through a checkpoint."""

    vocab_size: int
    block_size: int = 128  # the longest context (learned positions exist for 0..block_size-1)
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True
    gelu_approximate: str = "none"  # "tanh": GPT-2's approximation (nn.GELU's `approximate`)
    position: str = "learned"  # or "rope", "alibi": see helpers.positions

    def __post_init__(self):
        if self.position not in POSITIONS:
            raise ValueError(f"position should be one of {POSITIONS}, got {self.position!r}.")
        if self.gelu_approximate not in ("none", "tanh"):
            raise ValueError(
                f"gelu_approximate should be 'none' (exact GELU) or 'tanh' (GPT-2's), "
                f"got {self.gelu_approximate!r}."
            )
        if self.n_embd % self.n_head:
            raise ValueError(
                f"n_embd={self.n_embd} must be divisible by n_head={self.n_head} "
                "(each head gets n_embd // n_head dimensions)."
            )
        if min(self.vocab_size, self.block_size, self.n_layer, self.n_head) < 1:
            raise ValueError(f"every size in {self} must be at least 1.")


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
    ``in_proj_weight``: rows for Q, then K, then V); ``proj`` is W_O. ``position="rope"``
    rotates Q and K by their positions, ``"alibi"`` adds a distance penalty to the scores;
    ``"learned"`` does neither (the GPT adds position vectors to its input instead).
    """

    def __init__(
        self,
        n_embd: int,
        n_head: int,
        dropout: float = 0.0,
        bias: bool = True,
        position: str = "learned",
    ):
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"n_embd={n_embd} must be divisible by n_head={n_head}.")
        self.n_head, self.dropout, self.position = n_head, dropout, position
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, cache: LayerCache | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        # (B, T, C) -> (B, heads, T, head_dim): every head attends on its own slice of C
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        past = 0 if cache is None or cache.k is None else cache.k.shape[2]
        if self.position == "rope":  # rotate before caching: a cached key keeps its angle
            cos, sin = rope_angles(torch.arange(past, past + T, device=x.device), C // self.n_head)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.extend(k, v)  # the new tokens attend to everything cached before them
        mask = None
        if self.position == "alibi":  # the causal mask is part of the bias (-inf after i)
            mask = alibi_bias(self.n_head, T, T + past, x.device).to(q.dtype)
        elif past and T > 1:  # new queries sit at positions past..past+T-1: a shifted triangle
            mask = torch.ones(T, T + past, dtype=torch.bool, device=x.device).tril(diagonal=past)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            # bool(): under torch.export T is symbolic and the comparison a SymBool, which the
            # fused kernel cannot take; bool() decides it once and records the guard T > 1
            is_causal=bool(mask is None and past == 0 and T > 1),
            dropout_p=self.dropout if self.training else 0.0,
        )
        y = y.transpose(1, 2).reshape(B, T, C)  # concatenate the heads
        return self.resid_dropout(self.proj(y))


class MLP(nn.Module):
    """Position-wise feed-forward network: Linear(C, 4C), GELU, Linear(4C, C), dropout.

    ``gelu_approximate="tanh"`` is GPT-2's tanh approximation of the GELU.
    """

    def __init__(
        self, n_embd: int, dropout: float = 0.0, bias: bool = True, gelu_approximate: str = "none"
    ):
        super().__init__()
        self.fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.gelu = nn.GELU(approximate=gelu_approximate)
        self.proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(self.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(
        self,
        n_embd: int,
        n_head: int,
        dropout: float = 0.0,
        bias: bool = True,
        gelu_approximate: str = "none",
        position: str = "learned",
    ):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, bias, position)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = MLP(n_embd, dropout, bias, gelu_approximate)

    def forward(self, x: torch.Tensor, cache: LayerCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Decoder-only transformer: token (+ learned position) embeddings, blocks, LayerNorm, head.

    With ``config.position`` "rope" or "alibi" there is no position table: the attention layers
    see positions themselves, and the model accepts sequences longer than ``block_size``.

    The output head shares its weight with the token embedding (tied embeddings). Weights start
    GPT-2 style: normal(0, 0.02), zero biases, and the two projections that write into the
    residual stream (``attn.proj``, ``mlp.proj``) scaled down by sqrt(2 * n_layer).
    """

    def __init__(self, config: GPTConfig | dict):
        super().__init__()
        config = GPTConfig.from_dict(config) if isinstance(config, dict) else config
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        learned = config.position == "learned"
        self.pos_emb = nn.Embedding(config.block_size, config.n_embd) if learned else None
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            Block(
                config.n_embd,
                config.n_head,
                config.dropout,
                config.bias,
                config.gelu_approximate,
                config.position,
            )
            for _ in range(config.n_layer)
        )
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight  # tied: one matrix reads and writes tokens
        init_gpt_weights(self)

    def num_parameters(self) -> int:
        """Parameters counted once (the tied matrix is one tensor)."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Logits (B, T, vocab) for ids (B, T); with a cache, ``idx`` holds only the new tokens."""
        return self.head(self.hidden(idx, cache))

    def hidden(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """The final hidden states (B, T, C): after ``ln_f``, before the vocabulary head."""
        B, T = idx.shape
        start = len(cache) if cache is not None else 0
        if self.pos_emb is not None and start + T > self.config.block_size:
            raise ValueError(
                f"{start + T} positions do not fit the context of {self.config.block_size}; "
                "crop the input to its last block_size tokens (generate() does)."
            )
        x = self.tok_emb(idx)
        if self.pos_emb is not None:
            x = x + self.pos_emb(torch.arange(start, start + T, device=idx.device))
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, cache.layers[i] if cache is not None else None)
        return self.ln_f(x)

    @torch.inference_mode()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Append ``max_new_tokens`` sampled tokens to ``idx`` (B, T) and return the whole sequence.

        ``temperature`` divides the logits (0 means greedy: always the most likely token);
        ``top_k`` keeps only the k most likely tokens. With ``use_cache`` the keys and values of
        earlier positions are kept, so each step computes one new position. That is exact while
        the sequence fits in ``block_size``; beyond it the window slides, every position moves,
        and each step recomputes the last ``block_size`` tokens, with or without cache.
        """
        steps = self.stream(idx, max_new_tokens, temperature, top_k, use_cache, generator)
        return torch.cat([idx, *steps], dim=1)

    @torch.inference_mode()
    def stream(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
    ) -> Iterator[torch.Tensor]:
        """:meth:`generate` one step at a time: yields each new token's ids, shape (B, 1).

        The caller may stop early (a client that went away); the model is in eval mode while
        it runs and back in its former mode when the loop ends or is closed.
        """
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}.")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be a positive integer or None, got {top_k}.")
        was_training = self.training
        self.eval()
        block = self.config.block_size
        cache = KVCache(self.config.n_layer) if use_cache else None
        try:
            for _ in range(max_new_tokens):
                if cache is not None and idx.shape[1] <= block:
                    logits = self(idx[:, len(cache) :], cache)  # only the positions not yet cached
                else:
                    logits = self(idx[:, -block:])
                idx_next = sample_next(logits[:, -1, :], temperature, top_k, generator)
                # past the context only the last block is read: keep block + 1 (still > block)
                idx = torch.cat([idx, idx_next], dim=1)[:, -(block + 1) :]
                yield idx_next
        finally:
            self.train(was_training)


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One token id per row of ``logits`` (B, vocab): softmax(logits / temperature), top k."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    # shift so the largest logit is 0 and keep it 0: the same softmax, and a tiny temperature
    # (1e-40, or 5e-324, which is 0 in float32) gives 0 and -inf (the argmax), never NaN
    shifted = logits.float() - logits.float().amax(dim=-1, keepdim=True)
    logits = torch.where(shifted == 0, shifted, shifted / temperature)
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


# --------------------------------------------------------------------------- checkpoints


def load_gpt(path, device="cpu") -> tuple[GPT, CharTokenizer, dict]:
    """A GPT saved by chapter 04, in eval mode, its tokenizer, and the whole checkpoint."""
    from .checkpoint import load_checkpoint

    state = load_checkpoint(path, map_location=device)
    if "tokenizer" not in state or not state.get("config"):
        raise ValueError(
            f"{path} holds no GPT config and tokenizer; it was not written by chapter 04. "
            "Run notebooks/04_transformer_from_scratch.ipynb to create it."
        )
    model = GPT(GPTConfig.from_dict(state["config"])).to(device)
    model.load_state_dict(state["model"])
    return model.eval(), CharTokenizer(state["tokenizer"]), state
