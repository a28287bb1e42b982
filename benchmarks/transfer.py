"""Chapter 05's strategy x label-budget table: CIFAR-10's last five classes from a ResNet
pretrained on the first five.

For every fine-tuning strategy and every budget (labelled images per class): the mean test
accuracy over seeds with its standard error (one seed: the test set's binomial standard error),
the median and range, the median training seconds, and the source-task accuracy left through
the original head (forgetting). Prints the device.

    python benchmarks/transfer.py            # the notebook's sweep (minutes on 2 CPU cores)
    python benchmarks/transfer.py --budgets 10 100 --seeds 0 1 2 --strategies scratch lp_ft

The setup is the notebook's (``helpers.transfer.cifar_task``): 500 validation images per target
class held out (seed 0), the other 4,500 per class as the pool from which nested, stratified
labelled sets are drawn (one per seed), the 5,000 target test images read once per model, every
strategy given the same batches, steps and augmentation (``helpers.transfer.plan``), and the
settings the notebook chose on its validation split (``SETTINGS`` below). The source network is
``helpers.pretrained.cifar5_resnet``, trained first with chapter 03's recipe when it is missing.
Default seeds: 3 per budget, 1 for all labels.
"""

from __future__ import annotations

import argparse
import time

import torch

import helpers
from helpers.transfer import STRATEGIES, FinetuneSettings

# chosen on the validation split by notebooks/05_transfer_learning.ipynb (full run, CPU)
SETTINGS = {
    "scratch": FinetuneSettings(lr=3e-2),
    "linear_probe": FinetuneSettings(lr=3e-2),
    "last_block": FinetuneSettings(lr=1e-2),
    "full": FinetuneSettings(lr=1e-2, layer_decay=0.5),
    "lp_ft": FinetuneSettings(lr=3e-3, layer_decay=0.5),
    "gradual": FinetuneSettings(lr=3e-3, layer_decay=0.5),
}
POOL_PER_CLASS = 4500


def print_table(rows, budgets, strategies, n_test: int) -> None:
    accuracy = helpers.transfer.summarize(rows)
    forgetting = helpers.transfer.summarize(rows, key="source_accuracy")
    print(
        "\n| strategy | labels per class | test accuracy, mean ± SE | median [min-max] | seeds "
        "| train s | source accuracy left |"
    )
    print("|---|---|---|---|---|---|---|")
    for s in strategies:
        for b in budgets:
            c = accuracy[s, b]
            se = c["se"] if c["n"] > 1 else helpers.transfer.binomial_se(c["mean"], n_test)
            left = forgetting.get((s, b))
            left = f"{left['mean']:.4f}" if left else ("unchanged" if s != "scratch" else "-")
            print(
                f"| {s} | {b} | {c['mean']:.4f} ± {se:.4f} | {c['median']:.4f} "
                f"[{c['min']:.4f}-{c['max']:.4f}] | {c['n']} | {c['seconds']:.1f} | {left} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", type=int, nargs="+", default=[10, 100, 1000, POOL_PER_CLASS])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES)
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply every budget's steps (default 1)"
    )
    args = parser.parse_args()

    device = helpers.device.get_device()
    print(f"device: {helpers.device.describe_device(device)} | torch {torch.__version__}")
    start = time.perf_counter()
    source, config = helpers.pretrained.cifar5_resnet(device, progress=False)
    task, _ = helpers.transfer.cifar_task(config, device)
    cache = task.cache_features(source)
    n = len(task.train_images) + len(task.test_images)
    print(f"features of {n:,} images cached in {cache:.1f} s")
    top = max(args.budgets)
    seeds = {b: args.seeds[:1] if b == top == POOL_PER_CLASS else args.seeds for b in args.budgets}
    rows = helpers.transfer.sweep(
        source,
        task,
        SETTINGS,
        budgets=args.budgets,
        seeds=seeds,
        strategies=args.strategies,
        scale=args.scale,
        log=print,
    )
    print_table(rows, args.budgets, args.strategies, len(task.test_labels))
    print(f"\n{len(rows)} models in {time.perf_counter() - start:.0f} s on {device}")


if __name__ == "__main__":
    main()
