import pytest
import torch
from torch import nn

from helpers import classify, gpt, lora


def _gpt(seed=0):
    torch.manual_seed(seed)
    config = gpt.GPTConfig(vocab_size=13, block_size=16, n_layer=2, n_head=2, n_embd=16)
    return gpt.GPT(config).eval()


def _ids(seed=1):
    return torch.randint(0, 13, (3, 12), generator=torch.Generator().manual_seed(seed))


def _train_adapters(model):
    """Give the adapters non-zero values, as training would."""
    with torch.no_grad():
        for layer in lora.lora_layers(model).values():
            layer.lora_B.normal_(std=0.1)


def test_lora_linear_starts_as_the_base_layer_and_has_the_right_init():
    torch.manual_seed(0)
    base = nn.Linear(20, 30)
    layer = lora.LoRALinear(base, r=4, alpha=8)
    x = torch.randn(5, 20)
    assert torch.equal(layer(x), base(x))
    assert torch.count_nonzero(layer.lora_B) == 0 and layer.scaling == 2.0
    bound = 1 / 20**0.5  # kaiming_uniform with a=sqrt(5): U(-1/sqrt(in), 1/sqrt(in))
    assert layer.lora_A.abs().max() <= bound and layer.lora_A.std() > 0.3 * bound
    assert not base.weight.requires_grad and layer.lora_A.requires_grad


def test_apply_lora_identical_outputs_and_only_adapters_train():
    model, ids = _gpt(), _ids()
    before = model(ids)
    names = lora.apply_lora(model, ["attn.qkv", "mlp.fc"], r=4, alpha=8)
    assert names == ["blocks.0.attn.qkv", "blocks.0.mlp.fc", "blocks.1.attn.qkv", "blocks.1.mlp.fc"]
    assert torch.equal(model(ids), before)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{n}.lora_{ab}" for n in names for ab in "AB"}
    expected = 2 * (4 * (16 + 48) + 4 * (16 + 64))  # r (in + out) per wrapped layer
    assert lora.lora_parameter_count(model) == expected
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected


def test_merge_and_unmerge():
    model, ids = _gpt(), _ids()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    lora.apply_lora(model, ["attn.qkv", "attn.proj", "mlp.fc", "mlp.proj"], r=2, alpha=4)
    _train_adapters(model)
    unmerged = model(ids)
    assert not torch.allclose(unmerged, _gpt()(ids))
    lora.merge_lora(model)
    assert torch.allclose(model(ids), unmerged, atol=1e-5)
    lora.unmerge_lora(model)
    restored = {k.replace(".base.", "."): v for k, v in model.state_dict().items()}
    for name, value in original.items():
        assert torch.allclose(restored[name], value, atol=1e-6), name
    assert torch.allclose(model(ids), unmerged, atol=1e-6)


def test_adapter_save_and_load_reproduce_the_logits(tmp_path):
    targets = ["attn.qkv", "attn.proj"]
    model = classify.GPTClassifier(_gpt(), 3)
    lora.apply_lora(model, targets, r=4, train=["head"])
    _train_adapters(model)
    with torch.no_grad():
        model.head.weight.normal_()
    path = lora.save_adapter(model, tmp_path / "adapter.pt", r=4, targets=targets)
    assert set(lora.adapter_state_dict(model)) == {
        n for n, p in model.named_parameters() if p.requires_grad
    }
    fresh = classify.GPTClassifier(_gpt(), 3)  # the same base weights, a new head
    lora.apply_lora(fresh, targets, r=4, train=["head"])
    lora.load_adapter(fresh, path)
    assert torch.equal(fresh.eval()(_ids()), model.eval()(_ids()))


def test_clear_errors():
    with pytest.raises(ValueError, match="no nn.Linear"):
        lora.apply_lora(_gpt(), ["attn.query"])
    with pytest.raises(ValueError, match="r >= 1"):
        lora.LoRALinear(nn.Linear(2, 2), r=0)
    with pytest.raises(ValueError, match="wraps an nn.Linear"):
        lora.LoRALinear(nn.Conv2d(1, 1, 1))
    model = _gpt()
    lora.apply_lora(model, ["attn.qkv"], r=2)
    other = _gpt()
    lora.apply_lora(other, ["attn.qkv"], r=4)
    with pytest.raises(ValueError, match="another r"):
        lora.load_adapter(other, lora.adapter_state_dict(model))
    lora.merge_lora(model)
    with pytest.raises(ValueError, match="unmerge"):
        lora.adapter_state_dict(model)
