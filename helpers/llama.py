"""A modern decoder-only LLM from scratch (Llama 3, SmolLM2, Qwen3), and Hugging Face weights.

The 2019 GPT of :mod:`helpers.gpt` has grown up in four places, each a small module here:

- :class:`RMSNorm` instead of LayerNorm: no mean to subtract, no bias, ``x / rms(x) * weight``
  (computed in float32 and cast back, as Hugging Face does);
- :class:`SwiGLU` instead of the GELU MLP: ``down(silu(gate(x)) * up(x))``, three matrices,
  so its width is about 8/3 of the model's instead of 4x (see :func:`default_hidden`);
- rotary position embeddings (RoPE, :mod:`helpers.positions`) instead of a learned table:
  :func:`rope_frequencies` gives the frequencies (with Llama 3's long-context scaling when
  ``rope_scaling`` is set), :func:`rope_cos_sin` the angles of each position;
- :class:`GroupedQueryAttention`: ``n_kv_head`` key/value heads shared by ``n_head`` query
  heads, which shrinks the KV cache (:func:`kv_cache_bytes_per_token`); Qwen3 adds an RMSNorm
  on every query and key head (``qk_norm``).

:class:`Block` and :class:`Llama` put them together under Hugging Face's names, so a
checkpoint's state dict maps 1:1. ``LlamaConfig``'s ``norm``, ``mlp`` and ``position``
switches put the 2019 parts back one at a time, for experiments; :func:`gelu_hidden` gives a
GELU MLP the same parameter count as a SwiGLU one.

Pretrained weights: :func:`model_files` finds (or downloads) a Hugging Face folder,
:func:`config_from_hf` and :func:`state_from_hf` translate its ``config.json`` and tensors, and
:func:`load_pretrained` builds the model, reading the safetensors with
:func:`helpers.gpt2.read_safetensors`. The KV cache, generation and sampling are
:mod:`helpers.gpt`'s.

Public names: LlamaConfig, default_hidden, gelu_hidden, kv_cache_bytes_per_token,
rope_frequencies, rope_cos_sin, RMSNorm, make_norm, SwiGLU, GeluMLP, GroupedQueryAttention, Block,
Llama, init_llama_weights, config_from_hf, state_from_hf, model_files, load_pretrained.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .config import Config
from .gpt import GPT, KVCache, LayerCache
from .positions import apply_rope, rope_rotation

NORMS, MLPS, POSITIONS = ("rms", "layer"), ("swiglu", "gelu"), ("rope", "learned")
LLAMA3_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")

# --------------------------------------------------------------------------- configuration


@dataclass
class LlamaConfig(Config):
    """The shape of a :class:`Llama`; ``to_dict``/``from_dict`` round-trip it.

    ``head_dim=None`` means ``n_embd // n_head``; ``hidden=None`` means :func:`default_hidden`.
    ``rope_scaling`` is ``None`` or Llama 3's ``{"rope_type": "llama3", "factor": ...,
    "low_freq_factor": ..., "high_freq_factor": ..., "original_max_position_embeddings": ...}``.
    """

    vocab_size: int
    block_size: int = 256  # the longest context (generate() keeps the last block_size tokens)
    n_layer: int = 4
    n_head: int = 4
    n_kv_head: int = 4  # n_head: multi-head attention; 1: multi-query; between: grouped-query
    n_embd: int = 128
    head_dim: int | None = None  # None: n_embd // n_head (Qwen3 sets it explicitly)
    hidden: int | None = None  # the MLP width; None: default_hidden(n_embd, mlp)
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None
    norm_eps: float = 1e-5
    qk_norm: bool = False  # Qwen3: a norm over head_dim on every query and key head
    attention_bias: bool = False
    tie_embeddings: bool = True
    dropout: float = 0.0
    norm: str = "rms"  # or "layer": nn.LayerNorm with a bias (the 2019 GPT)
    mlp: str = "swiglu"  # or "gelu": two matrices and the exact GELU
    position: str = "rope"  # or "learned": a table of position vectors added to the tokens

    def __post_init__(self):
        for name, allowed in (("norm", NORMS), ("mlp", MLPS), ("position", POSITIONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} should be one of {allowed}, got {getattr(self, name)!r}.")
        sizes = (self.vocab_size, self.block_size, self.n_layer, self.n_head, self.n_kv_head)
        if min(sizes) < 1 or min(self.head_size, self.ffn_size) < 1:
            raise ValueError(f"every size in {self} must be at least 1.")
        if self.n_head % self.n_kv_head:
            divisors = [d for d in range(1, self.n_head + 1) if self.n_head % d == 0]
            raise ValueError(
                f"n_head={self.n_head} must be a multiple of n_kv_head={self.n_kv_head}: each "
                f"key/value head serves a whole group of query heads. Use one of {divisors}."
            )
        if self.head_dim is None and self.n_embd % self.n_head:
            raise ValueError(
                f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}; change one, "
                "or set head_dim explicitly."
            )
        if self.position == "rope" and self.head_size % 2:
            raise ValueError(f"RoPE rotates pairs: head_dim must be even, got {self.head_size}.")
        _check_rope_scaling(self.rope_scaling)

    @property
    def head_size(self) -> int:
        """Dimensions per attention head: ``head_dim``, or ``n_embd // n_head``."""
        return self.head_dim if self.head_dim is not None else self.n_embd // self.n_head

    @property
    def ffn_size(self) -> int:
        """The MLP's hidden width: ``hidden``, or :func:`default_hidden`."""
        return self.hidden if self.hidden is not None else default_hidden(self.n_embd, self.mlp)


