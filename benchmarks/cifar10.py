"""CIFAR-10: the baseline against the modern recipe of chapter 03.

For each, and each seed: time to 85% and to 94% test accuracy (measured at the end of every
epoch, without test-time augmentation; "-" where not reached), final test accuracy (the recipe's
with flip TTA), training time and training images per second. Prints the device and the median
over the seeds.

    python benchmarks/cifar10.py                # the notebook's budget for this device, seed 0
    python benchmarks/cifar10.py --epochs 4 --seeds 0 1 2
    python benchmarks/cifar10.py --compile      # torch.compile (warm-up not timed); for GPUs

The sizes default to ``helpers.recipes.CIFAR_BUDGETS``: the GPU budget on CUDA, the CPU budget
elsewhere.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import helpers
from helpers import recipes
from helpers.device import describe_device


def time_to(history: dict, target: float):
    """Training seconds until the test accuracy first reached ``target`` (None if never)."""
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
    return parser.parse_args(argv)


def load(device, train_images: int | None) -> dict:
    start = time.perf_counter()
    train, test = helpers.data.cifar10(train=True), helpers.data.cifar10(train=False)
    x, y = (t.to(device) for t in helpers.data.as_tensors(train))
    test_x, test_y = (t.to(device) for t in helpers.data.as_tensors(test))
    if train_images:
        keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:train_images]
        x, y = x[keep.to(device)], y[keep.to(device)]
    mean, std = helpers.augment.channel_stats(x)
    print(
        f"data: {len(x):,} train / {len(test_x):,} test images, "
        f"loaded in {time.perf_counter() - start:.0f} s"
    )
    return dict(
        train_images=x,
        train_labels=y,
        test_images=test_x,
        test_labels=test_y,
        mean=mean,
        std=std,
        device=device,
    )


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
    recipe = recipes.CifarRecipe().replace(**budget)
    print(f"device: {describe_device(device)} | torch {torch.__version__}")
    data = load(device, args.train_images)

    runs = {
        "baseline": recipes.CifarRecipe().replace(**recipes.CIFAR_BASELINE, epochs=recipe.epochs),
        "recipe": recipe,
    }
    if args.only:
        runs = {args.only: runs[args.only]}
    rows = []
    for name, run_recipe in runs.items():
        print(f"\n{name}: {run_recipe}")
        results = []
        for seed in args.seeds:
            r = recipes.train_cifar(
                run_recipe, **data, seed=seed, compile=args.compile, progress=False
            )
            r["to85"], r["to94"] = time_to(r["history"], 0.85), time_to(r["history"], 0.94)
            results.append(r)
            compiled = f", compile {r['compile_seconds']:.0f} s" if args.compile else ""
            print(
                f"  seed {seed}: test accuracy {r['test_accuracy']:.4f} "
                f"(no TTA {r['test_accuracy_no_tta']:.4f}), "
                f"per epoch {[round(a, 4) for a in r['history']['val_accuracy']]}, "
                f"{r['train_seconds']:.1f} s, {r['images_per_second']:,.0f} images/s{compiled}",
                flush=True,
            )
        keys = ("test_accuracy", "train_seconds", "images_per_second", "to85", "to94")
        rows.append((name, {key: median([r[key] for r in results]) for key in keys}))

    print(
        f"\nCIFAR-10, {describe_device(device)}, {recipe.epochs} epochs, "
        f"median over {len(args.seeds)} seed(s) {args.seeds}"
    )
    print(
        f"{'run':10s} {'test acc':>9s} {'train s':>9s} {'images/s':>9s} "
        f"{'s to 85%':>9s} {'s to 94%':>9s}"
    )
    for name, m in rows:
        print(
            f"{name:10s} {m['test_accuracy']:9.4f} {m['train_seconds']:9.1f} "
            f"{m['images_per_second']:9,.0f} {show(m['to85'], '.1f'):>9s} "
            f"{show(m['to94'], '.1f'):>9s}"
        )


if __name__ == "__main__":
    main()
