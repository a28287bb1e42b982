"""CIFAR-10: the baseline against the modern recipe of chapter 03.

For each, and each seed: time to 85% and to 94% test accuracy (measured at the end of every
epoch, without test-time augmentation; "-" where not reached), final test accuracy (the recipe's
with flip TTA), training time and training images per second. Prints the device and the median
over the seeds.

    python benchmarks/cifar10.py                      # the notebook's budget for this device, seed 0
    python benchmarks/cifar10.py --epochs 4 --seeds 0 1 2
    python benchmarks/cifar10.py --compile            # torch.compile (warm-up not timed); for GPUs

The sizes default to ``helpers.vision.BUDGETS``: the GPU budget on CUDA, the CPU budget
elsewhere.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import helpers
from helpers import vision
from helpers.env import describe_device


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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, help="epochs for both runs (default: the device's budget)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--widths", type=int, nargs=3, help="ResNet widths (default: the device's budget)")
    parser.add_argument("--batch-size", type=int, help="the recipe's batch size (default: the device's budget)")
    parser.add_argument("--lr", type=float, help="the recipe's peak learning rate (default: the device's budget)")
    parser.add_argument("--compile", action="store_true", help="torch.compile both models (warm-up not timed)")
    parser.add_argument("--only", choices=["baseline", "recipe"], help="run only one of the two")
    parser.add_argument("--device", help="cpu, cuda, mps (default: the best available)")
    parser.add_argument("--train-images", type=int, help="train on N random images only (a quick check)")
    args = parser.parse_args(argv)

    device = helpers.setup(seed=0, device=args.device, verbose=False)
    budget = dict(vision.BUDGETS["gpu" if device.type == "cuda" else "cpu"])
    for key, value in (("epochs", args.epochs), ("widths", args.widths), ("batch_size", args.batch_size), ("lr", args.lr)):
        if value is not None:
            budget[key] = tuple(value) if key == "widths" else value
    print(f"device: {describe_device(device)} | torch {torch.__version__}")

    start = time.perf_counter()
    train, test = helpers.data.cifar10(train=True), helpers.data.cifar10(train=False)
    train_images, train_labels = (t.to(device) for t in helpers.data.as_tensors(train))
    test_images, test_labels = (t.to(device) for t in helpers.data.as_tensors(test))
    if args.train_images:
        keep = torch.randperm(len(train_images), generator=torch.Generator().manual_seed(0))[:args.train_images]
        train_images, train_labels = train_images[keep.to(device)], train_labels[keep.to(device)]
    mean, std = vision.channel_stats(train_images)
    print(f"data: {len(train_images):,} train / {len(test_images):,} test images, loaded in {time.perf_counter() - start:.0f} s")
    data = dict(train_images=train_images, train_labels=train_labels, test_images=test_images,
                test_labels=test_labels, mean=mean, std=std, device=device)

    runs = {"baseline": {**vision.BASELINE, "epochs": budget["epochs"]}, "recipe": budget}
    if args.only:
        runs = {args.only: runs[args.only]}
    rows = []
    for name, config in runs.items():
        print(f"\n{name}: {config}")
        results = []
        for seed in args.seeds:
            r = vision.train_recipe(config, **data, seed=seed, compile=args.compile, progress=False)
            r["to85"], r["to94"] = time_to(r["history"], 0.85), time_to(r["history"], 0.94)
            results.append(r)
            print(f"  seed {seed}: test accuracy {r['test_accuracy']:.4f} (no TTA {r['test_accuracy_no_tta']:.4f}), "
                  f"per epoch {[round(a, 4) for a in r['history']['val_accuracy']]}, "
                  f"{r['train_seconds']:.1f} s, {r['images_per_second']:,.0f} images/s"
                  + (f", compile {r['compile_seconds']:.0f} s" if args.compile else ""), flush=True)
        rows.append((name, {key: median([r[key] for r in results]) for key in
                            ("test_accuracy", "train_seconds", "images_per_second", "to85", "to94")}))

    print(f"\nCIFAR-10, {describe_device(device)}, {budget['epochs']} epochs, "
          f"median over {len(args.seeds)} seed(s) {args.seeds}")
    print(f"{'run':10s} {'test acc':>9s} {'train s':>9s} {'images/s':>9s} {'s to 85%':>9s} {'s to 94%':>9s}")
    for name, m in rows:
        print(f"{name:10s} {m['test_accuracy']:9.4f} {m['train_seconds']:9.1f} {m['images_per_second']:9,.0f} "
              f"{show(m['to85'], '.1f'):>9s} {show(m['to94'], '.1f'):>9s}")


if __name__ == "__main__":
    main()