def _check_rope_scaling(scaling: dict | None) -> None:
    if scaling is None:
        return
    missing = [k for k in LLAMA3_KEYS if k not in scaling]
    if scaling.get("rope_type", "llama3") != "llama3" or missing:
        raise ValueError(
            f"rope_scaling must be None or Llama 3's scaling: rope_type 'llama3' with the keys "
            f"{LLAMA3_KEYS}; got {scaling} (missing {missing})."
        )


def default_hidden(n_embd: int, mlp: str = "swiglu") -> int:
    """The MLP width when ``hidden`` is None.

    GELU: ``4 * n_embd`` (two matrices, 8 n_embd² weights). SwiGLU has three matrices, so
    Llama takes 2/3 of that, ``8/3 * n_embd``, rounded up to a multiple of 32 (hardware likes
    round sizes): about the same parameter count. For exactly the same count, see
    :func:`gelu_hidden`.
    """
    if mlp == "gelu":
        return 4 * n_embd
    if mlp == "swiglu":
        return 32 * math.ceil(8 * n_embd / 3 / 32)
    raise ValueError(f"mlp should be one of {MLPS}, got {mlp!r}.")


def gelu_hidden(swiglu_hidden: int) -> int:
    """The GELU MLP width with exactly the parameters of a SwiGLU of width ``swiglu_hidden``.

    SwiGLU: 3 matrices of n_embd x hidden; GELU: 2. So the GELU is 3/2 as wide, e.g.
    ``cfg.replace(mlp="gelu", hidden=gelu_hidden(cfg.ffn_size))``.
    """
    if swiglu_hidden % 2:
        raise ValueError(
            f"swiglu_hidden={swiglu_hidden} is odd: 3/2 of it is no whole number of units; "
            "use an even SwiGLU width."
        )
    return 3 * swiglu_hidden // 2


def kv_cache_bytes_per_token(config: LlamaConfig, dtype=torch.float32) -> int:
    """Bytes the KV cache grows by per token (per sequence): K and V, every layer, kv heads."""
    return 2 * config.n_layer * config.n_kv_head * config.head_size * dtype.itemsize


# --------------------------------------------------------------------------- rotary positions


