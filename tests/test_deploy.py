"""helpers.deploy (chapter 08): export and ONNX give the eager outputs, int8 by hand is right."""

import pytest
import torch
from guards import NoFloat64
from torch import nn

import helpers


def tiny_cnn():
    torch.manual_seed(0)
    return helpers.models.ConvNet(channels=(4, 8)).eval()


def tiny_gpt():
    torch.manual_seed(0)
    config = helpers.gpt.GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16)
    return helpers.gpt.GPT(config).eval()


def test_the_gpt_exports_with_a_dynamic_length_and_matches_eager_exactly(tmp_path):
    gpt = tiny_gpt()
    example = torch.randint(0, 11, (2, 8))[:, :5]  # a slice: strides (8, 1)
    program = helpers.deploy.export_program(gpt, example, max_length=8)
    torch.export.save(program, tmp_path / "gpt.pt2")
    loaded = torch.export.load(tmp_path / "gpt.pt2").module()
    with torch.inference_mode():
        for batch, length in [(2, 1), (1, 2), (3, 4), (2, 8)]:
            ids = torch.randint(0, 11, (batch, length))
            assert torch.equal(loaded(ids), gpt(ids))
    with pytest.raises(Exception, match="Guard failed"):
        loaded(torch.randint(0, 11, (2, 9)))  # longer than the context it was exported for
    with pytest.raises(ValueError, match="at least 2"):
        helpers.deploy.export_program(gpt, torch.randint(0, 11, (2, 1)), max_length=8)


def test_exported_programs_reload_and_match_eager_at_any_batch(tmp_path):
    cnn, gpt = tiny_cnn(), tiny_gpt()
    for model, example, make in [
        (cnn, torch.randn(2, 1, 28, 28), lambda b: torch.randn(b, 1, 28, 28)),
        (gpt, torch.randint(0, 11, (2, 8)), lambda b: torch.randint(0, 11, (b, 8))),
    ]:
        program = helpers.deploy.export_program(model, example, max_batch=64)
        torch.export.save(program, tmp_path / "model.pt2")
        loaded = torch.export.load(tmp_path / "model.pt2").module()
        inputs = [make(b) for b in (1, 3, 64)]
        assert helpers.deploy.max_abs_diff(model, loaded, inputs) < 1e-5
    with pytest.raises(ValueError, match="at least 2"):
        helpers.deploy.export_program(cnn, torch.randn(1, 1, 28, 28))


def test_onnx_runtime_matches_eager(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    gpt = tiny_gpt()
    path = helpers.deploy.export_onnx(gpt, torch.randint(0, 11, (2, 8)), tmp_path / "gpt.onnx")
    run = helpers.deploy.onnx_runner(path, threads=1)
    inputs = [torch.randint(0, 11, (b, 8)) for b in (1, 5)]
    assert helpers.deploy.max_abs_diff(gpt, run, inputs) < 1e-4


def test_int8_weights_by_hand():
    torch.manual_seed(0)
    weight = torch.randn(6, 3, 3, 3) * torch.arange(1, 7).view(6, 1, 1, 1)  # rows of other sizes
    with NoFloat64():
        q, scale = helpers.deploy.int8_weights(weight)
    assert q.dtype == torch.int8 and q.shape == weight.shape and scale.shape == (6, 1, 1, 1)
    assert q.abs().amax(dim=(1, 2, 3)).eq(127).all()  # each row's largest weight maps to +-127
    assert ((q.float() * scale - weight).abs() <= scale / 2 + 1e-7).all()


def test_fake_quantized_cnn_and_dynamic_int8_stay_close():
    cnn, gpt = tiny_cnn(), tiny_gpt()
    fake, int8_bytes = helpers.deploy.fake_quantize_weights(cnn)
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert 0 < (fake(x) - cnn(x)).abs().max() < 0.1
    weights = sum(m.weight.numel() for m in cnn.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert weights < int8_bytes < 1.2 * weights  # one byte per weight, plus the scales
    dynamic = helpers.deploy.quantize_dynamic_int8(gpt)
    assert helpers.deploy.max_abs_diff(gpt, dynamic, [torch.randint(0, 11, (2, 8))]) < 0.1
    assert helpers.deploy.saved_bytes(dynamic) < helpers.deploy.saved_bytes(gpt)


def test_latency_and_saved_bytes(tmp_path):
    model = nn.Linear(4, 4)
    assert helpers.deploy.latency_ms(model, torch.randn(2, 4), repeats=3, warmup=1) > 0
    timed = helpers.deploy.compare_latency({"a": model, "b": model}, torch.randn(2, 4), rounds=3,
                                           calls=2)  # fmt: skip
    assert set(timed) == {"a", "b"} and all(t.low <= t.median <= t.high for t in timed.values())
    fast, slow = helpers.deploy.Spread(1.0, 0.9, 1.1), helpers.deploy.Spread(2.0, 1.5, 2.5)
    assert fast.below(slow) and not slow.below(fast) and not fast.below(fast)
    assert str(fast) == "1.00 [0.90-1.10]"
    size = helpers.deploy.saved_bytes(model, tmp_path / "model.pt")
    assert size == (tmp_path / "model.pt").stat().st_size == helpers.deploy.saved_bytes(model)
