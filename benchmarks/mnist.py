"""Chapter 02's recipe on MNIST, fed two ways: time to 99.0% validation accuracy, final test
accuracy and training throughput, for the torchvision DataLoader pipeline and the tensor pipeline
(the whole split on the device, batches by indexing). Prints the median over seeds and the device.

    python benchmarks/mnist.py                       # 3 seeds x 2 pipelines, the chapter's 5 epochs
    python benchmarks/mnist.py --seeds 0 --paths tensor --epochs 3

The recipe is the notebook's: ConvNet (16-32-64 channels, channels_last), trained on the 55,000
training images left after holding out the chapter's 5,000 validation images, AdamW (weight decay
0.01) with a one-cycle schedule (max_lr 1e-2, stepped every batch), batch size 128. Validation
accuracy (the chapter's 5,000 held-out images) is measured every half epoch; "time to 99%" is the
training time (evaluation excluded) until the first measurement at or above 99.0%. The test set is
read once per trained model, at the end.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
from torch.utils.data import DataLoader, Subset
from torchvision.transforms import v2

import helpers
from helpers.loader import TensorLoader

BATCH, MAX_LR, N_VAL, TARGET = 128, 1e-2, 5_000, 0.99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument(
        "--paths", nargs="+", default=["dataloader", "tensor"], choices=["dataloader", "tensor"]
    )
    parser.add_argument(
        "--workers", type=int, default=0, help="DataLoader worker processes (default 0)"
    )
    parser.add_argument(
        "--contiguous", action="store_true", help="keep the NCHW layout instead of channels_last"
    )
    args = parser.parse_args()

    device = helpers.device.get_device()
    print(
        f"device: {helpers.device.describe_device(device)} | {cpu_model()} | "
        f"torch {torch.__version__}"
    )
    train_set, test_set = helpers.data.mnist(train=True), helpers.data.mnist(train=False)
    split = torch.randperm(
        len(train_set), generator=torch.Generator().manual_seed(0)
    )  # the chapter's split
    train_idx, val_idx = split[N_VAL:], split[:N_VAL]
    pixels = train_set.data[train_idx].float() / 255
    mean, std = pixels.mean().item(), pixels.std().item()
    del pixels

    images, labels = helpers.data.as_tensors(train_set)
    x_train, y_train = images[train_idx].to(device), labels[train_idx].to(device)
    x_val, y_val = images[val_idx].to(device), labels[val_idx].to(device)
    x_test, y_test = (t.to(device) for t in helpers.data.as_tensors(test_set))

    def normalize(x):
        return (x.float() / 255 - mean) / std

    val_loader = TensorLoader(x_val, y_val, batch_size=1000, transform=normalize)
    test_loader = TensorLoader(x_test, y_test, batch_size=1000, transform=normalize)
    transform = v2.Compose(
        [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize((mean,), (std,))]
    )
    image_set = Subset(helpers.data.mnist(train=True, transform=transform), train_idx.tolist())
    memory_format = torch.contiguous_format if args.contiguous else torch.channels_last

    def train_loader(path):
        if path == "tensor":
            return TensorLoader(
                x_train,
                y_train,
                batch_size=BATCH,
                shuffle=True,
                drop_last=True,
                transform=normalize,
            )
        return DataLoader(
            image_set,
            batch_size=BATCH,
            shuffle=True,
            drop_last=True,
            num_workers=args.workers,
            pin_memory=device.type == "cuda",
            persistent_workers=args.workers > 0,
        )

    results = {path: [] for path in args.paths}
    start_all = time.perf_counter()
    for seed in args.seeds:
        for path in args.paths:
            helpers.env.seed_everything(seed)
            model = helpers.models.ConvNet().to(device, memory_format=memory_format)
            loader = train_loader(path)
            steps = args.epochs * len(loader)
            optimizer = torch.optim.AdamW(model.parameters(), lr=MAX_LR, weight_decay=0.01)
            scheduler = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=MAX_LR, total_steps=steps, pct_start=0.25
            )
            history = helpers.train.fit(
                model,
                loader,
                optimizer,
                steps=steps,
                val_loader=val_loader,
                scheduler=scheduler,
                eval_every=len(loader) // 2,
                progress=False,
            )
            reached = [
                s for s, a in zip(history["seconds"], history["val_accuracy"]) if a >= TARGET
            ]
            run = {
                "to_99": reached[0] if reached else float("nan"),
                "accuracy": helpers.train.evaluate(model, test_loader)["accuracy"],
                "images_per_second": steps * BATCH / history["seconds"][-1],
                "seconds": history["seconds"][-1],
            }
            results[path].append(run)
            print(
                f"seed {seed} {path:<10}: {run['to_99']:6.1f} s to {TARGET:.1%} validation "
                f"accuracy, final test "
                f"accuracy {run['accuracy']:.4f}, {run['images_per_second']:,.0f} images/s, "
                f"{run['seconds']:.1f} s training",
                flush=True,
            )

    workers = f", {args.workers} workers" if "dataloader" in args.paths else ""
    print(
        f"\nmedian of {len(args.seeds)} seeds, {args.epochs} epochs, batch {BATCH}, "
        f"{'NCHW' if args.contiguous else 'channels_last'}{workers}, "
        f"on {helpers.device.describe_device(device)}:"
    )
    print(f"{'pipeline':<12} {'s to 99%':>9} {'test acc':>9} {'images/s':>9} {'train s':>8}")
    print(f"{'':<12} {'(val)':>9}")
    for path, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(
            f"{path:<12} {med['to_99']:>9.1f} {med['accuracy']:>9.4f} "
            f"{med['images_per_second']:>9,.0f} {med['seconds']:>8.1f}"
        )
    print(
        f"total wall time {time.perf_counter() - start_all:.0f} s "
        f"({os.cpu_count()} CPU cores visible)"
    )


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what the platform module knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()
