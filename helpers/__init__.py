"""Course helpers for From Scratch to Fine-Tuning (从零开始大模型开发与微调).

Small, flat and tested: each notebook develops an idea in its cells, and what later
chapters reuse lives here.
"""

from . import autograd, checkpoint, data, env, gpt, models, optim, plot, results, train, vision
from .checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from .env import get_device, is_quick, pick, run_mode, seed_everything, setup
from .results import report
from .train import evaluate, fit, predict, progress_bar

__all__ = [
    "autograd", "checkpoint", "data", "env", "gpt", "models", "optim", "plot", "results", "train", "vision",
    "checkpoint_path", "load_checkpoint", "save_checkpoint",
    "get_device", "is_quick", "pick", "run_mode", "seed_everything", "setup",
    "report", "evaluate", "fit", "predict", "progress_bar",
]
