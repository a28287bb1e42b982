"""Training-step time in each number format, on the device it runs on: the evidence behind
``helpers.precision.choose``.

For chapter 02's ConvNet (MNIST-sized batches) and chapter 04's character GPT (its "cpu" recipe
shape), the median time of a training step in float32 and under bf16 autocast (and fp16 autocast
with a GradScaler on CUDA), after warm-up steps. Prints the device, the times, the speed-up
over float32 and the format the course's policy picks.

    python benchmarks/precision.py
    python benchmarks/precision.py --steps 20 --device cpu
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import helpers


def step_times(model, batch, precision, steps: int, warmup: int = 3) -> float:
    """Median milliseconds of a training step (forward, backward, AdamW) under ``precision``."""
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = precision.grad_scaler()
    times = []
    for i in range(warmup + steps):
        helpers.device.sync(device)
        start = time.perf_counter()
        helpers.train.train_step(model, *batch, loss_fn=helpers.train.cross_entropy,
                                 optimizer=optimizer, scaler=scaler, policy=precision)  # fmt: skip
        helpers.device.sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def workloads(device):
    """(name, model factory, batch) for the two chapters' models."""
    g = torch.Generator().manual_seed(0)
    images = torch.randn(256, 1, 28, 28, generator=g).to(device)
    digits = torch.randint(0, 10, (256,), generator=g).to(device)
    recipe = helpers.recipes.GPT_RECIPES["cpu"]
    tokens = torch.randint(0, 65, (recipe.batch_size, recipe.block_size + 1), generator=g).to(
        device
    )

    def gpt():
        return helpers.gpt.GPT(recipe.model_config(vocab_size=65))

    return [
        ("ConvNet, batch 256", helpers.models.ConvNet, (images, digits)),
        (f"char GPT, batch {recipe.batch_size}", gpt, (tokens[:, :-1], tokens[:, 1:])),
    ]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per format (default 10)")
    parser.add_argument("--device", help="cpu, cuda, mps (default: the best available)")
    args = parser.parse_args(argv)
    device = helpers.device.get_device(args.device)
    formats = ["fp32", "bf16"] + (["fp16"] if device.type == "cuda" else [])
    if device.type == "mps":
        formats = ["fp32"]
    policy = helpers.precision.choose(device)
    print(f"device: {helpers.device.describe_device(device)} | torch {torch.__version__}")
    print(f"policy: {policy}\n")
    print(
        f"{'workload':22s} "
        + " ".join(f"{f + ' ms':>10s}" for f in formats)
        + "   speed-up over fp32"
    )
    for name, factory, batch in workloads(device):
        ms = {}
        for name_format in formats:
            torch.manual_seed(0)
            precision = helpers.precision.choose(device, name_format)
            ms[name_format] = step_times(factory().to(device), batch, precision, args.steps)
        speedups = ", ".join(f"{f} {ms['fp32'] / ms[f]:.2f}x" for f in formats[1:])
        print(f"{name:22s} " + " ".join(f"{ms[f]:10.1f}" for f in formats) + f"   {speedups}")


if __name__ == "__main__":
    main()
