"""GPT-2's weights in the course's own :class:`helpers.gpt.GPT`, and GPT-2's BPE tokenizer.

GPT-2 (124M: 12 layers, 12 heads, 768 wide, 1,024 positions, 50,257 tokens) is our GPT with
biases, tied embeddings and the tanh approximation of the GELU (``gelu_approximate="tanh"``).
Hugging Face stores it as ``config.json`` + ``model.safetensors``, with ``Conv1D`` layers whose
weights are the transpose of ``nn.Linear``'s.

- :func:`read_safetensors`: the safetensors format read by hand (a JSON header, then raw bytes);
- :func:`config_from_hf`, :func:`state_from_hf`: Hugging Face's names and layout to ours;
- :func:`gpt2_files`: the folder holding the files (``$COURSE_DATA_DIR/gpt2`` by default),
  downloaded from the Hugging Face hub only when asked; :func:`load_gpt2` builds the model;
- :class:`GPT2Tokenizer`: GPT-2's byte-level BPE from ``vocab.json`` + ``merges.txt`` (through
  the ``transformers`` tokenizer), with the ``encode``/``decode`` of the course's tokenizers.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import torch

from .gpt import GPT, GPTConfig

HUB_REPO = "openai-community/gpt2"
FILES = ("config.json", "model.safetensors", "vocab.json", "merges.txt")
DTYPES = {
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F64": torch.float64,
    "I64": torch.int64,
    "I32": torch.int32,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def read_safetensors(path) -> dict[str, torch.Tensor]:
    """Every tensor of a ``.safetensors`` file, on the CPU.

    The format: 8 bytes (little-endian unsigned length n), n bytes of JSON mapping each name to
    its ``dtype``, ``shape`` and ``data_offsets`` (begin, end) into the bytes that follow.
    """
    raw = bytearray(Path(path).read_bytes())
    if len(raw) < 8:
        raise ValueError(f"{path} is too short to be a safetensors file.")
    (n,) = struct.unpack("<Q", raw[:8])
    try:
        header = json.loads(raw[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(f"{path} has no valid safetensors header; download it again.") from None
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in DTYPES:
            raise ValueError(f"{name}: dtype {info['dtype']} is not supported here.")
        begin, end = info["data_offsets"]
        dtype, shape = DTYPES[info["dtype"]], info["shape"]
        count = end - begin
        flat = torch.frombuffer(raw, dtype=torch.uint8, count=count, offset=8 + n + begin)
        tensors[name] = (
            flat.view(dtype).reshape(shape).clone() if count else torch.empty(shape, dtype=dtype)
        )
    return tensors


def config_from_hf(hf: dict) -> GPTConfig:
    """Our :class:`GPTConfig` for a Hugging Face GPT-2 ``config.json`` (as a dict)."""
    activation = hf.get("activation_function", "gelu_new")
    gelu = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "none"}.get(activation)
    unsupported = [
        k
        for k in (
            "scale_attn_by_inverse_layer_idx",
            "reorder_and_upcast_attn",
            "add_cross_attention",
        )
        if hf.get(k)
    ]
    if gelu is None or unsupported or abs(hf.get("layer_norm_epsilon", 1e-5) - 1e-5) > 1e-12:
        raise ValueError(
            f"this GPT-2 config is not plain GPT-2 (activation {activation!r}, options "
            f"{unsupported}, layer_norm_epsilon {hf.get('layer_norm_epsilon')}): the course's GPT "
            "supports gelu_new/gelu, LayerNorm eps 1e-5 and none of those options."
        )
    return GPTConfig(
        vocab_size=hf["vocab_size"],
        block_size=hf["n_positions"],
        n_layer=hf["n_layer"],
        n_head=hf["n_head"],
        n_embd=hf["n_embd"],
        dropout=0.0,
        bias=True,
        gelu_approximate=gelu,
    )


# Hugging Face name (after "h.N.") -> ours (after "blocks.N."); Conv1D weights are transposed.
BLOCK_NAMES = {
    "ln_1": "ln_1",
    "attn.c_attn": "attn.qkv",
    "attn.c_proj": "attn.proj",
    "ln_2": "ln_2",
    "mlp.c_fc": "mlp.fc",
    "mlp.c_proj": "mlp.proj",
}
CONV1D = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


def _our_name(name: str) -> str | None:
    """Our parameter name for a Hugging Face GPT-2 tensor name (None: not a parameter)."""
    top = {
        "wte.weight": "tok_emb.weight",
        "wpe.weight": "pos_emb.weight",
        "ln_f.weight": "ln_f.weight",
        "ln_f.bias": "ln_f.bias",
    }
    if name in top:
        return top[name]
    match = re.fullmatch(r"h\.(\d+)\.(.+)\.(weight|bias)", name)
    if match and match.group(2) in BLOCK_NAMES:
        return f"blocks.{match.group(1)}.{BLOCK_NAMES[match.group(2)]}.{match.group(3)}"
    return None


def state_from_hf(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face GPT-2 tensors (``transformer.`` prefix or not) as our GPT's state dict."""
    state, skipped = {}, []
    for name, value in tensors.items():
        name = name.removeprefix("transformer.")
        ours = _our_name(name)
        if ours is None:
            skipped.append(name)  # lm_head.weight (tied to wte), attention-mask buffers
            continue
        is_conv = any(f".{c}.weight" in f".{name}" for c in CONV1D)
        state[ours] = value.t().contiguous() if is_conv else value
    unknown = [n for n in skipped if not re.search(r"(lm_head\.weight|attn\.(masked_)?bias)$", n)]
    if unknown:
        raise ValueError(f"tensors {unknown[:5]} are not GPT-2 parameters; is this a GPT-2 file?")
    state["head.weight"] = state["tok_emb.weight"]  # tied
    return state


