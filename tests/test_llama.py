"""The modern decoder (helpers.llama), offline: tiny random Llama and Qwen3 models from the
reference implementation, saved in the Hugging Face format and loaded through our own reader."""

import json

import pytest
import torch

from helpers import gpt, llama, positions

transformers = pytest.importorskip("transformers", reason="transformers is a dev (test) dependency")

VOCAB = 101
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 16,
}
SHAPE = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=160,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    bos_token_id=None,
    eos_token_id=None,
    pad_token_id=None,
)
CASES = {
    "llama-tied": ("llama", dict(tie_word_embeddings=True)),
    "llama-untied-llama3-rope": (
        "llama",
        dict(tie_word_embeddings=False, rope_parameters=LLAMA3_ROPE),
    ),
    "qwen3": (
        "qwen3",
        dict(
            head_dim=32,
            tie_word_embeddings=True,
            attention_bias=True,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6},
        ),
    ),
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matrices gain nothing from threads, and busy threads can wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _perturb(model):
    """Larger weights than at init and norm gains away from 1: a mix-up shows in the logits."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.3 * torch.randn_like(p))
            else:
                p.normal_(std=0.3 if p.dim() > 1 else 0.1)


@pytest.fixture(scope="module", params=list(CASES))
def reference(request, tmp_path_factory):
    """(folder, HF model, case name): a random tiny model saved by save_pretrained."""
    kind, extra = CASES[request.param]
    folder = tmp_path_factory.mktemp(request.param)
    torch.manual_seed(0)
    if kind == "llama":
        config = transformers.LlamaConfig(**SHAPE, **extra)
        model = transformers.LlamaForCausalLM(config)
    else:
        config = transformers.Qwen3Config(**SHAPE, **extra)
        model = transformers.Qwen3ForCausalLM(config)
    _perturb(model)
    model.eval().save_pretrained(folder, safe_serialization=True)
    return folder, model, request.param


def _ids(T=32, B=2, seed=0):
    return torch.randint(0, VOCAB, (B, T), generator=torch.Generator().manual_seed(seed))


def test_hf_models_load_with_the_same_logits(reference):
    folder, hf, name = reference
    model = llama.load_pretrained(folder)
    tied = hf.config.tie_word_embeddings
    assert (model.lm_head.weight is model.embed_tokens.weight) == tied
    ids = _ids()
    with torch.no_grad():
        expected, ours = hf(ids).logits, model(ids)
    diff = (ours - expected).abs().max().item()
    print(f"{name}: max |logit difference| {diff:.2e}, logits up to {expected.abs().max():.1f}")
    assert diff <= 1e-4


def test_rope_frequencies_match_transformers(reference):
    folder, hf, _ = reference
    config = llama.config_from_hf(json.loads((folder / "config.json").read_text()))
    ours = llama.rope_frequencies(config)
    assert torch.equal(ours, hf.model.rotary_emb.inv_freq)


def test_llama3_rope_scaling_matters(reference):
    folder, hf, name = reference
    if "llama3" not in name:
        pytest.skip("only the llama3-scaled case")
    model = llama.load_pretrained(folder)
    assert model.config.rope_scaling["factor"] == 8.0
    plain = llama.Llama(model.config.replace(rope_scaling=None))
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert (plain(_ids()) - model(_ids())).abs().max() > 1e-2


def test_cached_generation_equals_uncached_and_transformers(reference):
    folder, hf, name = reference
    model = llama.load_pretrained(folder)
    prompt = _ids(T=7, B=2, seed=3)
    cached = model.generate(prompt, 20, temperature=0)
    uncached = model.generate(prompt, 20, temperature=0, use_cache=False)
    assert torch.equal(cached, uncached)
    theirs = prompt  # greedy decoding with the reference model (what generate(do_sample=False)
    with torch.no_grad():  # does, without its one-off cost of several seconds in a test)
        for _ in range(8):
            theirs = torch.cat([theirs, hf(theirs).logits[:, -1:].argmax(-1)], dim=1)
    assert torch.equal(theirs, cached[:, : prompt.shape[1] + 8])


def test_default_rope_equals_the_course_rope_angles():
    config = llama.LlamaConfig(vocab_size=5, n_embd=64, n_head=4, rope_theta=10000.0)
    pos = torch.arange(50)
    cos, sin = llama.rope_cos_sin(config, pos)
    cos2, sin2 = positions.rope_angles(pos, 16, 10000.0)
    assert torch.allclose(cos, cos2, atol=1e-5) and torch.allclose(sin, sin2, atol=1e-5)


def _random_model(seed=0, **changes):
    torch.manual_seed(seed)
    shape = dict(vocab_size=50, block_size=64, n_layer=2, n_head=4, n_kv_head=2, n_embd=32)
    model = llama.Llama(llama.LlamaConfig(**{**shape, **changes})).eval()
    _perturb(model)  # sharper logits than at init: greedy choices are clear
    return model


def test_cache_in_chunks_gives_the_logits_of_one_pass():
    """Prefill 10 tokens, then 7 at once (the offset causal mask), then 1: as one forward."""
    model = _random_model()
    ids = torch.randint(0, 50, (2, 18), generator=torch.Generator().manual_seed(1))
    cache = gpt.KVCache(model.config.n_layer)
    with torch.no_grad():
        full = model(ids)
        parts = [model(ids[:, a:b], cache) for a, b in ((0, 10), (10, 17), (17, 18))]
    assert len(cache) == 18
    assert torch.allclose(torch.cat(parts, dim=1), full, atol=1e-4)


@pytest.mark.parametrize("changes", [{}, {"position": "learned", "norm": "layer", "mlp": "gelu"}])
def test_random_gqa_model_cached_generation_equals_uncached(changes):
    model = _random_model(**changes)
    prompt = torch.randint(0, 50, (2, 5), generator=torch.Generator().manual_seed(2))
    cached = model.generate(prompt, 20, temperature=0)
    assert cached.shape == (2, 25)
    assert torch.equal(cached, model.generate(prompt, 20, temperature=0, use_cache=False))
    sampled = model.generate(prompt, 5, top_k=3, generator=torch.Generator().manual_seed(0))
    assert sampled.shape == (2, 10) and model.training is False


@pytest.mark.parametrize("n_kv_head", [4, 2, 1])  # MHA, GQA, MQA
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kv_cache_bytes_per_token_matches_the_cache(n_kv_head, dtype):
    model = _random_model(n_kv_head=n_kv_head).to(dtype)
    cache, T = gpt.KVCache(model.config.n_layer), 9
    with torch.no_grad():
        model(torch.zeros(1, T, dtype=torch.long), cache)
    stored = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.k, layer.v))
    assert stored / T == llama.kv_cache_bytes_per_token(model.config, dtype)
    assert all(layer.k.shape[1] == n_kv_head for layer in cache.layers)


def test_rmsnorm_equals_torch_rmsnorm():
    x = torch.randn(3, 5, 16)
    ours = llama.RMSNorm(16, eps=1e-5)
    theirs = torch.nn.RMSNorm(16, eps=1e-5)
    with torch.no_grad():
        ours.weight.normal_()
        theirs.weight.copy_(ours.weight)
        assert torch.allclose(ours(x), theirs(x), atol=1e-6)
        assert ours.bfloat16()(x.bfloat16()).dtype == torch.bfloat16  # a bf16 model stays bf16


def test_swiglu_and_gelu_mlps_have_equal_parameter_counts():
    config = llama.LlamaConfig(vocab_size=50, n_embd=128)
    assert config.ffn_size == 352  # 8/3 * 128 = 341.3, rounded up to a multiple of 32
    assert llama.LlamaConfig(vocab_size=50, n_embd=128, mlp="gelu").ffn_size == 512
    wide = llama.gelu_hidden(config.ffn_size)
    swiglu, gelu = llama.SwiGLU(128, config.ffn_size), llama.GeluMLP(128, wide)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(swiglu) == count(gelu) == 3 * 128 * 352
    modern = llama.Llama(config)
    old = llama.Llama(config.replace(mlp="gelu", hidden=wide))
    assert modern.num_parameters() == old.num_parameters()
    with pytest.raises(ValueError, match="even"):
        llama.gelu_hidden(33)


def test_ablation_switches_build_and_run():
    for changes in ({"norm": "layer"}, {"mlp": "gelu"}, {"position": "learned"}):
        model = _random_model(**changes)
        assert model(torch.zeros(2, 8, dtype=torch.long)).shape == (2, 8, 50)
    model = _random_model(norm="layer", position="learned")
    assert isinstance(model.norm, torch.nn.LayerNorm) and model.pos_emb is not None
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 65, dtype=torch.long))
    rope = _random_model()  # RoPE has no table: a longer sequence still runs
    assert rope(torch.zeros(1, 65, dtype=torch.long)).shape == (1, 65, 50)


def test_config_round_trip_and_errors():
    config = llama.LlamaConfig(vocab_size=7, rope_scaling=dict(LLAMA3_ROPE))
    assert llama.LlamaConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="multiple of n_kv_head"):
        llama.LlamaConfig(vocab_size=7, n_head=4, n_kv_head=3)
    with pytest.raises(ValueError, match="mlp should be one of"):
        llama.LlamaConfig(vocab_size=7, mlp="relu")
    with pytest.raises(ValueError, match="rope_scaling"):
        llama.LlamaConfig(vocab_size=7, rope_scaling={"rope_type": "yarn", "factor": 4.0})


def test_unsupported_hf_configs_are_refused():
    base = transformers.LlamaConfig(**SHAPE).to_dict()
    with pytest.raises(ValueError, match="model_type 'mistral'"):
        llama.config_from_hf({**base, "model_type": "mistral"})
    with pytest.raises(ValueError, match="yarn"):
        llama.config_from_hf({**base, "rope_parameters": {"rope_type": "yarn", "factor": 4.0}})
    with pytest.raises(ValueError, match="mlp_bias"):
        llama.config_from_hf({**base, "mlp_bias": True})
    with pytest.raises(ValueError, match="hidden_act"):
        llama.config_from_hf({**base, "hidden_act": "gelu"})
    qwen = transformers.Qwen3Config(**SHAPE).to_dict()
    assert llama.config_from_hf(qwen).qk_norm
    with pytest.raises(ValueError, match="sliding-window"):
        llama.config_from_hf({**qwen, "use_sliding_window": True})
    scaling = {k: v for k, v in LLAMA3_ROPE.items() if k != "rope_theta"}
    old = {**base, "rope_parameters": None, "rope_theta": 5e5, "rope_scaling": scaling}
    config = llama.config_from_hf(old)  # transformers 4's layout of the same settings
    assert config.rope_theta == 5e5 and config.rope_scaling["factor"] == 8.0


def test_missing_files_and_foreign_tensors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="config.json, model.safetensors") as error:
        llama.model_files(tmp_path)
    assert "https://huggingface.co/HuggingFaceTB/SmolLM2-135M" in str(error.value)
    assert "HF_ENDPOINT" in str(error.value) and "download=True" in str(error.value)
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="SmolLM2-135M"):
        llama.model_files()
    config = llama.LlamaConfig(vocab_size=7, tie_embeddings=False)
    with pytest.raises(ValueError, match="not parameters of a Llama"):
        llama.state_from_hf({"model.vision_tower.weight": torch.zeros(1)}, config)
    with pytest.raises(ValueError, match="no lm_head.weight"):
        llama.state_from_hf({"model.embed_tokens.weight": torch.zeros(7, 128)}, config)


def test_sharded_checkpoints_load(reference, tmp_path):
    folder, hf, name = reference
    if name != "qwen3":
        pytest.skip("one case is enough")
    hf.save_pretrained(tmp_path, safe_serialization=True, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    model, ids = llama.load_pretrained(tmp_path), _ids(T=8)
    with torch.no_grad():
        assert torch.allclose(model(ids), hf(ids).logits, atol=1e-4)
