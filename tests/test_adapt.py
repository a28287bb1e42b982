import pytest
import torch

from helpers import adapt, gpt, lora, tokenizer

SPEECHES = [("ANNE", f"Line {i} of mine.") if i % 2 else ("BEN", f"Reply {i}.") for i in range(40)]
TEXT = "\n\n".join(f"{name}:\n{words}" for name, words in SPEECHES)


def _base():
    tok = tokenizer.CharTokenizer.from_text(TEXT)
    torch.manual_seed(0)
    config = gpt.GPTConfig(vocab_size=tok.vocab_size, block_size=8, n_layer=1, n_head=2, n_embd=16)
    return gpt.GPT(config).eval(), tok


def test_speaker_text_splits_one_speakers_speeches_by_position():
    parts = adapt.speaker_text(TEXT, "ANNE")
    assert parts["pool"].startswith("ANNE:\nLine 1 of mine.\n\n") and "BEN" not in "".join(
        parts.values()
    )
    assert parts["val"].startswith("ANNE:\nLine 29 ") and parts["test"].startswith(
        "ANNE:\nLine 35 "
    )
    assert sum(p.count("ANNE:") for p in parts.values()) == 20
    with pytest.raises(ValueError, match="10 or more"):
        adapt.speaker_text(TEXT[:200], "ANNE")


def test_continue_training_keeps_the_best_validation_weights():
    base, tok = _base()
    parts = adapt.speaker_text(TEXT, "ANNE")
    data = torch.tensor(tok.encode(parts["pool"]))
    val = adapt.window_loader(torch.tensor(tok.encode(parts["val"])), 8)
    model, history = adapt.continue_training(base, data, val, lr=3e-3, steps=40, evaluations=4)
    assert history["step"][-1] == 40 and len(history["val_loss"]) == 4
    assert history["val_loss"][history["step"].index(history["best_step"])] == min(
        history["val_loss"]
    )
    assert not any(p is q for p, q in zip(model.parameters(), base.parameters()))  # a copy
    assert min(history["val_loss"]) < history["val_loss"][0] or history["best_step"] == 10


def test_scratch_starts_elsewhere_and_lora_trains_only_adapters():
    base, tok = _base()
    data = torch.tensor(tok.encode(TEXT))
    val = adapt.window_loader(data[:200], 8)
    short = dict(lr=1e-3, steps=10, evaluations=1)
    scratch, _ = adapt.continue_training(base, data, val, scratch=True, seed=1, **short)
    adapted, _ = adapt.continue_training(base, data, val, lora=dict(r=2, alpha=4), **short)
    assert not torch.equal(scratch.tok_emb.weight, base.tok_emb.weight)
    assert len(lora.lora_layers(adapted)) == 4  # the block's four linear layers
    assert torch.equal(adapted.tok_emb.weight, base.tok_emb.weight)  # frozen
    with pytest.raises(ValueError, match="scratch"):
        adapt.continue_training(base, data, val, lr=1e-3, steps=10, scratch=True, lora=dict(r=2))
    with pytest.raises(ValueError, match="evaluations"):
        adapt.continue_training(base, data, val, lr=1e-3, steps=5)


def test_window_losses_average_to_evaluate():
    from helpers import train

    base, tok = _base()
    loader = adapt.window_loader(torch.tensor(tok.encode(TEXT)), 8, batch_size=7)
    per_window = adapt.window_losses(base, loader)
    assert len(per_window) == len(loader.tensors[0])
    assert abs(per_window.mean().item() - train.evaluate(base, loader)["loss"]) < 1e-5
