"""Chapter 06's speaker task: five fine-tuning strategies at one budget, on the device it runs on.

    python benchmarks/finetune_gpt.py                  # 3 seeds, 300 steps of 32 speeches
    python benchmarks/finetune_gpt.py --seeds 0 --steps 60

Starts from chapter 04's checkpoint (trained first with chapter 04's recipe when it is missing).
Each strategy (helpers.classify.STRATEGIES) trains for the same steps with its learning rate
(the defaults are the ones the chapter's notebook chose on validation data; --lr overrides them)
and reads the test split once per model. Prints, per strategy: the median test accuracy and its
range over the seeds, the trainable parameters, the training seconds (median), the tokens per
second of training (padded tokens: every batch is 32 x block_size) and the bytes of what must be
saved.
"""

from __future__ import annotations

import argparse
import statistics

import torch

import helpers

LRS = {"scratch": 1e-3, "head": 3e-3, "last_block": 1e-3, "full": 3e-4, "lora": 1e-3}


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
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--strategies", nargs="+", default=list(helpers.classify.STRATEGIES))
    parser.add_argument("--lr", type=float, help="one learning rate for every strategy")
    args = parser.parse_args()

    device = helpers.device.get_device()
    print(
        f"device: {helpers.device.describe_device(device)} | precision "
        f"{helpers.precision.choose(device)} | torch {torch.__version__}"
    )
    base, tokenizer, _ = helpers.shakespeare.load_char_gpt(device, progress=False)
    text = helpers.data.tiny_shakespeare()
    task = helpers.classify.speaker_task(text, tokenizer, base.config.block_size, k=4)
    print(
        f"speakers {task.speakers}; {len(task.y['train'])} train / {len(task.y['test'])} test "
        f"speeches; majority baseline {task.majority_baseline('test'):.3f}; {args.steps} steps "
        f"of 32; seeds {args.seeds}"
    )
    header = f"{'strategy':11} {'lr':>7} {'test acc. median [min, max]':>28} {'trainable':>10} "
    print(header + f"{'seconds':>8} {'tokens/s':>9} {'saved bytes':>12}")
    for strategy in args.strategies:
        lr = args.lr or LRS[strategy]
        rows = [run(strategy, base, task, lr, args.steps, s, device) for s in args.seeds]
        acc = [r["accuracy"] for r in rows]
        spread = f"{statistics.median(acc):.3f} [{min(acc):.3f}, {max(acc):.3f}]"
        seconds = statistics.median(r["seconds"] for r in rows)
        speed = statistics.median(r["tokens_per_second"] for r in rows)
        print(
            f"{strategy:11} {lr:7g} {spread:>28} {rows[0]['params']:10,} {seconds:8.1f} "
            f"{speed:9,.0f} {rows[0]['bytes']:12,}"
        )


if __name__ == "__main__":
    main()
