"""Train the course's character GPT data-parallel on any number of processes: DDP or FSDP2.

A module of the installed package, so it runs wherever ``helpers`` is installed (a clone, a
``pip install``, Colab). Start it with torchrun (chapter 07 explains every part):

    torchrun --standalone --nproc_per_node=2 -m helpers.train_gpt_ddp --steps 200
    torchrun --standalone --nproc_per_node=2 -m helpers.train_gpt_ddp --strategy fsdp

gloo on the CPU, NCCL on CUDA GPUs (one process per GPU). Each process reads its own share of
every global batch; gradients are averaged across processes (DDP: all-reduce; FSDP2: every
parameter sharded, reduce-scatter). ``--precision`` defaults to the device's policy
(``helpers.precision.choose``: bf16 on recent GPUs, float32 on CPUs); ``--precision fp32`` is
the check mode in which different process counts give the same model up to float32 rounding.
The loss is always computed on float32 logits. Rank 0 logs and writes ``OUT/result.json`` and
an atomic checkpoint ``OUT/model.pt`` (loadable with ``helpers.gpt.load_gpt``). ``--save-at K``
writes a sharded checkpoint (``torch.distributed.checkpoint``) after step K, ``--resume``
continues from one. ``--timeout`` (default 60 s) bounds every collective: a rank that dies or
stops answering makes the others' next collective fail instead of waiting.
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
from torch.distributed.elastic.multiprocessing.errors import ErrorHandler, record

from . import checkpoint, data, distributed, gpt, loader, precision, recipes, shakespeare, train
from .tokenizer import CharTokenizer


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m helpers.train_gpt_ddp",
                                     description=__doc__.split("\n")[0])  # fmt: skip
    add = parser.add_argument
    add("--strategy", choices=distributed.STRATEGIES, default="ddp")
    add("--precision", choices=sorted(precision.DTYPES), default=None,
        help="default: the device's policy; fp32 for equality checks")  # fmt: skip
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
    text = args.text.read_text(encoding="utf-8") if args.text else data.tiny_shakespeare()
    tokenizer = CharTokenizer.from_text(text)
    ids = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    train_ids = ids[: shakespeare.pretraining_split(text)]
    return tokenizer, loader.split_windows(train_ids, args.block_size)


def build(args, vocab_size: int, device):
    """Recipe, the wrapped model, its optimizer and schedule (chapter 04's recipe, resized).

    ``policy`` is the run's precision, ``autocast`` the one the forward pass runs under: the
    same for DDP; for FSDP2 the wrapper casts (bf16 parameters, float32 gradient reduction),
    so no autocast, and float32 instead of fp16 (which would need a sharded GradScaler).
    """
    recipe = recipes.GPT_RECIPES["cpu"].replace(
        n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd,
        block_size=args.block_size, batch_size=args.batch_size, lr=args.lr, steps=args.steps,
    )  # fmt: skip
    config = recipe.model_config(vocab_size)
    torch.manual_seed(args.seed)  # the same initial weights on every rank
    model = gpt.GPT(config).to(device)
    policy = precision.choose(device, args.precision)
    if args.strategy == "fsdp" and policy.name == "fp16":
        policy = precision.choose(device, "fp32")
    fsdp_bf16 = args.strategy == "fsdp" and policy.name == "bf16"
    model = distributed.wrap(model, args.strategy, device, mixed_bf16=fsdp_bf16)
    autocast = precision.choose(device, "fp32") if args.strategy == "fsdp" else policy
    optimizer, scheduler = recipe.make_optimizer(model, args.steps)
    return config, model, optimizer, scheduler, policy, autocast


def loss_of(model, x, y) -> torch.Tensor:
    """The mean cross-entropy, always on float32 logits (a bf16 log-softmax rounds the loss)."""
    return train.cross_entropy(model(x).float(), y)


def train_step(model, batch, optimizer, scheduler, scaler, autocast, args):
    """One optimizer step over this rank's share, in ``args.accum`` micro-batches."""
    x, y = batch
    total = torch.zeros((), device=x.device)
    for i, (xm, ym) in enumerate(zip(x.chunk(args.accum), y.chunk(args.accum))):
        last = i == args.accum - 1
        if args.strategy == "fsdp":
            model.set_requires_gradient_sync(last)  # reduce-scatter on the last one only
        context = model.no_sync() if args.strategy == "ddp" and not last else nullcontext()
        with context, autocast.autocast():
            loss = loss_of(model, xm, ym) / args.accum
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
    raise InjectedFailure(f"rank {rank}: injected failure at step {step} (--fail-at {step})")


class InjectedFailure(RuntimeError):
    """The failure demo's error (``--fail-at``)."""


class WholeErrorFile(ErrorHandler):
    """torchrun's per-rank error file, written whole or not at all.

    When one rank fails, the others fail a moment later (their collective loses its peer) and
    torchrun kills them; a rank killed while writing its error file would leave half a file, which
    torchrun cannot read (it crashes with a JSONDecodeError instead of printing its report). So
    the file is written beside its place and renamed into it. torchrun names the failure with
    the earliest time, to the second, the root cause: the demo's failing rank waits a second after
    writing, before its exit tells the others, so the failures it causes are dated after it.
    """

    def record_exception(self, e: BaseException) -> None:
        path = self._get_error_file_path()
        if not path:
            return super().record_exception(e)
        os.environ["TORCHELASTIC_ERROR_FILE"] = path + ".partial"
        try:
            super().record_exception(e)
        finally:
            os.environ["TORCHELASTIC_ERROR_FILE"] = path
        os.replace(path + ".partial", path)
        if isinstance(e, InjectedFailure):
            time.sleep(1.1)


def write_json(path: Path, record: dict) -> None:
    """Write JSON atomically (a temporary file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps(record, indent=1))
    os.replace(temp, path)


def save_outputs(args, model, optimizer, scheduler, config, tokenizer, summary, rank):
    """Rank 0 writes result.json and an atomic full checkpoint (the model gathered if sharded)."""
    state = distributed.full_state_dict(model)  # a collective: every rank calls it
    if rank != 0:
        return
    plain = gpt.GPT(config)
    plain.load_state_dict(state)
    keep = (optimizer, scheduler) if args.strategy == "ddp" else (None, None)
    checkpoint.save_checkpoint(
        args.out / "model.pt", plain, *keep, config=config.to_dict(),
        tokenizer=tokenizer.chars, step=args.steps, strategy=args.strategy,
    )  # fmt: skip
    write_json(args.out / "result.json", summary)


def resume(args, model, optimizer, scheduler) -> int:
    """Load ``--resume``'s sharded checkpoint (if given); returns the last step it trained."""
    if not args.resume:
        return 0
    extra = {"step": 0, "scheduler": ""}
    extra = distributed.load_sharded(args.resume, model, optimizer, extra)
    scheduler.load_state_dict(json.loads(extra["scheduler"]))
    return int(extra["step"])


def describe(args, model, start: int, policy, device) -> dict:
    """Every rank's share and shapes (a collective); rank 0 prints the run's first line."""
    world = dist.get_world_size()
    shares, shapes = [None] * world, [None] * world
    dist.all_gather_object(shares, distributed.local_numel(model))
    dist.all_gather_object(shapes, distributed.local_shapes(model))
    if dist.get_rank() == 0:
        print(f"{world} process(es), {dist.get_backend()} on {device}, {args.strategy}, "
              f"{distributed.unwrap(model).num_parameters():,} parameters "
              f"(per rank: {shares}), global batch {args.batch_size}, steps {start + 1}-"
              f"{args.steps}, precision {policy.name}", flush=True)  # fmt: skip
    return {"parameters_per_rank": shares, "shapes_per_rank": shapes}


def run(args) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    rank, world, device = distributed.init(args.timeout, args.device)
    tokenizer, (xs, ys) = load_windows(args)
    xs, ys = xs.to(device), ys.to(device)  # a few MB: copied once, indexed on the device each step
    built = build(args, tokenizer.vocab_size, device)
    config, model, optimizer, scheduler, policy, autocast = built
    start = resume(args, model, optimizer, scheduler)
    summary = describe(args, model, start, policy, device)
    batches = distributed.shard_batches(len(xs), args.batch_size, rank, world, seed=args.seed,
                                        start_step=start)  # fmt: skip
    scaler = autocast.grad_scaler()
    losses, seconds, lrs = [], [], []
    for step in range(start + 1, args.steps + 1):
        maybe_fail(args, rank, step)
        index = next(batches)
        tick = time.perf_counter()
        batch = (xs[index], ys[index])
        lrs.append(scheduler.get_last_lr()[0])  # this step's learning rate
        losses.append(train_step(model, batch, optimizer, scheduler, scaler, autocast, args))
        seconds.append(time.perf_counter() - tick)  # .item() in train_step waited for the device
        if rank == 0 and (step % args.log_every == 0 or step == args.steps):
            print(f"step {step:5d}  loss {losses[-1]:.4f}  {sum(seconds):.1f} s", flush=True)
        if args.save_at == step:
            extra = {"step": step, "scheduler": json.dumps(scheduler.state_dict())}
            distributed.save_sharded(args.out / "sharded", model, optimizer, extra)
    timed = seconds[1:] or seconds  # the first step pays one-time costs
    summary.update(
        strategy=args.strategy, precision=policy.name, world_size=world,
        backend=dist.get_backend(), device=str(device), first_step=start + 1, losses=losses,
        seconds=sum(seconds), threads=torch.get_num_threads(), lrs=lrs,
        betas=list(optimizer.defaults["betas"]),
        tokens_per_second=len(timed) * args.batch_size * args.block_size / sum(timed),
    )  # fmt: skip
    save_outputs(args, model, optimizer, scheduler, config, tokenizer, summary, rank)


def main(argv=None) -> None:
    run(parse_args(argv))
    # after a failure the process's exit closes the group, once the error file is written
    if dist.is_initialized():
        dist.destroy_process_group()


# torchrun then reports the failing rank's traceback in its summary
main = record(main, error_handler=WholeErrorFile())


if __name__ == "__main__":
    main()
