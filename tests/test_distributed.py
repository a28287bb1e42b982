"""helpers.distributed and helpers.train_gpt_ddp: 1 process vs 2 (gloo), DDP vs FSDP2, failure.

Every launch is bounded twice: the process-group timeout inside the program (a collective that
waits for a rank that stopped answering fails) and the launch timeout outside (torchrun and its
workers are killed). Equality checks run in the float32 check mode (``--precision fp32``); bf16
runs are compared with the tolerance ``helpers.precision.drift_tolerance`` derives.
"""

import json
import random
from pathlib import Path

import pytest
import torch

from helpers import distributed, precision, train, train_gpt_ddp
from helpers.gpt import GPT, GPTConfig

TOY = ["--steps", "6", "--batch-size", "8", "--n-layer", "2", "--n-head", "2", "--n-embd", "32",
       "--block-size", "16", "--log-every", "3", "--timeout", "60"]  # fmt: skip
LAUNCH_TIMEOUT = 300  # a guard against hangs on a slow, busy machine; idle, a launch takes ~7 s


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    rng = random.Random(0)
    words = "the king queen of and to my lord thou art a be not is that with".split()
    lines = [f"{rng.choice(['ROMEO', 'JULIET'])}:\n" + " ".join(rng.choices(words, k=12))
             for _ in range(200)]  # fmt: skip
    path = tmp_path_factory.mktemp("text") / "toy.txt"
    path.write_text("\n\n".join(lines))
    return path


def _run(text, out, nproc, *extra, precision="fp32"):
    args = [*TOY, "--text", text, "--out", out, "--precision", precision, *extra]
    result = distributed.launch(args=args, nproc=nproc, timeout_s=LAUNCH_TIMEOUT)
    assert result.returncode == 0, result.stdout[-3000:]
    record = json.loads((Path(out) / "result.json").read_text())
    return record, torch.load(Path(out) / "model.pt", weights_only=True)["model"]


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5, msg=name)


def test_every_rank_reads_its_own_share_of_the_same_global_batches():
    one = distributed.shard_batches(100, 8, 0, 1, seed=3)
    two = [distributed.shard_batches(100, 8, r, 2, seed=3) for r in range(2)]
    for _ in range(20):  # more than one epoch (12 batches)
        a, b = (next(s) for s in two)
        assert not set(a.tolist()) & set(b.tolist())
        assert sorted(next(one).tolist()) == sorted(a.tolist() + b.tolist())
    resumed = distributed.shard_batches(100, 8, 1, 2, seed=3, start_step=5)
    fresh = distributed.shard_batches(100, 8, 1, 2, seed=3)
    for _ in range(5):
        next(fresh)
    assert torch.equal(next(resumed), next(fresh))
    with pytest.raises(ValueError, match="divisible"):
        next(distributed.shard_batches(100, 9, 0, 2))


def test_ddp_and_fsdp_on_two_processes_equal_one_process(text, tmp_path):
    one, model_one = _run(text, tmp_path / "one", 1)
    ddp, model_ddp = _run(text, tmp_path / "ddp", 2)
    fsdp, model_fsdp = _run(text, tmp_path / "fsdp", 2, "--strategy", "fsdp", "--save-at", "4")
    assert ddp["world_size"] == 2 and ddp["backend"] == "gloo"
    _assert_same(model_one, model_ddp)
    _assert_same(model_ddp, model_fsdp)
    torch.testing.assert_close(one["losses"], fsdp["losses"], rtol=1e-5, atol=1e-6)
    shares = fsdp["parameters_per_rank"]
    assert len(shares) == 2 and sum(shares) >= one["parameters_per_rank"][0] > max(shares)
    resumed, model_resumed = _run(text, tmp_path / "resumed", 2, "--strategy", "fsdp",
                                  "--resume", tmp_path / "fsdp" / "sharded")  # fmt: skip
    assert resumed["first_step"] == 5
    torch.testing.assert_close(resumed["losses"], fsdp["losses"][4:], rtol=1e-5, atol=1e-6)
    _assert_same(model_fsdp, model_resumed)