def gpt2_files(folder=None, download: bool = False) -> Path:
    """The folder with GPT-2's four files (:data:`FILES`); ``$COURSE_DATA_DIR/gpt2`` by default.

    With ``download=True`` missing files are fetched from the Hugging Face hub (needs the network
    and ``huggingface_hub``); otherwise a missing file is a ``FileNotFoundError`` saying where to
    put what.
    """
    from .data import data_dir

    folder = Path(folder) if folder is not None else data_dir() / "gpt2"
    missing = [f for f in FILES if not (folder / f).exists()]
    if missing and download:
        from huggingface_hub import snapshot_download

        snapshot_download(HUB_REPO, allow_patterns=list(FILES), local_dir=folder)
        missing = [f for f in FILES if not (folder / f).exists()]
    if missing:
        raise FileNotFoundError(
            f"GPT-2's {', '.join(missing)} are not in {folder}. Put the files of "
            f"https://huggingface.co/{HUB_REPO} there, set COURSE_DATA_DIR to a folder whose "
            "gpt2/ holds them, or call gpt2_files(download=True) where the network is available."
        )
    return folder


def load_gpt2(folder, device="cpu") -> GPT:
    """GPT-2 from a folder with ``config.json`` and ``model.safetensors``, in eval mode."""
    folder = Path(folder)
    config = config_from_hf(json.loads((folder / "config.json").read_text()))
    model = GPT(config)
    state = state_from_hf(read_safetensors(folder / "model.safetensors"))
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"the weights in {folder} do not fit its config.json: {error}") from None
    return model.to(device).eval()


class GPT2Tokenizer:
    """GPT-2's byte-level BPE (``vocab.json`` + ``merges.txt``), as the course's tokenizers."""

    def __init__(self, folder):
        try:
            from transformers import GPT2TokenizerFast
        except ImportError:
            raise ImportError(
                "GPT-2's tokenizer needs transformers: pip install transformers (Colab has it)."
            ) from None
        missing = [f for f in ("vocab.json", "merges.txt") if not (Path(folder) / f).exists()]
        if missing:
            raise FileNotFoundError(f"{folder} has no {', '.join(missing)}: see gpt2_files().")
        self.bpe = GPT2TokenizerFast.from_pretrained(str(folder), local_files_only=True)
        self.eos_id = self.bpe.convert_tokens_to_ids("<|endoftext|>")

    @property
    def vocab_size(self) -> int:
        return len(self.bpe)

    def encode(self, text: str) -> list[int]:
        return self.bpe.encode(text)

    def decode(self, ids) -> str:
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return self.bpe.decode(ids)

    def __repr__(self) -> str:
        return f"GPT2Tokenizer(vocab_size={self.vocab_size})"
