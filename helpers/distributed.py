"""Data-parallel training with ``torchrun``: process groups, data shards, DDP and FSDP2, launching.

The pieces :mod:`helpers.train_gpt_ddp` (chapter 07's training program) is made of, and what a
notebook or a test needs to launch it and read what happened:

- :func:`init` starts the process group ``torchrun`` describes (gloo on the CPU, NCCL on CUDA,
  with a timeout, so that a collective waiting for a rank that stopped answering fails instead
  of waiting forever);
- :func:`shard_batches`: each rank's own share of every global batch (``DistributedSampler``);
- :func:`wrap`: ``DistributedDataParallel``, or FSDP2's ``fully_shard`` on every block and the
  root; :func:`local_numel` is a rank's share of the parameters; :func:`full_state_dict`
  gathers a plain ``state_dict``;
- :func:`save_sharded` / :func:`load_sharded`: a sharded checkpoint with
  ``torch.distributed.checkpoint`` (every rank writes its own part);
- :func:`launch`: run the training module (or a script) under ``torchrun --standalone`` on this
  machine, bounded by a timeout that kills the whole process group;
- :func:`timeout_line` finds a collective timeout in a job's output (gloo's or NCCL's words),
  :func:`failure_report` cuts torchrun's failure report out of it, whole.
"""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

STRATEGIES = ("ddp", "fsdp")
TRAINER = "helpers.train_gpt_ddp"  # chapter 07's training program, run as a module (-m)
# How a collective timeout reads: gloo raises "Timed out waiting 10000ms for recv operation ..."
# in the waiting rank; NCCL's watchdog logs "[Rank 0] Watchdog caught collective operation
# timeout: WorkNCCL(...) ran for 600081 milliseconds before timing out." (ProcessGroupNCCL.cpp).
TIMEOUT_MARKERS = ("Timed out", "Watchdog caught collective operation timeout")


