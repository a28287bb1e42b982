"""GPT-2 loading, offline: a tiny random GPT-2 from the reference implementation, in its format."""

import json

import pytest
import torch

from helpers import gpt, gpt2

transformers = pytest.importorskip("transformers", reason="transformers is a dev (test) dependency")


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    """A random 2-layer GPT-2 saved by save_pretrained (config.json + model.safetensors)."""
    folder = tmp_path_factory.mktemp("tiny_gpt2")
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=97,
        n_positions=32,
        n_embd=32,
        n_layer=2,
        n_head=4,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # larger weights than at init, non-trivial biases and LayerNorm gains:
        for p in model.parameters():  # a mix-up (or the wrong GELU) would show in the logits
            p.normal_(std=0.3)
    model.save_pretrained(folder, safe_serialization=True)
    return folder, model


def test_read_safetensors_matches_the_reference_reader(tiny_gpt2):
    from safetensors.torch import load_file

    folder, _ = tiny_gpt2
    ours, theirs = (
        gpt2.read_safetensors(folder / "model.safetensors"),
        load_file(folder / "model.safetensors"),
    )
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_tiny_gpt2_loads_into_our_gpt_with_the_same_logits(tiny_gpt2):
    folder, reference = tiny_gpt2
    model = gpt2.load_gpt2(folder)
    assert isinstance(model, gpt.GPT) and model.config.gelu_approximate == "tanh"
    assert model.head.weight is model.tok_emb.weight
    ids = torch.randint(0, 97, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference(ids).logits
        ours = model(ids)
    assert torch.allclose(ours, expected, rtol=1e-4, atol=1e-4), (ours - expected).abs().max()


def test_exact_gelu_would_not_match(tiny_gpt2):
    """The GELU option matters: the exact GELU gives (slightly) different logits."""
    folder, reference = tiny_gpt2
    model = gpt2.load_gpt2(folder)
    for block in model.blocks:
        block.mlp.gelu = torch.nn.GELU()
    ids = torch.randint(0, 97, (1, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert not torch.allclose(model(ids), reference(ids).logits, rtol=1e-4, atol=1e-4)


def test_bad_configs_and_missing_files(tmp_path):
    with pytest.raises(ValueError, match="not plain GPT-2"):
        gpt2.config_from_hf(
            {
                "activation_function": "relu",
                "vocab_size": 5,
                "n_positions": 4,
                "n_layer": 1,
                "n_head": 1,
                "n_embd": 4,
            }
        )
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        gpt2.gpt2_files(tmp_path)
    with pytest.raises(ValueError, match="not GPT-2 parameters"):
        gpt2.state_from_hf(
            {"wte.weight": torch.zeros(2, 2), "encoder.layer.0.weight": torch.zeros(1)}
        )
    (tmp_path / "bad.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{oops")
    with pytest.raises(ValueError, match="safetensors header"):
        gpt2.read_safetensors(tmp_path / "bad.safetensors")


def test_gelu_option_defaults_to_the_exact_gelu():
    config = gpt.GPTConfig(vocab_size=5)
    assert config.gelu_approximate == "none"
    assert gpt.GPTConfig.from_dict({"vocab_size": 5}).gelu_approximate == "none"  # old checkpoints
    with pytest.raises(ValueError, match="gelu_approximate"):
        gpt.GPTConfig(vocab_size=5, gelu_approximate="fast")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from the 256 bytes to printable characters (e.g. a space is 'Ġ')."""
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = [b for b in range(256) if b not in keep]
    return {**{b: chr(b) for b in keep}, **{b: chr(256 + i) for i, b in enumerate(extra)}}


def _write_bpe(folder, merges) -> dict:
    """Write a tiny byte-level BPE (vocab.json + merges.txt) into ``folder``; return its vocab."""
    vocab = {ch: i for i, ch in enumerate(sorted(_bytes_to_unicode().values()))}
    for pair in merges:
        vocab["".join(pair.split())] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return vocab


def test_bpe_tokenizer_from_local_files(tmp_path):
    """A tiny byte-level BPE written here decodes what it encodes."""
    vocab = _write_bpe(tmp_path, ["h e", "l l", "he ll", "Ġ w"])
    tok = gpt2.GPT2Tokenizer(tmp_path)
    ids = tok.encode("hello world")
    assert ids[0] == vocab["hell"] and vocab["Ġw"] in ids
    assert tok.decode(ids) == "hello world" and tok.decode(torch.tensor(ids)) == "hello world"
    assert tok.eos_id == vocab["<|endoftext|>"] and tok.vocab_size == len(vocab)


def test_bpe_tokenizer_matches_the_reference_tokenizer(tmp_path):
    """The same tiny vocab and merges in ``transformers``' GPT2Tokenizer give the same ids."""
    _write_bpe(tmp_path, ["h e", "l l", "he ll", "Ġ w", "o r", "Ġw or", "' s", "Ġ t", "Ġt he"])
    ours = gpt2.GPT2Tokenizer(tmp_path)
    files = [str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt")]
    reference = transformers.GPT2Tokenizer(*files)
    for text in ["hello world", "the world's end", "  spaces\tand\nnewlines ", "Ünïcödé 42!"]:
        assert ours.encode(text) == reference.encode(text), text
        assert ours.decode(ours.encode(text)) == text
