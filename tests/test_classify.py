import pytest
import torch
from guards import NoFloat64

from helpers import classify, gpt, lora, shakespeare, tokenizer

TEXT = "\n\n".join(
    f"{name}:\n{words}"
    for name, words in [
        ("ANNE", "Good morrow, sir.\nHow now?"),
        ("BEN", "Well met."),
        ("ANNE", "What news?"),
        ("CLEO", "None at all."),
        ("BEN", "Away!"),
        ("ANNE", "Stay, stay."),
        ("BEN", "I go."),
    ]
    * 6
)


def _gpt(seed=0, vocab=40):
    torch.manual_seed(seed)
    config = gpt.GPTConfig(vocab_size=vocab, block_size=16, n_layer=2, n_head=2, n_embd=16)
    return gpt.GPT(config).eval()


def test_speeches_and_the_split_by_position():
    found = shakespeare.speeches(TEXT)
    assert len(found) == 42 and found[0].speaker == "ANNE"
    assert found[0].body == "Good morrow, sir.\nHow now?"
    assert TEXT[found[1].start : found[1].end] == "BEN:\nWell met."
    parts = shakespeare.split_by_position(found, run=2, pattern=(3, 1, 1))
    assert [s.index for s in parts["val"][:2]] == [6, 7] and [
        s.index for s in parts["test"][:2]
    ] == [8, 9]
    assert sum(len(p) for p in parts.values()) == 42
    with pytest.raises(ValueError, match="no speeches"):
        shakespeare.speeches("no speeches here")
    assert shakespeare.pretraining_split("x" * 100) == 90


def test_split_text_and_without_speakers():
    text = "x" * 100
    parts = shakespeare.split_text(text)
    assert [len(parts[k]) for k in ("train", "val", "test")] == [90, 5, 5]
    assert "".join(parts.values()) == text
    rest = shakespeare.without_speakers(TEXT, ["BEN"])
    assert {s.speaker for s in shakespeare.speeches(rest)} == {"ANNE", "CLEO"}
    assert len(shakespeare.speeches(rest)) == 42 - 18 and "Well met" not in rest
    assert rest.startswith("ANNE:\nGood morrow") and "\n\n\n" not in rest


def test_windows_split_by_runs_of_speeches():
    tok = tokenizer.CharTokenizer.from_text(TEXT)
    task = classify.speaker_task(TEXT, tok, ["ANNE", "BEN"], width=6, run=2, pattern=(3, 1, 1))
    assert task.classes == ["ANNE", "BEN"]
    for split in ("train", "val", "test"):
        x, y, texts = task.x[split], task.y[split], task.texts[split]
        assert x.shape[1] == 6 and len(x) == len(y) == len(texts) > 0
        assert all(3 <= len(t) <= 6 for t in texts)  # pieces under width // 2 are dropped
        assert tok.decode(x[0][x[0] != classify.PAD].tolist()) == texts[0]
    windows = classify.speech_windows(shakespeare.speeches(TEXT)[:1], 6)
    assert [w for w, _ in windows] == ["Good m", "orrow,", " sir.\n", "How no"]  # "w?" dropped
    assert 0 < task.majority_baseline("test") <= 1
    with pytest.raises(ValueError, match="no speeches by"):
        classify.speaker_task(TEXT, tok, ["ANNE", "ZOE"])


def test_shuffled_task_pairs_each_window_with_its_shuffle():
    tok = tokenizer.CharTokenizer.from_text(TEXT)
    task = classify.shuffled_task(TEXT, tok, ["ANNE"], width=16, run=2, pattern=(3, 1, 1))
    texts, y = task.texts["train"], task.y["train"].tolist()
    assert task.classes == ["shuffled", "real"] and y[:2] == [0, 1]
    for shuffled, real in zip(texts[::2], texts[1::2]):
        assert sorted(shuffled.split(" ")) == sorted(real.split(" ")) and shuffled != real
    with pytest.raises(ValueError, match="two different words"):
        classify.shuffle_words("word", __import__("random").Random(0))


def test_lm_loss_per_example_matches_cross_entropy():
    model = _gpt()
    x = torch.tensor([[1, 2, 3, classify.PAD], [4, 5, 6, 7]])
    per = classify.lm_loss_per_example(model, x)
    with torch.no_grad():
        first = torch.nn.functional.cross_entropy(model(x[:1, :2])[0], x[0, 1:3])
        second = torch.nn.functional.cross_entropy(model(x[1:, :3])[0], x[1, 1:])
    assert torch.allclose(per, torch.stack([first, second]), atol=1e-6)


def test_pad_sequences():
    out = classify.pad_sequences([[1, 2, 3], [4]], 2)
    assert out.tolist() == [[1, 2], [4, classify.PAD]]
    with pytest.raises(ValueError, match="empty"):
        classify.pad_sequences([[]], 4)


def test_last_token_classifier_ignores_padding():
    model = classify.GPTClassifier(_gpt(), 3).eval()
    ids = torch.tensor([[5, 6, 7, 8, classify.PAD, classify.PAD], [1, 2, 3, 4, 5, 6]])
    with torch.no_grad():
        batch = model(ids)
        alone = model(ids[:1, :4])
        changed = model(torch.tensor([[5, 6, 7, 9, classify.PAD, classify.PAD]]))
    assert batch.shape == (2, 3)
    assert torch.allclose(batch[:1], alone, atol=1e-6)
    assert not torch.allclose(batch[:1], changed)  # the last real token matters
    with pytest.raises(ValueError, match="only PAD"):
        model(torch.full((1, 4), classify.PAD))


@pytest.mark.parametrize("strategy", list(classify.STRATEGIES))
def test_strategies_train_what_they_say(strategy):
    base = _gpt()
    model = classify.make_classifier(strategy, base, 3, r=2, alpha=4)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {"head.weight", "head.bias"} <= trainable
    if strategy == "head":
        assert trainable == {"head.weight", "head.bias"}
    elif strategy == "last_block":
        assert all(n.startswith(("head.", "gpt.blocks.1.", "gpt.ln_f.")) for n in trainable)
    elif strategy == "lora":
        extra = trainable - {"head.weight", "head.bias"}
        assert extra and all(".lora_" in n for n in extra)
        shapes = [(16, 48), (16, 16), (16, 64), (64, 16)]  # (in, out) of qkv, proj, fc, mlp.proj
        assert lora.lora_parameter_count(model) == 2 * sum(2 * (i + o) for i, o in shapes)
    else:
        assert len(trainable) == len(list(model.parameters()))
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    assert classify.saved_bytes(model) > 0
    assert all(torch.equal(base.state_dict()[k], v) for k, v in base_state.items())


def test_train_classifier_learns_a_toy_task_without_float64():
    """Toy-size training run under the NoFloat64 guard (MPS has no float64)."""
    base = _gpt(vocab=10)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 10, (64, 8), generator=g)
    y = (x[:, -1] > 5).long()  # the last token decides the class
    with NoFloat64():
        model, history = classify.train_classifier(
            "full", base, x, y, lr=3e-3, steps=60, batch_size=16, val=(x, y)
        )
    assert history["val_accuracy"][-1] > 0.9
    with pytest.raises(ValueError, match="strategy"):
        classify.make_classifier("everything", base, 2)
