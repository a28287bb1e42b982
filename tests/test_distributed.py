"""helpers.distributed and scripts/train_gpt_ddp.py: 1 process vs 2 (gloo), DDP vs FSDP2, failure.

Every launch is bounded twice: the process-group timeout inside the script (a rank that stops
answering raises) and the launch timeout outside (torchrun and its workers are killed).
"""

import json
import random
from pathlib import Path

import pytest
import torch

from helpers import distributed

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "train_gpt_ddp.py"
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


def _run(text, out, nproc, *extra):
    result = distributed.launch(SCRIPT, [*TOY, "--text", text, "--out", out, *extra], nproc=nproc,
                                timeout_s=LAUNCH_TIMEOUT)  # fmt: skip
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


def test_a_failing_rank_ends_the_job_with_its_error(text, tmp_path):
    result = distributed.launch(SCRIPT, [*TOY, "--text", text, "--out", tmp_path, "--fail-at", "3"],
                                nproc=2, timeout_s=LAUNCH_TIMEOUT)  # fmt: skip
    assert result.returncode != 0
    assert "injected failure at step 3" in result.stdout
    assert not (tmp_path / "result.json").exists()


def test_launch_kills_the_whole_job_on_timeout(tmp_path):
    sleeper = tmp_path / "sleep.py"
    sleeper.write_text("import time\ntime.sleep(600)\n")
    with pytest.raises(TimeoutError, match="did not finish"):
        distributed.launch(sleeper, nproc=1, timeout_s=3)