def _weights_diff(a, b):
    return torch.cat([(a[k] - b[k]).abs().flatten() for k in a])


def test_bf16_runs_differ_within_the_derived_tolerance(text, tmp_path):
    one, model_one = _run(text, tmp_path / "one", 1, precision="bf16")
    ddp, model_ddp = _run(text, tmp_path / "ddp", 2, precision="bf16")
    fsdp, model_fsdp = _run(text, tmp_path / "fsdp", 2, "--strategy", "fsdp", precision="bf16")
    assert one["precision"] == ddp["precision"] == fsdp["precision"] == "bf16"
    tol = precision.drift_tolerance(one["lrs"], one["betas"], torch.bfloat16)
    for a, b in [(model_one, model_ddp), (model_ddp, model_fsdp)]:
        diff = _weights_diff(a, b)
        assert diff.median() <= tol["typical"] and diff.max() <= tol["max"]
        assert diff.max() > 1e-5  # bf16 really ran: float32 runs agree to ~1e-6


def test_the_loss_is_computed_on_float32_logits():
    config = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16)
    torch.manual_seed(0)
    model = GPT(config).to(torch.bfloat16)  # what FSDP2's bf16 MixedPrecisionPolicy computes in
    x = torch.randint(11, (4, 8))
    loss = train_gpt_ddp.loss_of(model, x, x)
    assert loss.dtype == torch.float32
    assert torch.equal(loss, train.cross_entropy(model(x).float(), x))
    assert train.cross_entropy(model(x), x).dtype == torch.bfloat16  # what it would be without


def test_a_failing_rank_ends_the_job_with_its_error(text, tmp_path):
    result = distributed.launch(args=[*TOY, "--text", text, "--out", tmp_path, "--fail-at", "3"],
                                nproc=2, timeout_s=LAUNCH_TIMEOUT)  # fmt: skip
    assert result.returncode != 0
    assert "injected failure at step 3" in result.stdout
    assert not (tmp_path / "result.json").exists()
    report = distributed.failure_report(result.stdout)
    root_cause = report.split("Root Cause (first observed failure):")[1]
    assert "rank      : 1" in root_cause and "injected failure at step 3" in root_cause
    assert report.rstrip().endswith("=" * 20)


GLOO_TIMEOUT = (
    "[rank0]: RuntimeError: [/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/"
    "unbound_buffer.cc:78] Timed out waiting 10000ms for recv operation to complete"
)
NCCL_TIMEOUT = (  # ProcessGroupNCCL's watchdog (torch 2.x), as a real job logs it
    "[rank0]:[E1218 20:27:21.426415540 ProcessGroupNCCL.cpp:629] [Rank 0] Watchdog caught "
    "collective operation timeout: WorkNCCL(SeqNum=1, OpType=ALLREDUCE, NumelIn=131072000, "
    "NumelOut=131072000, Timeout(ms)=600000) ran for 600081 milliseconds before timing out."
)


@pytest.mark.parametrize("line", [GLOO_TIMEOUT, NCCL_TIMEOUT], ids=["gloo", "nccl"])
def test_timeouts_of_gloo_and_nccl_are_recognised(line):
    output = f"step     3  loss 3.9712  0.0 s\n{line}\nE1123 torch/distributed/elastic ...\n"
    assert distributed.timeout_line(output) == line
    assert distributed.timeout_line("step 3\nRuntimeError: rank 1: injected failure") is None


def test_failure_report_needs_a_report():
    with pytest.raises(ValueError, match="ChildFailedError"):
        distributed.failure_report("step     3  loss 3.9712\n")


def test_launch_kills_the_whole_job_on_timeout(tmp_path):
    sleeper = tmp_path / "sleep.py"
    sleeper.write_text("import time\ntime.sleep(600)\n")
    with pytest.raises(TimeoutError, match="did not finish"):
        distributed.launch(Path(sleeper), nproc=1, timeout_s=3)
