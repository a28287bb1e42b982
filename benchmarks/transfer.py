"""Chapter 05's strategy x label-budget table: Fashion-MNIST from chapter 02's MNIST CNN.

For every fine-tuning strategy and every budget (labelled images per class), the median test
accuracy over seeds with its range, the median training seconds, and the MNIST accuracy left
through the original head (forgetting). Prints the device.

    python benchmarks/transfer.py            # the notebook's sweep (minutes on 2 CPU cores)
    python benchmarks/transfer.py --budgets 10 100 --seeds 0 1 2 --strategies scratch lp_ft

The setup is the notebook's: 500 validation images per class held out of Fashion-MNIST's training
set (seed 0), the other 5,500 per class as the pool from which nested, stratified labelled sets
are drawn (one per seed), inputs standardised with the pool's pixel statistics, every strategy
given the same batches and steps (``helpers.finetune.plan``), and the settings the notebook chose
on its validation split (``SETTINGS`` below). The source model is chapter 02's checkpoint, trained
first with chapter 02's recipe when it is missing. Default seeds: 3 per budget, 1 for all labels.
"""

from __future__ import annotations

import argparse
import functools
import time

import numpy as np
import torch

import helpers
from helpers.finetune import STRATEGIES, FinetuneSettings

# chosen on the validation split by notebooks/05_transfer_learning.ipynb (full run)
SETTINGS = {
    "scratch": FinetuneSettings(lr=1e-2),
    "linear_probe": FinetuneSettings(lr=1e-2),
    "last_block": FinetuneSettings(lr=1e-2),
    "full": FinetuneSettings(lr=1e-2, layer_decay=1.0),
    "lp_ft": FinetuneSettings(lr=3e-3, layer_decay=1.0),
    "gradual": FinetuneSettings(lr=3e-3, layer_decay=1.0),
}
VAL_PER_CLASS = 500


def build_task(device, source_config) -> helpers.finetune.TransferTask:
    """The notebook's target task: the pool, the test set, and MNIST's test set for forgetting."""
    images, labels = helpers.data.as_tensors(helpers.data.fashion_mnist(train=True))
    test_images, test_labels = helpers.data.as_tensors(helpers.data.fashion_mnist(train=False))
    val_idx = helpers.finetune.stratified_indices(labels, VAL_PER_CLASS, seed=0)
    pool_idx = torch.from_numpy(np.setdiff1d(np.arange(len(labels)), val_idx.numpy()))
    pixels = images[pool_idx].float() / 255
    normalize = helpers.augment.normalize
    transform = functools.partial(
        normalize, mean=(pixels.mean().item(),), std=(pixels.std().item(),)
    )
    source_transform = functools.partial(
        normalize, mean=(source_config["mean"],), std=(source_config["std"],)
    )
    mnist_x, mnist_y = helpers.data.as_tensors(helpers.data.mnist(train=False))
    return helpers.finetune.TransferTask(
        train_images=images[pool_idx].to(device),
        train_labels=labels[pool_idx].to(device),
        test_images=test_images.to(device),
        test_labels=test_labels.to(device),
        transform=transform,
        source_images=mnist_x.to(device),
        source_labels=mnist_y.to(device),
        source_transform=source_transform,
    )


def print_table(rows, budgets, strategies) -> None:
    accuracy = helpers.finetune.summarize(rows)
    forgetting = helpers.finetune.summarize(rows, key="source_accuracy")
    print(
        "\n| strategy | labels per class | test accuracy, median [min-max] | seeds | train s "
        "| MNIST accuracy left |"
    )
    print("|---|---|---|---|---|---|")
    for s in strategies:
        for b in budgets:
            c = accuracy[s, b]
            left = forgetting.get((s, b))
            left = (
                f"{left['median']:.4f}" if left else ("unchanged" if s == "linear_probe" else "-")
            )
            print(
                f"| {s} | {b} | {c['median']:.4f} [{c['min']:.4f}-{c['max']:.4f}] | {c['n']} "
                f"| {c['seconds']:.1f} | {left} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", type=int, nargs="+", default=[10, 100, 1000, 5500])
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
    source, config = helpers.finetune.load_source(device, progress=False)
    task = build_task(device, config)
    cache = task.cache_features(source)
    n = len(task.train_images) + len(task.test_images)
    print(f"features of {n:,} images cached in {cache:.1f} s")
    top = max(args.budgets)
    seeds = {b: args.seeds[:1] if b == top and top >= 5500 else args.seeds for b in args.budgets}
    rows = helpers.finetune.sweep(
        source,
        task,
        SETTINGS,
        budgets=args.budgets,
        seeds=seeds,
        strategies=args.strategies,
        scale=args.scale,
        log=print,
    )
    print_table(rows, args.budgets, args.strategies)
    print(f"\n{len(rows)} models in {time.perf_counter() - start:.0f} s on {device}")


if __name__ == "__main__":
    main()