def rope_frequencies(config: LlamaConfig, device=None) -> torch.Tensor:
    """The inverse frequencies (head_dim / 2,): pair i turns by ``theta^(-2i/head_dim)``.

    With Llama 3's ``rope_scaling``, the slow pairs (wavelength longer than the original
    context / low_freq_factor) turn ``factor`` times slower, the fast ones (shorter than
    context / high_freq_factor) stay, and those between are interpolated (as transformers'
    ``_compute_llama3_parameters``).
    """
    d = config.head_size
    exponents = torch.arange(0, d, 2, dtype=torch.int64, device=device).float() / d
    inv_freq = 1.0 / (config.rope_theta**exponents)
    if config.rope_scaling is None:
        return inv_freq
    s = config.rope_scaling
    factor, low, high = s["factor"], s["low_freq_factor"], s["high_freq_factor"]
    context = s["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > context / low, inv_freq / factor, inv_freq)
    smooth = (context / wavelen - low) / (high - low)  # 0 at the slow end, 1 at the fast end
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    between = ~(wavelen < context / high) * ~(wavelen > context / low)
    return torch.where(between, smoothed, scaled)


def rope_cos_sin(config: LlamaConfig, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (T, head_dim) of every position, in float32, for ``positions.apply_rope``.

    Without scaling these are :func:`helpers.positions.rope_angles` (up to rounding).
    """
    return rope_rotation(positions, rope_frequencies(config, positions.device))


# --------------------------------------------------------------------------- the pieces


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x²) + eps) * weight`` over the last dimension; the weight starts at 1.

    The statistics are computed in float32 and the result cast back to ``x``'s dtype before
    the weight multiplies it, as Hugging Face's LlamaRMSNorm does.
    """

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


def make_norm(kind: str, dim: int, eps: float) -> nn.Module:
    """:class:`RMSNorm` for ``"rms"``, ``nn.LayerNorm`` (with a bias) for ``"layer"``."""
    return RMSNorm(dim, eps) if kind == "rms" else nn.LayerNorm(dim, eps=eps)


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) * up(x))``: the gate decides, per unit, how much of ``up`` passes."""

    def __init__(self, n_embd: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(n_embd, hidden, bias=False)
        self.up_proj = nn.Linear(n_embd, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class GeluMLP(nn.Module):
    """The 2019 MLP, ``down(gelu(up(x)))`` with the exact GELU, without biases."""

    def __init__(self, n_embd: int, hidden: int):
        super().__init__()
        self.up_proj = nn.Linear(n_embd, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.up_proj(x)))


class GroupedQueryAttention(nn.Module):
    """Causal attention with ``n_head`` query heads and ``n_kv_head`` key/value heads.

    Query head h reads key/value head ``h // (n_head // n_kv_head)`` (Hugging Face's
    ``repeat_kv``). The cache keeps only the ``n_kv_head`` heads, already rotated.
    """

    def __init__(self, config: LlamaConfig):
        super().__init__()
        c, d, bias = config, config.head_size, config.attention_bias
        self.n_head, self.n_kv_head, self.head_dim = c.n_head, c.n_kv_head, d
        self.dropout = c.dropout  # on the attention weights, while training
        self.q_proj = nn.Linear(c.n_embd, c.n_head * d, bias=bias)
        self.k_proj = nn.Linear(c.n_embd, c.n_kv_head * d, bias=bias)
        self.v_proj = nn.Linear(c.n_embd, c.n_kv_head * d, bias=bias)
        self.o_proj = nn.Linear(c.n_head * d, c.n_embd, bias=bias)
        self.q_norm = make_norm(c.norm, d, c.norm_eps) if c.qk_norm else None
        self.k_norm = make_norm(c.norm, d, c.norm_eps) if c.qk_norm else None

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor | None = None,
        sin: torch.Tensor | None = None,
        cache: LayerCache | None = None,
    ) -> torch.Tensor:
        """``x`` (B, T, C) -> (B, T, C); ``cos``/``sin`` None: no rotation (learned positions)."""
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim)
        k = self.k_proj(x).view(B, T, self.n_kv_head, self.head_dim)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        if self.q_norm is not None:  # Qwen3: normalise each head's q and k before rotating
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)  # (B, heads, T, head_dim)
        if cos is not None:  # rotate before caching: a cached key keeps its angle
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        past = 0 if cache is None or cache.k is None else cache.k.shape[2]
        if cache is not None:
            k, v = cache.extend(k, v)
        group = self.n_head // self.n_kv_head  # query heads per key/value head
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        mask = None
        if past and T > 1:  # new queries sit at positions past..past+T-1: a shifted triangle
            mask = torch.ones(T, T + past, dtype=torch.bool, device=x.device).tril(diagonal=past)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            is_causal=bool(mask is None and past == 0 and T > 1),
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim))


class Block(nn.Module):
    """Pre-norm block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))`` (Hugging Face's names)."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        c = config
        self.input_layernorm = make_norm(c.norm, c.n_embd, c.norm_eps)
        self.self_attn = GroupedQueryAttention(c)
        self.post_attention_layernorm = make_norm(c.norm, c.n_embd, c.norm_eps)
        mlp = SwiGLU if c.mlp == "swiglu" else GeluMLP
        self.mlp = mlp(c.n_embd, c.ffn_size)
        self.drop = nn.Dropout(c.dropout)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor | None = None,
        sin: torch.Tensor | None = None,
        cache: LayerCache | None = None,
    ) -> torch.Tensor:
        x = x + self.drop(self.self_attn(self.input_layernorm(x), cos, sin, cache))
        return x + self.drop(self.mlp(self.post_attention_layernorm(x)))


