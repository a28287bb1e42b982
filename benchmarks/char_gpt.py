"""Chapter 04's character-level GPT trained for a fixed wall-clock budget: the validation loss it
reaches and its training throughput (tokens/s), on the device it runs on.

    python benchmarks/char_gpt.py                    # the device's recipe, 300 s of training
    python benchmarks/char_gpt.py --seconds 60 --recipe cpu

The recipe is the notebook's (helpers.gpt.RECIPES: "gpu" on CUDA, "cpu" elsewhere): AdamW with
weight decay on matrices only, warmup + cosine, gradient clipping, bf16 autocast and torch.compile
on CUDA. A few calibration steps on a throwaway model measure the time per step; the run then gets
as many steps as fit the budget (its schedule spans exactly those steps), so the learning rate
reaches the end of its cosine when the time is up. Training time excludes evaluation. The
validation loss is measured on every character of the validation text (the last 10%), in windows
of the context length.
"""

from __future__ import annotations

import argparse
import time

import torch

import helpers
from helpers import gpt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="training budget in seconds (default 300)")
    parser.add_argument("--recipe", choices=sorted(gpt.RECIPES), help="default: gpu on CUDA, cpu elsewhere")
    parser.add_argument("--calibration-steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    device = helpers.get_device()
    print(f"device: {helpers.env.describe_device(device)} | torch {torch.__version__}")
    recipe = {"name": args.recipe, **gpt.RECIPES[args.recipe]} if args.recipe else gpt.recipe_for(device)
    cuda = device.type == "cuda"
    amp = cuda and torch.cuda.is_bf16_supported()  # bf16 did not pay on the CPUs we measured
    use_compile = cuda  # compiling paid nothing on 2 CPU cores; on GPUs it fuses kernels

    text = helpers.data.tiny_shakespeare()
    tokenizer = gpt.CharTokenizer.from_text(text)
    data = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    n_train = int(0.9 * len(data))
    train_data, val_data = data[:n_train].to(device), data[n_train:].to(device)
    config = gpt.model_config(recipe, tokenizer.vocab_size)

    def build(seed):
        torch.manual_seed(seed)
        model = gpt.GPT(config).to(device)
        return model, (torch.compile(model) if use_compile else model)

    # calibration: time per step on a throwaway model (after its first steps, which pay one-off costs)
    _, net = build(args.seed + 1)
    optimizer, scheduler = gpt.make_optimizer(net, recipe, total_steps=10_000)
    def stream(seed):  # a fresh endless stream per fit() call (fit closes the generator it was given)
        return gpt.random_windows(train_data, config.block_size, recipe["batch_size"], torch.Generator().manual_seed(seed))

    warm = helpers.fit(net, stream(99), optimizer, steps=3, scheduler=scheduler, grad_clip=recipe["grad_clip"],
                       amp=amp, device=device, progress=False)
    timed = helpers.fit(net, stream(98), optimizer, steps=args.calibration_steps, scheduler=scheduler,
                        grad_clip=recipe["grad_clip"], amp=amp, device=device, progress=False)
    step_seconds = timed["seconds"][-1] / args.calibration_steps
    one_off = max(0.0, warm["seconds"][-1] - 3 * step_seconds)  # compilation, on a fresh model of the same shape
    steps = max(20, int((args.seconds - one_off) / step_seconds))
    print(f"recipe {recipe['name']}: {config} | batch {recipe['batch_size']} | "
          f"calibrated {step_seconds * 1000:.0f} ms/step -> {steps} steps for {args.seconds:.0f} s")

    model, net = build(args.seed)
    optimizer, scheduler = gpt.make_optimizer(net, recipe, total_steps=steps)
    val_loader = helpers.data.TensorLoader(*gpt.split_windows(val_data, config.block_size, every=4), batch_size=64)
    start = time.perf_counter()
    history = helpers.fit(net, stream(args.seed + 1), optimizer, steps=steps, scheduler=scheduler, val_loader=val_loader,
                          eval_every=max(1, steps // 5), grad_clip=recipe["grad_clip"], amp=amp, device=device,
                          progress=False)
    wall = time.perf_counter() - start
    full_val = helpers.data.TensorLoader(*gpt.split_windows(val_data, config.block_size), batch_size=64)
    val_loss = helpers.evaluate(net, full_val, amp=amp)["loss"]

    for step, seconds, train_loss, loss in zip(history["step"], history["seconds"], history["train_loss"], history["val_loss"]):
        print(f"  step {step:5d}  {seconds:6.1f} s  train loss {train_loss:.4f}  val loss (every 4th window) {loss:.4f}")
    train_seconds = history["seconds"][-1]
    tokens = steps * recipe["batch_size"] * config.block_size
    print(f"parameters {model.num_parameters():,} | {steps} steps, {tokens:,} tokens in {train_seconds:.1f} s of training "
          f"({wall:.1f} s with evaluation)")
    print(f"tokens/s {tokens / train_seconds:,.0f} | validation loss (whole validation text) {val_loss:.4f}")


if __name__ == "__main__":
    main()
