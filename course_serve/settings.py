"""The service's settings, read once from ``COURSE_SERVE_*`` environment variables.

=================================  ==========================================================
``COURSE_SERVE_CNN_CHECKPOINT``    chapter 02's MNIST CNN (default: the course checkpoint
                                   ``mnist_cnn``, under ``COURSE_CHECKPOINT_DIR``)
``COURSE_SERVE_GPT_CHECKPOINT``    chapter 04's character GPT (default: ``char_gpt``)
``COURSE_SERVE_DEVICE``            ``cpu`` (default), ``cuda`` or ``mps``
``COURSE_SERVE_BATCH_WINDOW_MS``   the collection window; 0 turns batching off (default 5)
``COURSE_SERVE_MAX_BATCH``         the most requests in one batch (default 64)
``COURSE_SERVE_MAX_PENDING``       the most requests a route holds, waiting or running; more
                                   get 503 with Retry-After (default 256)
``COURSE_SERVE_REQUEST_TIMEOUT_S`` a request not answered by then gets 504 and its work is
                                   cancelled (default 60)
``COURSE_SERVE_SHUTDOWN_GRACE_S``  on SIGINT/SIGTERM, how long requests in flight may take to
                                   finish before the server stops anyway (default 30)
``COURSE_SERVE_MAX_BODY_BYTES``    larger request bodies get 413 (default 1,000,000)
``COURSE_SERVE_MAX_NEW_TOKENS``    the most characters one /generate may ask for (default 500)
``COURSE_SERVE_MAX_PROMPT_CHARS``  the longest prompt (default 2,000)
``COURSE_SERVE_THREADS``           torch threads per worker (default: torch's choice)
=================================  ==========================================================
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

PREFIX = "COURSE_SERVE_"


def _default_checkpoint(name: str) -> Path:
    from helpers.checkpoint import checkpoint_path

    return checkpoint_path(name)


@dataclass(frozen=True)
class Settings:
    """Everything the service can be told; :meth:`from_env` reads it from the environment."""

    cnn_checkpoint: Path
    gpt_checkpoint: Path
    device: str = "cpu"
    batch_window_ms: float = 5.0
    max_batch: int = 64
    max_pending: int = 256
    request_timeout_s: float = 60.0
    shutdown_grace_s: float = 30.0
    max_body_bytes: int = 1_000_000
    max_new_tokens: int = 500
    max_prompt_chars: int = 2_000
    threads: int = 0  # 0: leave torch's default

    def __post_init__(self):
        checks = {
            "batch_window_ms": 0 <= self.batch_window_ms <= 1_000,
            "max_batch": self.max_batch >= 1,
            "max_pending": self.max_pending >= 1,
            "request_timeout_s": self.request_timeout_s > 0,
            "shutdown_grace_s": self.shutdown_grace_s >= 0,
            "max_body_bytes": self.max_body_bytes >= 1_024,
            "max_new_tokens": self.max_new_tokens >= 1,
            "max_prompt_chars": self.max_prompt_chars >= 1,
            "threads": self.threads >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(
                    f"{PREFIX}{name.upper()}={getattr(self, name)!r} is out of range: the window "
                    "is 0-1000 ms, max_body_bytes at least 1024, threads 0 or more, the request "
                    "timeout > 0 s, the shutdown grace >= 0 s, the rest >= 1."
                )

    @classmethod
    def from_env(cls, environ=None, **overrides) -> "Settings":
        """Settings from ``COURSE_SERVE_*`` variables (and keyword overrides); bad values raise."""
        environ = os.environ if environ is None else environ
        values = {}
        for field in dataclasses.fields(cls):
            raw = environ.get(PREFIX + field.name.upper(), "").strip()
            if not raw:
                continue
            kind = {"Path": Path, "str": str, "float": float, "int": int}[str(field.type)]
            try:
                values[field.name] = kind(raw)
            except ValueError:
                raise ValueError(
                    f"{PREFIX}{field.name.upper()}={raw!r} should be a {kind.__name__}."
                ) from None
        values.setdefault("cnn_checkpoint", _default_checkpoint("mnist_cnn"))
        values.setdefault("gpt_checkpoint", _default_checkpoint("char_gpt"))
        values.update(overrides)
        return cls(**values)

    def check_checkpoints(self) -> None:
        """Raise FileNotFoundError, naming the fix, when a checkpoint file is missing."""
        for what, path, chapter in (
            ("MNIST CNN", self.cnn_checkpoint, "notebooks/02_mnist_cnn.ipynb"),
            ("character GPT", self.gpt_checkpoint, "notebooks/04_transformer_from_scratch.ipynb"),
        ):
            if not Path(path).is_file():
                variable = PREFIX + ("CNN" if "CNN" in what else "GPT") + "_CHECKPOINT"
                raise FileNotFoundError(
                    f"No {what} checkpoint at {path}. Run {chapter} to train and save it, or set "
                    f"{variable} (or COURSE_CHECKPOINT_DIR) to where it is."
                )
