"""Chapter 04's character-level GPT trained for a fixed wall-clock budget: the validation and test
losses it reaches and its training throughput (tokens/s), on the device it runs on.

    python benchmarks/char_gpt.py                    # the device's recipe, 300 s of training
    python benchmarks/char_gpt.py --seconds 60 --recipe cpu

The recipe is the notebook's (helpers.recipes.GPT_RECIPES: "gpu" on CUDA, "cpu" elsewhere):
AdamW with weight decay on matrices only, warmup + cosine, gradient clipping, the course's
precision policy (helpers.precision) and torch.compile on CUDA only (chapter 04's rule). A few
calibration steps on a throwaway model measure the time per step; the run then gets as many steps
as fit the budget (its schedule spans exactly those steps), so the learning rate reaches the end
of its cosine when the time is up. Training time excludes evaluation. The text is split as in
chapter 04 (helpers.shakespeare): the first 90% trains, 90-95% validates (the curve, and the
final validation loss), 95-100% is the test text, read once by the final model. Losses are
measured on every character of their text, in windows of the context length.
"""

from __future__ import annotations

import argparse
import time

import torch

import helpers
from helpers import gpt, loader, recipes, shakespeare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seconds", type=float, default=300.0, help="training budget (default 300)"
    )
    parser.add_argument("--recipe", choices=sorted(recipes.GPT_RECIPES), help="default: by device")
    parser.add_argument("--calibration-steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    device = helpers.device.get_device()
    policy = helpers.precision.choose(device)
    print(
        f"device: {helpers.device.describe_device(device)} | precision {policy} | "
        f"torch {torch.__version__}"
    )
    recipe = recipes.GPT_RECIPES[args.recipe] if args.recipe else recipes.gpt_recipe(device)
    use_compile = device.type == "cuda"  # chapter 04's rule: CPU timings are too noisy to decide

    text = helpers.data.tiny_shakespeare()
    tokenizer = helpers.tokenizer.CharTokenizer.from_text(text)
    data = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    cut, test_cut = shakespeare.pretraining_split(text), shakespeare.test_split(text)
    train_data, val_data = data[:cut].to(device), data[cut:test_cut].to(device)
    test_data = data[test_cut:].to(device)
    config = recipe.model_config(tokenizer.vocab_size)

    def build(seed):
        torch.manual_seed(seed)
        model = gpt.GPT(config).to(device)
        return model, (torch.compile(model) if use_compile else model)

    def stream(seed):
        generator = torch.Generator().manual_seed(seed)
        return loader.random_windows(train_data, config.block_size, recipe.batch_size, generator)

    def train(net, batches, optimizer, scheduler, steps, **kwargs):
        return helpers.train.fit(
            net,
            batches,
            optimizer,
            steps=steps,
            scheduler=scheduler,
            grad_clip=recipe.grad_clip,
            precision=policy,
            progress=False,
            **kwargs,
        )

    # calibration: time per step on a throwaway model (after its first steps: one-off costs)
    _, net = build(args.seed + 1)
    optimizer, scheduler = recipe.make_optimizer(net, total_steps=10_000)
    calibration = stream(98)
    warm = train(net, calibration, optimizer, scheduler, 3)
    timed = train(net, calibration, optimizer, scheduler, args.calibration_steps)
    step_seconds = timed["seconds"][-1] / args.calibration_steps
    one_off = max(0.0, warm["seconds"][-1] - 3 * step_seconds)  # compilation, on a fresh model
    steps = max(20, int((args.seconds - one_off) / step_seconds))
    print(
        f"recipe {recipe.name}: {config} | batch {recipe.batch_size} | "
        f"calibrated {step_seconds * 1000:.0f} ms/step -> {steps} steps for {args.seconds:.0f} s"
    )

    model, net = build(args.seed)
    optimizer, scheduler = recipe.make_optimizer(net, total_steps=steps)
    windows = loader.split_windows(val_data, config.block_size, every=4)
    val_loader = loader.TensorLoader(*windows, batch_size=64)
    start = time.perf_counter()
    history = train(
        net,
        stream(args.seed + 1),
        optimizer,
        scheduler,
        steps,
        val_loader=val_loader,
        eval_every=max(1, steps // 5),
    )
    wall = time.perf_counter() - start

    def loss_on(tokens):
        windows = loader.split_windows(tokens, config.block_size)
        batches = loader.TensorLoader(*windows, batch_size=64)
        return helpers.train.evaluate(net, batches, precision=policy)["loss"]

    val_loss = loss_on(val_data)
    test_loss = loss_on(test_data)  # once, by the final model

    rows = zip(history["step"], history["seconds"], history["train_loss"], history["val_loss"])
    for step, seconds, train_loss, loss in rows:
        print(
            f"  step {step:5d}  {seconds:6.1f} s  train loss {train_loss:.4f}  "
            f"val loss (every 4th window) {loss:.4f}"
        )
    train_seconds = history["seconds"][-1]
    tokens = steps * recipe.batch_size * config.block_size
    print(
        f"parameters {model.num_parameters():,} | {steps} steps, {tokens:,} tokens in "
        f"{train_seconds:.1f} s of training ({wall:.1f} s with evaluation)"
    )
    print(
        f"tokens/s {tokens / train_seconds:,.0f} | validation loss (whole validation text) "
        f"{val_loss:.4f} | test loss (whole test text, read once) {test_loss:.4f}"
    )


if __name__ == "__main__":
    main()
