"""``python -m course_serve``: start the service with uvicorn (``make serve``).

Settings come from ``COURSE_SERVE_*`` environment variables (see :mod:`course_serve.settings`);
the options here are uvicorn's: where to listen and how many worker processes to run.
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_serve", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1, help="worker processes (each loads "
                        "the models and batches its own requests)")  # fmt: skip
    parser.add_argument("--log-level", default="info")
    parser.add_argument(
        "--train-missing",
        action="store_true",
        help="train a missing course checkpoint first with its chapter's recipe (needs the data)",
    )
    args = parser.parse_args(argv)
    from .settings import Settings

    try:  # fail fast, with the fix, before uvicorn starts any worker
        settings = Settings.from_env()
        if args.train_missing:
            train_missing(settings)
        settings.check_checkpoints()
    except (FileNotFoundError, ValueError) as error:
        print(f"course_serve cannot start: {error}", file=sys.stderr)
        return 2
    import uvicorn

    uvicorn.run("course_serve.app:create_app", factory=True, host=args.host, port=args.port,
                workers=args.workers, log_level=args.log_level,
                timeout_graceful_shutdown=settings.shutdown_grace_s)  # fmt: skip
    return 0


def train_missing(settings) -> None:
    """Train chapter 02's CNN and chapter 04's GPT where their default checkpoints are missing."""
    import helpers

    jobs = [
        (settings.cnn_checkpoint, "mnist_cnn", helpers.pretrained.train_mnist_cnn),
        (settings.gpt_checkpoint, "char_gpt", helpers.pretrained.pretrain_char_gpt),
    ]
    for path, name, train in jobs:
        if path.is_file() or path != helpers.checkpoint.checkpoint_path(name):
            continue  # present, or a custom path: check_checkpoints() explains
        print(f"course_serve: no {name} checkpoint at {path}; training it with its chapter's "
              "recipe first (minutes on a CPU).", file=sys.stderr)  # fmt: skip
        train(helpers.device.get_device(settings.device))


if __name__ == "__main__":
    sys.exit(main())
