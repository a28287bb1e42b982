"""CIFAR-10: the baseline against the modern recipe of chapter 03.

Trains on chapter 03's 45,000 training images (5,000 held out as a validation split by
``helpers.recipes.holdout_split``, seed 0). For each run, and each seed: time to 85% and to 94%
validation accuracy (measured at the end of every epoch, without test-time augmentation; "-" where
not reached), final validation accuracy and test accuracy (the recipe's with its test-time
augmentation; the test split is read once per trained model), training time and training images
per second. Prints the device, the median over the seeds and, with several seeds, their range.

    python benchmarks/cifar10.py                # the notebook's budget for this device, seed 0
    python benchmarks/cifar10.py --epochs 4 --seeds 0 1 2
    python benchmarks/cifar10.py --compile      # torch.compile (warm-up not timed); for GPUs
    python benchmarks/cifar10.py --set bias_lr_scale=64.0 tta=flip  # other recipe settings

The sizes default to ``helpers.recipes.CIFAR_BUDGETS``: the GPU budget on CUDA, the CPU budget
elsewhere.
"""

from __future__ import annotations

import argparse
import ast
import statistics
import time

import torch

import helpers
from helpers import recipes
from helpers.device import describe_device


def time_to(history: dict, target: float):
    """Training seconds until the validation accuracy first reached ``target`` (None if never)."""
    for seconds, accuracy in zip(history["seconds"], history["val_accuracy"]):
        if accuracy >= target:
            return seconds
    return None


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def show(value, fmt):
    return "-" if value is None else format(value, fmt)


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = "(default: the device's budget)"
    parser.add_argument("--epochs", type=int, help=f"epochs for both runs {default}")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--widths", type=int, nargs=3, help=f"ResNet widths {default}")
    parser.add_argument("--batch-size", type=int, help=f"the recipe's batch size {default}")
    parser.add_argument("--lr", type=float, help=f"the recipe's peak learning rate {default}")
    parser.add_argument("--compile", action="store_true", help="torch.compile (warm-up not timed)")
    parser.add_argument("--only", choices=["baseline", "recipe"], help="run only one of the two")
    parser.add_argument("--device", help="cpu, cuda, mps (default: the best available)")
    parser.add_argument("--train-images", type=int, help="train on N random images (a quick check)")
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="other CifarRecipe settings, e.g. --set bias_lr_scale=64.0 tta=flip",
    )
    return parser.parse_args(argv)


def load(device, train_images: int | None) -> tuple[dict, tuple]:
    """(train_cifar's data: training and validation split, (test images, test labels))."""
    start = time.perf_counter()
    train, test = helpers.data.cifar10(train=True), helpers.data.cifar10(train=False)
    x, y = helpers.data.as_tensors(train)
    test_x, test_y = (t.to(device) for t in helpers.data.as_tensors(test))
    train_index, val_index = recipes.holdout_split(y, per_class=500, seed=0)  # as chapter 03
    val_x, val_y = x[val_index].to(device), y[val_index].to(device)
    x, y = x[train_index], y[train_index]
    if train_images:
        keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:train_images]
        x, y = x[keep], y[keep]
    x, y = x.to(device), y.to(device)
    mean, std = (s.cpu() for s in helpers.augment.channel_stats(x))
    print(
        f"data: {len(x):,} train / {len(val_x):,} validation / {len(test_x):,} test images, "
        f"loaded in {time.perf_counter() - start:.0f} s"
    )
    data = dict(train_images=x, train_labels=y, val_images=val_x, val_labels=val_y)
    return data | dict(mean=mean, std=std, device=device), (test_x, test_y)


def main(argv=None) -> None:
    args = parse(argv)
    device = helpers.env.setup(seed=0, device=args.device, verbose=False)
    budget = dict(recipes.CIFAR_BUDGETS["gpu" if device.type == "cuda" else "cpu"])
    overrides = {
        "epochs": args.epochs,
        "widths": args.widths,
        "batch_size": args.batch_size,
        "lr": args.lr,
    }
    budget.update({k: v for k, v in overrides.items() if v is not None})
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            budget[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            budget[key] = value  # a plain string such as flip=random
    recipe = recipes.CifarRecipe().replace(**budget)
    print(f"device: {describe_device(device)} | torch {torch.__version__}")
    data, test = load(device, args.train_images)

    runs = {
        "baseline": recipes.CifarRecipe().replace(**recipes.CIFAR_BASELINE, epochs=recipe.epochs),
        "recipe": recipe,
    }
    if args.only:
        runs = {args.only: runs[args.only]}
    rows = []
    keys = ("val_accuracy", "test_accuracy", "train_seconds", "images_per_second", "to85", "to94")
    for name, run_recipe in runs.items():
        print(f"\n{name}: {run_recipe}")
        results = []
        for seed in args.seeds:
            r = recipes.train_cifar(
                run_recipe, **data, seed=seed, compile=args.compile, progress=False
            )
            r["to85"], r["to94"] = time_to(r["history"], 0.85), time_to(r["history"], 0.94)
            r["test_accuracy"] = recipes.evaluate_cifar(
                r["model"], *test, mean=data["mean"], std=data["std"], tta=run_recipe.tta
            )
            results.append(r)
            compiled = f", compile {r['compile_seconds']:.0f} s" if args.compile else ""
            print(
                f"  seed {seed}: validation accuracy {r['val_accuracy']:.4f} "
                f"(no TTA {r['val_accuracy_no_tta']:.4f}), test {r['test_accuracy']:.4f}, "
                f"per epoch {[round(a, 4) for a in r['history']['val_accuracy']]}, "
                f"{r['train_seconds']:.1f} s, {r['images_per_second']:,.0f} images/s{compiled}",
                flush=True,
            )
        spread = {k: (min(r[k] for r in results), max(r[k] for r in results)) for k in keys[:2]}
        rows.append((name, {key: median([r[key] for r in results]) for key in keys}, spread))

    print(
        f"\nCIFAR-10, {describe_device(device)}, {recipe.epochs} epochs, "
        f"median over {len(args.seeds)} seed(s) {args.seeds}"
    )
    print(
        f"{'run':10s} {'val acc':>9s} {'test acc':>9s} {'train s':>9s} {'images/s':>9s} "
        f"{'s to 85%':>9s} {'s to 94%':>9s}"
    )
    for name, m, spread in rows:
        print(
            f"{name:10s} {m['val_accuracy']:9.4f} {m['test_accuracy']:9.4f} "
            f"{m['train_seconds']:9.1f} {m['images_per_second']:9,.0f} "
            f"{show(m['to85'], '.1f'):>9s} {show(m['to94'], '.1f'):>9s}"
        )
        if len(args.seeds) > 1:
            print(f"{'':10s} range over seeds: " + ", ".join(
                f"{k} {lo:.4f}-{hi:.4f}" for k, (lo, hi) in spread.items()))  # fmt: skip


if __name__ == "__main__":
    main()
