"""Chapter 06's real-or-shuffled task: fine-tuning strategies with all labels, on this device.

    python benchmarks/finetune_gpt.py                  # 3 seeds, 120 steps of 32 windows
    python benchmarks/finetune_gpt.py --seeds 0 --steps 60

Starts from chapter 06's base model (trained first when its checkpoint is missing, about 13
minutes on 2 CPU cores). Each strategy (helpers.classify.STRATEGIES) trains for the same steps with
its learning rate (the defaults are the ones the chapter's notebook chose on validation data;
--lr overrides them) and reads the test windows once per model. Prints, per strategy: the mean
test accuracy and its standard error over the seeds, the trainable parameters, the training
seconds (median), the tokens per second of training (every batch is 32 x block_size) and the
bytes of what must be saved.
"""

from __future__ import annotations

import argparse
import statistics

import torch

import helpers

LRS = {"scratch": 1e-3, "head": 3e-2, "full": 3e-4, "lora": 3e-3}  # chapter 06's choices


def run(strategy, base, task, lr, steps, seed, device) -> dict:
    train = tuple(t.to(device) for t in (task.x["train"], task.y["train"]))
    test = helpers.loader.TensorLoader(
        task.x["test"].to(device), task.y["test"].to(device), batch_size=256
    )
    lora = {"r": 8, "alpha": 16.0} if strategy == "lora" else {}
    model, history = helpers.classify.train_classifier(
        strategy, base, *train, lr=lr, steps=steps, seed=seed, **lora
    )
    seconds = history["seconds"][-1]
    return {
        "accuracy": helpers.train.evaluate(model, test)["accuracy"],
        "seconds": seconds,
        "tokens_per_second": steps * 32 * task.x["train"].shape[1] / seconds,
        "params": helpers.summary.count_parameters(model),
        "bytes": helpers.classify.saved_bytes(model),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--strategies", nargs="+", default=["scratch", "head", "full", "lora"])
    parser.add_argument("--lr", type=float, help="one learning rate for every strategy")
    args = parser.parse_args()

    device = helpers.device.get_device()
    print(
        f"device: {helpers.device.describe_device(device)} | precision "
        f"{helpers.precision.choose(device)} | torch {torch.__version__}"
    )
    base, tokenizer, _ = helpers.pretrained.load_char_gpt(
        device, progress=False, **helpers.pretrained.BASE_MODEL
    )
    text = helpers.data.tiny_shakespeare()
    held = helpers.shakespeare.HELD_OUT_SPEAKERS
    task = helpers.classify.shuffled_task(text, tokenizer, held, width=base.config.block_size)
    print(
        f"real or shuffled, windows of {', '.join(held)}: {len(task.y['train'])} train / "
        f"{len(task.y['test'])} test; {args.steps} steps of 32; seeds {args.seeds}"
    )
    header = f"{'strategy':11} {'lr':>7} {'test accuracy mean ± SE':>24} {'trainable':>10} "
    print(header + f"{'seconds':>8} {'tokens/s':>9} {'saved bytes':>12}")
    for strategy in args.strategies:
        lr = args.lr or LRS.get(strategy)
        if lr is None:
            parser.error(f"chapter 06 chose no learning rate for {strategy!r}: pass --lr.")
        rows = [run(strategy, base, task, lr, args.steps, s, device) for s in args.seeds]
        acc = [r["accuracy"] for r in rows]
        se = statistics.stdev(acc) / len(acc) ** 0.5 if len(acc) > 1 else float("nan")
        spread = f"{statistics.mean(acc):.3f} ± {se:.3f}"
        seconds = statistics.median(r["seconds"] for r in rows)
        speed = statistics.median(r["tokens_per_second"] for r in rows)
        print(
            f"{strategy:11} {lr:7g} {spread:>24} {rows[0]['params']:10,} {seconds:8.1f} "
            f"{speed:9,.0f} {rows[0]['bytes']:12,}"
        )


if __name__ == "__main__":
    main()
