"""Course helpers for From Scratch to Fine-Tuning (从零开始大模型开发与微调).

Small, flat and tested: each notebook develops an idea in its cells, and what later chapters
reuse lives here, one job per module. Use them module-qualified, ``helpers.<module>.<name>``:

=============  =====================================================================
env            run mode (``COURSE_QUICK``), ``pick``, seeding, ``setup()``
device         device choice (``COURSE_DEVICE``), ``describe_device``, ``describe_hardware``
precision      the mixed-precision policy per device (bf16, fp16 + GradScaler, fp32)
install        the installation check (``python -m helpers``)
data           datasets: MNIST, Fashion-MNIST, CIFAR-10, Tiny Shakespeare
loader         batches from tensors on the device; windows of a token stream
augment        image normalisation and augmentation as batched tensor operations
train          ``fit``, ``evaluate``, ``predict``, ``cross_entropy``, progress bars
optim          parameter groups, the optimizer and schedule builder
hand_optim     SGD and Adam written by hand (chapter 01)
autograd       a scalar autograd engine in pure Python (chapter 01)
models         ConvNet, the baseline CNN, the ResNet, flip TTA
gpt            the GPT: attention, blocks, sampling, KV cache, loading
tokenizer      text to ids and back
positions      sinusoidal tables, rotary embeddings (RoPE), ALiBi biases
seq2seq        the encoder-decoder transformer and chapter 04b's date translation task
recipes        training recipes: CIFAR-10 (chapter 03) and the character GPT (chapter 04)
finetune       fine-tuning tools: anatomy, freezing, new heads, per-layer rates, label budgets
transfer       chapter 05's experiment: six strategies at every label budget, the sweep
pretrained     models chapters hand on (02's CNN, 04's GPT, 05's source, 06's base), or trains them
lora           LoRA by hand: LoRALinear, apply by name, merge/unmerge, adapter save/load
shakespeare    Tiny Shakespeare: the one split, speeches, the speakers chapter 06 holds out
adapt          continued pre-training on one speaker: splits, keep-best training, window losses
classify       a GPT as a classifier: padding, last-token head, window tasks, strategies
instruct       instruction tuning: three exact-answer instructions, the end token, the masked loss
gpt2           GPT-2 weights (safetensors) in the course's GPT, GPT-2's BPE tokenizer
bpe            byte-level BPE from scratch: train, encode, decode, GPT-2's file format
llama          the modern block (RMSNorm, RoPE, SwiGLU, GQA, QK-norm), Llama/Qwen3 weights
dpo            preference tuning: sequence log-probabilities, the DPO loss, preference pairs
deploy         serving prep (ch. 08): torch.export, ONNX Runtime, int8 weights, latency
config         dataclass configs that reject unknown keys
summary        a per-layer table of a model, parameter counts
checkpoint     save atomically, load safely, resume exactly
memory         training memory: accounting, measurement, accumulation, checkpointing
distributed    torchrun: process groups, data shards, DDP and FSDP2, sharded checkpoints
train_gpt_ddp  chapter 07's training program: ``torchrun -m helpers.train_gpt_ddp``
results        ``report()`` in notebooks and the README results table
plot           curves, image grids, decision boundaries, confusion matrices
=============  =====================================================================

``import helpers`` is cheap: a submodule is imported on first use (``helpers.train`` loads
torch; ``helpers.autograd`` loads nothing but the standard library).
"""

import importlib

MODULES = (
    "env",
    "device",
    "precision",
    "install",
    "data",
    "loader",
    "augment",
    "train",
    "optim",
    "hand_optim",
    "autograd",
    "models",
    "gpt",
    "tokenizer",
    "positions",
    "seq2seq",
    "recipes",
    "finetune",
    "transfer",
    "pretrained",
    "lora",
    "shakespeare",
    "classify",
    "adapt",
    "instruct",
    "gpt2",
    "bpe",
    "llama",
    "dpo",
    "config",
    "deploy",
    "summary",
    "checkpoint",
    "memory",
    "distributed",
    "train_gpt_ddp",
    "results",
    "plot",
)
__all__ = list(MODULES)


def __getattr__(name: str):
    if name in MODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(
        f"module 'helpers' has no attribute {name!r}; its modules are {', '.join(MODULES)} "
        f"(use helpers.<module>.<name>, e.g. helpers.train.fit)"
    )


def __dir__():
    return sorted(list(globals()) + list(MODULES))