def backend_for(device) -> str:
    """The collective-communication library for a device: NCCL for CUDA GPUs, gloo otherwise."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def init(timeout_s: float = 60.0, device: str | None = None) -> tuple[int, int, torch.device]:
    """Join the process group ``torchrun`` set up; returns ``(rank, world_size, device)``.

    The device is ``cuda:LOCAL_RANK`` when CUDA is available (and ``device`` does not say
    ``"cpu"``), else the CPU. A collective that waits longer than ``timeout_s`` for another
    rank fails (gloo raises; NCCL's watchdog aborts the process), so a rank that stops
    answering ends the job once another rank waits for it in a collective.
    """
    missing = [
        v for v in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR") if v not in os.environ
    ]
    if missing:
        raise RuntimeError(
            f"{', '.join(missing)} not set: start this script with torchrun, e.g. "
            f"`torchrun --standalone --nproc_per_node=2 -m {TRAINER}`."
        )
    local_rank = int(os.environ["LOCAL_RANK"])
    use_cuda = torch.cuda.is_available() and (device or "cuda") != "cpu"
    chosen = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")
    options = {"device_id": chosen} if use_cuda else {}
    if use_cuda:
        torch.cuda.set_device(chosen)
    dist.init_process_group(
        backend_for(chosen), timeout=datetime.timedelta(seconds=timeout_s), **options
    )
    return dist.get_rank(), dist.get_world_size(), chosen


def shard_batches(n_examples: int, batch_size: int, rank: int, world_size: int, *, seed: int = 0,
                  start_step: int = 0):  # fmt: skip
    """Endless index batches of this rank's share of every global batch of ``batch_size``.

    A ``DistributedSampler`` shuffles the example indices (the same order on every rank, new
    each epoch) and deals them out: rank r reads positions r, r + W, r + 2W, ... . Global batch
    s is then positions ``s·B .. (s+1)·B - 1`` of the shuffled order whatever the number of
    ranks, so one process with batch B sees the same examples as W processes with B / W each.
    ``start_step`` skips the batches already trained on (resuming).
    """
    from torch.utils.data import DistributedSampler

    if batch_size % world_size:
        raise ValueError(
            f"the global batch ({batch_size}) must be divisible by the number of processes "
            f"({world_size})."
        )
    per_rank = batch_size // world_size
    sampler = DistributedSampler(
        range(n_examples), num_replicas=world_size, rank=rank, shuffle=True, seed=seed,
        drop_last=True,
    )  # fmt: skip
    per_epoch = len(sampler) // per_rank
    if per_epoch < 1:
        raise ValueError(f"{n_examples} examples do not fill one global batch of {batch_size}.")
    step = start_step
    while True:
        epoch, index = divmod(step, per_epoch)
        sampler.set_epoch(epoch)
        order = torch.tensor(list(sampler))
        for i in range(index, per_epoch):
            yield order[i * per_rank : (i + 1) * per_rank]
        step = (epoch + 1) * per_epoch


def wrap(model: nn.Module, strategy: str, device, mixed_bf16: bool = False) -> nn.Module:
    """The model ready for data-parallel training: ``"ddp"`` or ``"fsdp"`` (FSDP2).

    DDP keeps a whole replica on every rank and averages the gradients (all-reduce) during the
    backward pass. FSDP2 (``fully_shard``) splits every parameter along its first dimension
    over the ranks: each block is gathered just before it runs and freed after, and gradients
    are averaged and scattered back into shards (reduce-scatter). ``mixed_bf16`` (FSDP on a
    GPU) computes in bf16 and reduces in float32.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy {strategy!r} is not one of {STRATEGIES}.")
    device = torch.device(device)
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    options = {"mesh": init_device_mesh(device.type, (dist.get_world_size(),))}
    if mixed_bf16:
        options["mp_policy"] = MixedPrecisionPolicy(torch.bfloat16, torch.float32)
    for block in model.blocks:
        fully_shard(block, **options)
    return fully_shard(model, **options)  # the root: embeddings, final LayerNorm, tied head


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DDP wrapper (FSDP2 wraps in place: the model itself)."""
    return getattr(model, "module", model)


def local_numel(model: nn.Module) -> int:
    """How many parameter elements this rank stores (all of them with DDP, a shard with FSDP)."""
    return sum(getattr(p, "to_local", lambda p=p: p)().numel() for p in model.parameters())


def local_shapes(model: nn.Module) -> dict:
    """The shape of each parameter as this rank stores it: whole with DDP, a shard with FSDP."""
    return {
        name: list(getattr(p, "to_local", lambda p=p: p)().shape)
        for name, p in unwrap(model).named_parameters()
    }


def full_state_dict(model: nn.Module) -> dict:
    """A plain ``state_dict`` (whole CPU tensors) of a DDP or FSDP model; call it on every rank."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(unwrap(model), options=options)


def save_sharded(path, model, optimizer, extra: dict) -> None:
    """Save model and optimizer as a sharded checkpoint (``torch.distributed.checkpoint``).

    Every rank writes its own shard file in the folder ``path``; ``extra`` (a flat dict of
    ints and strings: the step, the scheduler's state as JSON) goes with it. Call it on every
    rank.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(unwrap(model), optimizer)
    dcp.save({"model": model_state, "optim": optim_state, "extra": extra}, checkpoint_id=str(path))


def load_sharded(path, model, optimizer, extra: dict) -> dict:
    """Load a checkpoint of :func:`save_sharded` into ``model``, ``optimizer`` and ``extra``.

    ``extra`` names the keys to read (with placeholder values of the right type); it is filled
    in and returned. The folder may have been written by a different number of ranks: each
    rank reads the pieces of its own shard.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    if not (Path(path) / ".metadata").exists():
        raise FileNotFoundError(f"{path} holds no sharded checkpoint (no .metadata file).")
    model_state, optim_state = get_state_dict(unwrap(model), optimizer)
    state = {"model": model_state, "optim": optim_state, "extra": dict(extra)}
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(
        unwrap(model), optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"]
    )
    return state["extra"]


# --------------------------------------------------------------------------- launching


def _descendants(pid: int) -> list[int]:
    """Process ids of every descendant of ``pid`` (Linux ``/proc``; empty elsewhere)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def _kill_job(process: subprocess.Popen) -> None:
    """Stop torchrun and its workers (each worker runs in a session of its own)."""
    workers = _descendants(process.pid)
    process.terminate()  # torchrun's own handler stops its workers first
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    for pid in [process.pid, *workers]:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def launch(target=TRAINER, args=(), nproc: int = 2, timeout_s: float = 120.0, threads: int = 1,
           env=None):  # fmt: skip
    """Run ``torchrun --standalone --nproc_per_node=N`` on ``target``; wait at most ``timeout_s``.

    ``target`` is a module name (a ``str``, run as with ``python -m``; default: the course's
    training program) or a script file (a ``pathlib.Path``). ``--standalone`` starts the
    rendezvous on this machine on a free port; gloo is told to use the loopback interface. On a
    timeout torchrun and every worker are killed and ``TimeoutError`` is raised. Returns the
    ``CompletedProcess`` (stdout and stderr together as text, the exit code in ``returncode``)
    with ``seconds`` added.
    """
    program = ["-m", target] if isinstance(target, str) else [str(target)]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", *program, *map(str, args)]  # fmt: skip
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads), **(env or {})}
    if sys.platform.startswith("linux"):
        environment.setdefault("GLOO_SOCKET_IFNAME", "lo")
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=environment)  # fmt: skip
    try:
        output, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_job(process)
        output, _ = process.communicate()
        raise TimeoutError(
            f"torchrun did not finish within {timeout_s} s and was stopped; its output:\n"
            + output[-3000:]
        ) from None
    result = subprocess.CompletedProcess(command, process.returncode, output)
    result.seconds = time.perf_counter() - start
    return result


def timeout_line(output: str) -> str | None:
    """The first line of a job's output reporting a collective timeout (gloo, NCCL), or None."""
    return next((line for line in output.splitlines()
                 if any(marker in line for marker in TIMEOUT_MARKERS)), None)  # fmt: skip


def failure_report(output: str) -> str:
    """torchrun's failure report in a job's output, whole: from its ``ChildFailedError`` line
    through the ``Root Cause (first observed failure)`` section to the closing ``====`` rule.

    Raises ``ValueError`` when the output holds no report (the job did not fail under torchrun).
    """
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if line.rstrip().endswith("ChildFailedError:")),
                 None)  # fmt: skip
    if start is None:
        raise ValueError("no torchrun failure report (ChildFailedError) in this output.")
    rules = [i for i in range(start + 1, len(lines)) if lines[i].startswith("=====")]
    end = rules[1] if len(rules) > 1 else len(lines) - 1  # the report is framed by two rules
    return "\n".join(lines[start : end + 1])
