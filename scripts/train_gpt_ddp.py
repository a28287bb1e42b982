"""Train the course's character GPT data-parallel on any number of processes: DDP or FSDP2.

Start it with torchrun (chapter 07 explains every part):

    torchrun --standalone --nproc_per_node=2 scripts/train_gpt_ddp.py --steps 200
    torchrun --standalone --nproc_per_node=2 scripts/train_gpt_ddp.py --strategy fsdp

gloo on the CPU, NCCL on CUDA GPUs (one process per GPU). Each process reads its own share of
every global batch; gradients are averaged across processes (DDP: all-reduce; FSDP2: every
parameter sharded, reduce-scatter). Rank 0 logs and writes ``OUT/result.json`` and an atomic
checkpoint ``OUT/model.pt`` (loadable with ``helpers.gpt.load_gpt``). ``--save-at K`` writes a
sharded checkpoint (``torch.distributed.checkpoint``) after step K, ``--resume`` continues from
one. ``--timeout`` bounds every collective, so a rank that dies or hangs ends the job.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import record

import helpers


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--strategy", choices=helpers.distributed.STRATEGIES, default="ddp")
    add("--steps", type=int, default=200, help="optimizer steps in all (the schedule's length)")
    add("--batch-size", type=int, default=64, help="global batch: windows per optimizer step")
    add("--accum", type=int, default=1, help="micro-batches per optimizer step on each rank")
    add("--n-layer", type=int, default=4)
    add("--n-head", type=int, default=4)
    add("--n-embd", type=int, default=128)
    add("--block-size", type=int, default=64)
    add("--lr", type=float, default=3e-3)
    add("--seed", type=int, default=0)
    add("--text", type=Path, default=None, help="a text file (default: Tiny Shakespeare)")
    add("--out", type=Path, default=Path("runs/gpt_ddp"), help="folder for rank 0's outputs")
    add("--save-at", type=int, default=None, help="write a sharded checkpoint after this step")
    add("--resume", type=Path, default=None, help="a sharded checkpoint folder to continue from")
    add("--timeout", type=float, default=60.0, help="seconds a collective may wait for a rank")
    add("--threads", type=int, default=None, help="CPU threads per process")
    add("--device", choices=("cuda", "cpu"), default=None, help="default: cuda if available")
    add("--log-every", type=int, default=50)
    add("--fail-at", type=int, default=None, help="demo: make --fail-rank fail at this step")
    add("--fail-rank", type=int, default=1)
    add("--fail-mode", choices=("raise", "hang"), default="raise")
    return parser.parse_args(argv)


def load_windows(args):
    """The tokenizer and the training windows (x, y): the first 90% of the text, as chapter 04."""
    text = args.text.read_text(encoding="utf-8") if args.text else helpers.data.tiny_shakespeare()
    tokenizer = helpers.tokenizer.CharTokenizer.from_text(text)
    data = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    train = data[: helpers.shakespeare.pretraining_split(text)]
    return tokenizer, helpers.loader.split_windows(train, args.block_size)


def build(args, vocab_size: int, device):
    """Recipe, the wrapped model, its optimizer and schedule (chapter 04's recipe, resized)."""
    recipe = helpers.recipes.GPT_RECIPES["cpu"].replace(
        n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd,
        block_size=args.block_size, batch_size=args.batch_size, lr=args.lr, steps=args.steps,
    )  # fmt: skip
    config = recipe.model_config(vocab_size)
    torch.manual_seed(args.seed)  # the same initial weights on every rank
    model = helpers.gpt.GPT(config).to(device)
    policy = helpers.precision.choose(device)
    fsdp_bf16 = args.strategy == "fsdp" and policy.name == "bf16"
    model = helpers.distributed.wrap(model, args.strategy, device, mixed_bf16=fsdp_bf16)
    if args.strategy == "fsdp" and policy.name != "fp32":
        policy = helpers.precision.choose(device, "fp32")  # FSDP casts itself (or fp32 on fp16)
    optimizer, scheduler = recipe.make_optimizer(model, args.steps)
    return recipe, config, model, optimizer, scheduler, policy


def train_step(model, batch, optimizer, scheduler, scaler, policy, args):
    """One optimizer step over this rank's share, in ``args.accum`` micro-batches."""
    x, y = batch
    total = torch.zeros((), device=x.device)
    for i, (xm, ym) in enumerate(zip(x.chunk(args.accum), y.chunk(args.accum))):
        last = i == args.accum - 1
        if args.strategy == "fsdp":
            model.set_requires_gradient_sync(last)  # reduce-scatter on the last one only
        context = model.no_sync() if args.strategy == "ddp" and not last else nullcontext()
        with context, policy.autocast():
            loss = helpers.train.cross_entropy(model(xm), ym) / args.accum
        scaler.scale(loss).backward()
        total += loss.detach()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    dist.all_reduce(total)  # the global batch's mean loss, for the log
    return total.item() / dist.get_world_size()


def maybe_fail(args, rank: int, step: int) -> None:
    """The failure demo: one rank raises (or stops answering) at step ``--fail-at``."""
    if args.fail_at != step or rank != args.fail_rank:
        return
    if args.fail_mode == "hang":
        print(f"rank {rank}: hanging at step {step} (--fail-mode hang)", flush=True)
        time.sleep(10 * args.timeout + 60)
    raise RuntimeError(f"rank {rank}: injected failure at step {step} (--fail-at {step})")


def write_json(path: Path, record: dict) -> None:
    """Write JSON atomically (a temporary file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps(record, indent=1))
    os.replace(temp, path)


def save_outputs(args, model, optimizer, scheduler, config, tokenizer, summary, rank):
    """Rank 0 writes result.json and an atomic full checkpoint (the model gathered if sharded)."""
    state = helpers.distributed.full_state_dict(model)  # a collective: every rank calls it
    if rank != 0:
        return
    plain = helpers.gpt.GPT(config)
    plain.load_state_dict(state)
    keep = (optimizer, scheduler) if args.strategy == "ddp" else (None, None)
    helpers.checkpoint.save_checkpoint(
        args.out / "model.pt", plain, *keep, config=config.to_dict(),
        tokenizer=tokenizer.chars, step=args.steps, strategy=args.strategy,
    )  # fmt: skip
    write_json(args.out / "result.json", summary)


def run(args) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    rank, world, device = helpers.distributed.init(args.timeout, args.device)
    tokenizer, (xs, ys) = load_windows(args)
    xs, ys = xs.to(device), ys.to(device)  # a few MB: copied once, indexed on the device each step
    recipe, config, model, optimizer, scheduler, policy = build(args, tokenizer.vocab_size, device)
    start = 0
    if args.resume:
        extra = {"step": 0, "scheduler": ""}
        extra = helpers.distributed.load_sharded(args.resume, model, optimizer, extra)
        scheduler.load_state_dict(json.loads(extra["scheduler"]))
        start = int(extra["step"])
    shares, shapes = [None] * world, [None] * world
    dist.all_gather_object(shares, helpers.distributed.local_numel(model))
    dist.all_gather_object(shapes, helpers.distributed.local_shapes(model))
    if rank == 0:
        print(f"{world} process(es), {dist.get_backend()} on {device}, {args.strategy}, "
              f"{helpers.distributed.unwrap(model).num_parameters():,} parameters "
              f"(per rank: {shares}), global batch {args.batch_size}, steps {start + 1}-"
              f"{args.steps}, precision {policy.name}", flush=True)  # fmt: skip
    batches = helpers.distributed.shard_batches(
        len(xs), args.batch_size, rank, world, seed=args.seed, start_step=start
    )
    scaler = policy.grad_scaler()
    losses, seconds = [], []
    for step in range(start + 1, args.steps + 1):
        maybe_fail(args, rank, step)
        index = next(batches)
        tick = time.perf_counter()
        batch = (xs[index], ys[index])
        losses.append(train_step(model, batch, optimizer, scheduler, scaler, policy, args))
        seconds.append(time.perf_counter() - tick)  # .item() in train_step waited for the device
        if rank == 0 and (step % args.log_every == 0 or step == args.steps):
            print(f"step {step:5d}  loss {losses[-1]:.4f}  {sum(seconds):.1f} s", flush=True)
        if args.save_at == step:
            extra = {"step": step, "scheduler": json.dumps(scheduler.state_dict())}
            helpers.distributed.save_sharded(args.out / "sharded", model, optimizer, extra)
    timed = seconds[1:] or seconds  # the first step pays one-time costs
    summary = {
        "strategy": args.strategy, "world_size": world, "backend": dist.get_backend(),
        "device": str(device), "first_step": start + 1, "losses": losses,
        "seconds": sum(seconds), "tokens_per_second":
            len(timed) * args.batch_size * args.block_size / sum(timed),
        "parameters_per_rank": shares, "shapes_per_rank": shapes,
        "threads": torch.get_num_threads(),
    }  # fmt: skip
    save_outputs(args, model, optimizer, scheduler, config, tokenizer, summary, rank)


@record  # torchrun then reports the failing rank's traceback in its summary
def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        run(args)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
