import pytest
import torch
from torch import nn

import helpers
from helpers.loader import TensorLoader


def _setup(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    return model, opt, sched


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    return x, (x.sum(1) > 0).long()


def test_checkpoint_path_by_mode(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_CHECKPOINT_DIR", str(tmp_path))
    assert helpers.checkpoint.checkpoint_path("mnist_cnn") == tmp_path / "mnist_cnn.pt"
    monkeypatch.setenv("COURSE_QUICK", "1")
    assert helpers.checkpoint.checkpoint_path("mnist_cnn") == tmp_path / "mnist_cnn-quick.pt"


def test_round_trip(tmp_path):
    model, opt, sched = _setup()
    x, y = _data()
    helpers.train.fit(
        model, TensorLoader(x, y, batch_size=16), opt, epochs=1, scheduler=sched, progress=False
    )
    path = helpers.checkpoint.save_checkpoint(
        tmp_path / "sub" / "ck.pt", model, opt, sched, epoch=1, config={"width": 8}
    )
    assert [p.name for p in path.parent.iterdir()] == ["ck.pt"]  # no temporary file left behind
    model2, opt2, sched2 = _setup(seed=1)
    state = helpers.checkpoint.load_checkpoint(path, model2, opt2, sched2)
    assert state["epoch"] == 1 and state["config"] == {"width": 8}
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    assert sched2.get_last_lr() == sched.get_last_lr()
    assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]


def test_resume_reproduces_the_next_step(tmp_path):
    x, y = _data()

    def one_epoch(model, opt, sched):
        loader = TensorLoader(x, y, batch_size=16, shuffle=True)  # draws from torch's RNG
        return helpers.train.fit(model, loader, opt, epochs=1, scheduler=sched, progress=False)[
            "train_loss"
        ][0]

    model, opt, sched = _setup()
    one_epoch(model, opt, sched)
    helpers.checkpoint.save_checkpoint(tmp_path / "ck.pt", model, opt, sched, epoch=1)
    expected = one_epoch(model, opt, sched)  # the uninterrupted run's next epoch

    torch.manual_seed(999)  # disturb the RNG: resume must restore it
    model2, opt2, sched2 = _setup(seed=5)
    helpers.checkpoint.load_checkpoint(tmp_path / "ck.pt", model2, opt2, sched2, restore_rng=True)
    assert one_epoch(model2, opt2, sched2) == expected


def test_bad_files_give_clear_errors(tmp_path):
    model, opt, sched = _setup()
    path = helpers.checkpoint.save_checkpoint(tmp_path / "ck.pt", model, opt)
    with pytest.raises(FileNotFoundError, match="Run the chapter"):
        helpers.checkpoint.load_checkpoint(tmp_path / "missing.pt", model)

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="damaged or is not a checkpoint"):
        helpers.checkpoint.load_checkpoint(truncated, model)

    plain = tmp_path / "plain.pt"
    torch.save(model.state_dict(), plain)
    with pytest.raises(ValueError, match="no 'model' entry"):
        helpers.checkpoint.load_checkpoint(plain, model)

    with pytest.raises(ValueError, match="does not fit"):
        helpers.checkpoint.load_checkpoint(path, nn.Linear(4, 2))
    with pytest.raises(ValueError, match="no scheduler state"):
        helpers.checkpoint.load_checkpoint(path, model, scheduler=sched)
