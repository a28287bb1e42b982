"""Course helpers for From Scratch to Fine-Tuning (从零开始大模型开发与微调).

Small, flat and tested: each notebook develops an idea in its cells, and what later
chapters reuse lives here.
"""

from . import data
from .env import get_device, is_quick, pick, run_mode, seed_everything, setup
from .results import report

__all__ = ["data", "get_device", "is_quick", "pick", "report", "run_mode", "seed_everything", "setup"]
