"""Chapter 07: what activation checkpointing costs, and what 2 processes buy, on this machine.

    python benchmarks/scaling.py            # about 3 minutes on a 2-core CPU
    python benchmarks/scaling.py --steps 80 --repeats 21

1. Forward + backward of chapter 04's GPT (cpu recipe, batch 64) with and without activation
   checkpointing of its blocks: median time and peak memory (profiler on the CPU,
   ``torch.cuda.max_memory_allocated`` on a GPU).
2. The training program ``helpers.train_gpt_ddp`` under torchrun: training tokens per second for
   1 process (1 and 2 threads) and 2 processes (DDP and FSDP2, 1 thread each), on the CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

import helpers


def checkpointing(device, repeats: int) -> list[dict]:
    torch.manual_seed(0)
    recipe = helpers.recipes.GPT_RECIPES["cpu"]
    config = recipe.model_config(65)
    model = helpers.gpt.GPT(config).to(device)
    x = torch.randint(65, (recipe.batch_size, config.block_size), device=device)

    def step():
        helpers.train.cross_entropy(model(x), x).backward()

    rows = []
    for enabled in (False, True):
        helpers.memory.checkpoint_blocks(model, enabled=enabled)
        step()  # warm-up
        times = []
        for _ in range(repeats):
            model.zero_grad(set_to_none=True)
            helpers.device.sync(device)
            start = time.perf_counter()
            step()
            helpers.device.sync(device)
            times.append(time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
        peak = helpers.memory.peak_bytes(step, device)[1]
        rows.append({"checkpointing": enabled, "median_ms": 1000 * statistics.median(times),
                     "peak_mib": peak / 2**20})  # fmt: skip
    return rows


def throughput(steps: int) -> list[dict]:
    size = ["--steps", str(steps), "--batch-size", "64", "--log-every", str(steps),
            "--device", "cpu"]  # fmt: skip
    runs = [("ddp", 1, 1), ("ddp", 1, 2), ("ddp", 2, 1), ("fsdp", 2, 1)]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for strategy, nproc, threads in runs:
            out = Path(folder) / f"{strategy}{nproc}{threads}"
            args = [*size, "--strategy", strategy, "--out", out]
            run = helpers.distributed.launch(args=args, nproc=nproc, threads=threads,
                                             timeout_s=900)  # fmt: skip
            if run.returncode:
                raise RuntimeError(run.stdout[-3000:])
            record = json.loads((out / "result.json").read_text())
            rows.append({"strategy": strategy, "processes": nproc, "threads": threads,
                         "tokens_per_second": record["tokens_per_second"]})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=11)
    args = parser.parse_args()
    device = helpers.device.get_device()
    device = device if device.type == "cuda" else torch.device("cpu")
    print(f"device: {helpers.device.describe_device(device)}, torch {torch.__version__}")
    print("| activation checkpointing | median ms per forward + backward | peak MiB |")
    print("|---|---|---|")
    for row in checkpointing(device, args.repeats):
        print(f"| {'on' if row['checkpointing'] else 'off'} | {row['median_ms']:.1f} "
              f"| {row['peak_mib']:.1f} |")  # fmt: skip
    print(f"\n| torchrun (CPU, gloo, {args.steps} steps) | processes x threads | tokens/s |")
    print("|---|---|---|")
    for row in throughput(args.steps):
        print(f"| {row['strategy']} | {row['processes']} x {row['threads']} "
              f"| {row['tokens_per_second']:,.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