# --------------------------------------------------------------------------- the model


class Llama(nn.Module):
    """Token embeddings, ``n_layer`` blocks, a final norm and the vocabulary head.

    With ``tie_embeddings`` the head shares the embedding's matrix. Weights start as in
    :func:`init_llama_weights`. ``forward(idx, cache)`` gives logits; with a
    :class:`helpers.gpt.KVCache`, ``idx`` holds only the new tokens and their positions start
    at ``len(cache)``.
    """

    def __init__(self, config: LlamaConfig | dict):
        super().__init__()
        config = LlamaConfig.from_dict(config) if isinstance(config, dict) else config
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.n_embd)
        learned = config.position == "learned"
        self.pos_emb = nn.Embedding(config.block_size, config.n_embd) if learned else None
        self.drop = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm = make_norm(config.norm, config.n_embd, config.norm_eps)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        init_llama_weights(self)

    num_parameters = GPT.num_parameters  # parameters counted once (a tied matrix is one tensor)

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Logits (B, T, vocab) for ids (B, T)."""
        return self.lm_head(self.hidden(idx, cache))

    def hidden(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """The final hidden states (B, T, n_embd), after the last norm."""
        T = idx.shape[1]
        start = len(cache) if cache is not None else 0
        if self.pos_emb is not None and start + T > self.config.block_size:
            raise ValueError(
                f"{start + T} positions do not fit the learned position table of block_size="
                f"{self.config.block_size}; crop the input to its last block_size tokens "
                "(generate() does) or use position='rope'."
            )
        positions = torch.arange(start, start + T, device=idx.device)
        x, cos, sin = self.embed_tokens(idx), None, None
        if self.pos_emb is not None:
            x = x + self.pos_emb(positions)
        else:
            cos, sin = rope_cos_sin(self.config, positions)
        x = self.drop(x)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, cache.layers[i] if cache is not None else None)
        return self.norm(x)

    # generation is the GPT's (helpers.gpt): the same KV cache, sliding window and sampling
    generate = GPT.generate
    stream = GPT.stream


def init_llama_weights(model: Llama) -> None:
    """normal(0, 0.02) for every Linear and Embedding (HF's ``initializer_range``), zero biases,
    norms at weight 1; ``o_proj`` and ``down_proj``, which write into the residual stream, get
    ``0.02 / sqrt(2 * n_layer)`` so that the sum over 2 * n_layer branches stays small (GPT-2).
    """
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    residual_std = 0.02 / math.sqrt(2 * model.config.n_layer)
    for layer in model.layers:
        nn.init.normal_(layer.self_attn.o_proj.weight, mean=0.0, std=residual_std)
        nn.init.normal_(layer.mlp.down_proj.weight, mean=0.0, std=residual_std)


# --------------------------------------------------------------------------- Hugging Face

HUB_REPO = "HuggingFaceTB/SmolLM2-135M"
WEIGHTS, INDEX = "model.safetensors", "model.safetensors.index.json"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
)
HF_TYPES = ("llama", "qwen3")


def config_from_hf(hf: dict) -> LlamaConfig:
    """Our :class:`LlamaConfig` for a Hugging Face ``config.json`` (as a dict).

    Supports ``model_type`` "llama" (Llama 2/3.x, SmolLM) and "qwen3"; refuses what the
    model here does not implement rather than computing something else.
    """
    if hf.get("model_type") not in HF_TYPES:
        raise ValueError(
            f"model_type {hf.get('model_type')!r} is not supported: this module implements "
            f"{HF_TYPES} (Llama 3.x, SmolLM2, Qwen3 dense models)."
        )
    _refuse_unsupported(hf)
    theta, scaling = _rope_from_hf(hf)
    return LlamaConfig(
        vocab_size=hf["vocab_size"],
        block_size=hf.get("max_position_embeddings", 2048),
        n_layer=hf["num_hidden_layers"],
        n_head=hf["num_attention_heads"],
        n_kv_head=hf.get("num_key_value_heads") or hf["num_attention_heads"],
        n_embd=hf["hidden_size"],
        head_dim=hf.get("head_dim"),
        hidden=hf["intermediate_size"],
        rope_theta=float(theta),
        rope_scaling=scaling,
        norm_eps=hf.get("rms_norm_eps", 1e-6),
        qk_norm=hf["model_type"] == "qwen3",
        attention_bias=bool(hf.get("attention_bias", False)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
    )


def _refuse_unsupported(hf: dict) -> None:
    problems = []
    if hf.get("hidden_act", "silu") != "silu":
        problems.append(f"hidden_act {hf['hidden_act']!r} (only 'silu', i.e. SwiGLU)")
    if hf.get("mlp_bias"):
        problems.append("mlp_bias (the MLP here has no biases)")
    if hf.get("use_sliding_window") or any(
        t != "full_attention" for t in hf.get("layer_types") or []
    ):
        problems.append("sliding-window attention (only full attention here)")
    if problems:
        raise ValueError(f"this config uses what the model here does not implement: {problems}.")


def _rope_from_hf(hf: dict) -> tuple[float, dict | None]:
    """rope_theta and our rope_scaling, from transformers 5's ``rope_parameters`` or the older
    top-level ``rope_theta`` + ``rope_scaling``."""
    params = {**(hf.get("rope_scaling") or {}), **(hf.get("rope_parameters") or {})}
    theta = params.pop("rope_theta", hf.get("rope_theta", 10000.0))
    rope_type = params.pop("rope_type", params.pop("type", "default"))
    if params.get("partial_rotary_factor", 1.0) != 1.0:
        raise ValueError("partial_rotary_factor is not supported: RoPE here turns every pair.")
    if rope_type == "default":
        return theta, None
    if rope_type != "llama3":
        raise ValueError(
            f"rope_type {rope_type!r} is not supported; only 'default' and 'llama3' are."
        )
    params.setdefault("original_max_position_embeddings", hf.get("max_position_embeddings"))
    missing = [k for k in LLAMA3_KEYS if params.get(k) is None]
    if missing:
        raise ValueError(f"the llama3 rope parameters lack {missing}.")
    return theta, {"rope_type": "llama3", **{k: params[k] for k in LLAMA3_KEYS}}


HF_NAME = re.compile(
    r"(embed_tokens|norm|lm_head)\.weight"
    r"|layers\.\d+\.(input_layernorm|post_attention_layernorm)\.weight"
    r"|layers\.\d+\.self_attn\.[qkvo]_proj\.(weight|bias)"
    r"|layers\.\d+\.self_attn\.[qk]_norm\.weight"
    r"|layers\.\d+\.mlp\.(gate|up|down)_proj\.weight"
)


def state_from_hf(tensors: dict[str, torch.Tensor], config: LlamaConfig) -> dict:
    """Hugging Face tensors as our :class:`Llama`'s state dict: the names are the same
    without the ``model.`` prefix; a tied ``lm_head.weight`` is the embedding matrix."""
    state = {}
    for name, value in tensors.items():
        name = name.removeprefix("model.")
        if name.endswith("rotary_emb.inv_freq"):
            continue  # old checkpoints saved the RoPE frequencies; we compute them
        state[name] = value
    unknown = [n for n in state if not HF_NAME.fullmatch(n)]
    if unknown:
        raise ValueError(
            f"tensors {unknown[:5]} are not parameters of a Llama/Qwen3 decoder; is this the "
            "checkpoint of another architecture (vision tower, MoE, ...)?"
        )
    if config.tie_embeddings:
        state["lm_head.weight"] = state["embed_tokens.weight"]
    elif "lm_head.weight" not in state:
        raise ValueError(
            "the checkpoint has no lm_head.weight but its config says tie_word_embeddings is "
            "false; fix config.json (tie_word_embeddings: true) or the weights."
        )
    return state


def _weight_files(folder: Path) -> list[str]:
    """The safetensors files a folder's weights need: one file, or the shards of its index."""
    if (folder / INDEX).exists():
        weight_map = json.loads((folder / INDEX).read_text())["weight_map"]
        return sorted(set(weight_map.values()))
    return [WEIGHTS]


def _missing_files(folder: Path) -> list[str]:
    needed = ["config.json", *_weight_files(folder)]
    return [f for f in needed if not (folder / f).exists()]


def model_files(folder=None, repo: str = HUB_REPO, download: bool = False) -> Path:
    """The folder with a model's ``config.json`` and safetensors weights.

    By default ``$COURSE_DATA_DIR/<model name>`` (e.g. ``.../SmolLM2-135M``). With
    ``download=True`` missing files come from the Hugging Face hub (needs the network and
    ``huggingface_hub``; ``HF_ENDPOINT`` selects a mirror); otherwise a missing file is a
    ``FileNotFoundError`` that says what to put where.
    """
    from .data import data_dir

    folder = Path(folder) if folder is not None else data_dir() / repo.split("/")[-1]
    missing = _missing_files(folder)
    if missing and download:
        from huggingface_hub import snapshot_download

        patterns = ["config.json", "*.safetensors", INDEX, "generation_config.json"]
        snapshot_download(repo, allow_patterns=[*patterns, *TOKENIZER_FILES], local_dir=folder)
        missing = _missing_files(folder)
    if missing:
        raise FileNotFoundError(
            f"{', '.join(missing)} not found in {folder}. Put the files of "
            f"https://huggingface.co/{repo} there (config.json, {WEIGHTS} or {INDEX} with its "
            "shards, and the tokenizer files), or call model_files(download=True) where the "
            "network is available (set HF_ENDPOINT to use a mirror of the hub)."
        )
    return folder


def load_pretrained(folder, device="cpu", dtype=torch.float32) -> Llama:
    """A :class:`Llama` from a Hugging Face folder (``config.json`` + safetensors, one file or
    shards), in eval mode, on ``device`` in ``dtype``."""
    from .gpt2 import read_safetensors

    folder = Path(folder)
    missing = _missing_files(folder)
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)} not found in {folder}: see model_files().")
    config = config_from_hf(json.loads((folder / "config.json").read_text()))
    tensors = {}
    for file in _weight_files(folder):
        tensors.update(read_safetensors(folder / file))
    state = state_from_hf(tensors, config)
    model = Llama(config)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"the weights in {folder} do not fit its config.json: {error}") from None
    return model.to(device=device, dtype=dtype).eval()
