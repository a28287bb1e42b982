"""helpers.bpe: the byte-level BPE by hand, checked against Hugging Face's GPT-2 tokenizer."""

from __future__ import annotations

import pytest

from helpers.bpe import (
    BPETokenizer,
    best_pair,
    bytes_to_unicode,
    count_words,
    merge_word,
    pair_counts,
    train_merges,
    train_naive,
)

EOT = "<|endoftext|>"

# a small training text: verse, prose, code, numbers, URLs, Chinese, emoji
CORPUS = (
    """First Citizen:
Before we proceed any further, hear me speak.

All:
Speak, speak.

First Citizen:
You are all resolved rather to die than to famish?

All:
Resolved. resolved.

ROMEO:
But, soft! what light through yonder window breaks?
It is the east, and Juliet is the sun.
I'll say it again: don't, won't, can't, they're, we've, I'm, she'd.

def train(model, loader, epochs=3):
    for epoch in range(epochs):
        for x, y in loader:
            loss = model(x, y)  # 12345 3.14 2024-01-31
            print(f"epoch {epoch}: {loss:.4f}")

See https://example.com/path?q=1&lang=en or http://localhost:8000/v1/models.
从零开始大模型开发与微调。大模型的微调从零开始。
Emoji 👩‍👩‍👧 and 🎉🎉 and café, naïve, e\u0301.
"""
    * 3
)

STRINGS = [
    "",
    " ",
    "a  b\t\n\n  c   ",
    "  leading and trailing  ",
    "\n\n\nthree newlines then text",
    "tabs\t\tand\r\nwindows line ends\r\n",
    "从零开始大模型开发与微调",
    "👩‍👩‍👧 family, 🎉 party",
    "e\u0301 and é are not the same bytes",
    "I'll don't WON'T they're",
    "12345 3.14 -7 1,000,000 0x1F",
    "Mixed: English, 中文, Ελληνικά, русский, العربية",
    "First Citizen:\nBefore we proceed any further, hear me speak.",
    "But, soft! what light through yonder window breaks?",
    "O Romeo, Romeo! wherefore art thou Romeo?",
    "def f(x):\n    return x ** 2  # square\n",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "https://example.com/path?q=1&lang=en#frag",
    "mail me at someone@example.org!!!",
    f"one document{EOT}the next one",
    f"{EOT}{EOT} twice at the start",
    "unseen words: xylophone quizzically zephyr",
    "   ",
    "'s 's 'S",
]


@pytest.fixture(scope="module")
def tok():
    return BPETokenizer.train(CORPUS, vocab_size=400)


# --------------------------------------------------------------------------- by hand


def test_pair_counts_and_merge_word_by_hand():
    word = tuple(b"aaabdaaabac")
    a, b, c, d = b"abcd"
    counts = pair_counts({word: 1})
    assert counts == {(a, a): 4, (a, b): 2, (b, d): 1, (d, a): 1, (b, a): 1, (a, c): 1}
    assert pair_counts({word: 3})[(a, a)] == 12  # weighted by the word's frequency
    assert best_pair(counts) == (a, a)
    assert merge_word(word, (a, a), 256) == (256, a, b, d, 256, a, b, a, c)
    assert merge_word((a, a, a, a, a), (a, a), 256) == (256, 256, a)  # left to right
    assert best_pair({(5, 1): 2, (3, 9): 2, (4, 0): 1}) == (3, 9)  # ties: the smallest pair
    assert best_pair({(5, 1): 1}) is None  # no pair occurs twice


def test_train_naive_by_hand_and_its_early_stop():
    a, b, c = b"abc"
    with pytest.warns(UserWarning, match="stopped after 3 of 5 merges"):
        merges = train_naive("aaabdaaabac", 5)
    # aa -> 256; then (a, b) and (256, a) both occur twice: the smaller pair wins; then aa+ab
    assert merges == [(a, a), (a, b), (256, 257)]
    tok = BPETokenizer(merges)
    assert tok.token_bytes(258) == b"aaab" and tok.vocab_size == 259
    assert tok.encode("aaabdaaabac") == [258, ord("d"), 258, a, c]


def test_incremental_training_gives_the_naive_merges():
    merges = train_naive(CORPUS, 120)
    assert len(merges) == 120
    assert train_merges(count_words(CORPUS), 120) == merges
    assert BPETokenizer.train(CORPUS, 256 + 120, special_tokens=()).merges == merges


def test_bytes_to_unicode_is_gpt2s_table():
    table = bytes_to_unicode()
    assert len(table) == 256 and len(set(table.values())) == 256
    assert table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ" and table[ord("A")] == "A"


# --------------------------------------------------------------------------- our tokenizer


@pytest.mark.parametrize("text", STRINGS)
def test_decode_inverts_encode(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_special_tokens(tok):
    eot = tok.special_tokens[EOT]
    assert eot == 399 and tok.vocab_size == 400 and len(tok.merges) == 143
    assert tok.encode(f"a{EOT}b") == [ord("a"), eot, ord("b")]
    with pytest.raises(ValueError, match="allowed_special"):
        tok.encode(f"a{EOT}b", allowed_special="none")
    assert tok.encode("no special", allowed_special="none") == tok.encode("no special")
    assert tok.encode(EOT, allowed_special={EOT}) == [eot]
    with pytest.raises(ValueError, match="special tokens"):
        tok.encode("x", allowed_special={"<|pad|>"})


def test_decode_takes_a_tensor_and_replaces_broken_utf8(tok):
    torch = pytest.importorskip("torch")
    ids = tok.encode("从零开始")
    assert tok.decode(torch.tensor(ids)) == "从零开始"
    assert tok.decode([0xE4]) == "\ufffd"  # the first byte of a three-byte character


def test_errors(tmp_path, tok):
    with pytest.raises(ValueError, match="already the id"):
        BPETokenizer([(97, 98)], special_tokens={EOT: 256})
    with pytest.raises(ValueError, match=r"\[5000\]"):
        tok.decode([97, 5000])
    with pytest.raises(ValueError, match="too small"):
        BPETokenizer.train(CORPUS, vocab_size=256, special_tokens=(EOT,))
    with pytest.raises(ValueError, match="only ids"):
        BPETokenizer([(97, 300)])
    with pytest.raises(FileNotFoundError, match="vocab.json and no merges.txt"):
        BPETokenizer.from_files(tmp_path)


def test_save_and_from_files_round_trip(tmp_path, tok):
    tok.save(tmp_path)
    assert (tmp_path / "merges.txt").read_text().startswith("#version: 0.2\n")
    again = BPETokenizer.from_files(tmp_path)
    assert again.merges == tok.merges and again.special_tokens == tok.special_tokens
    assert all(again.encode(s) == tok.encode(s) for s in STRINGS)


# --------------------------------------------------------------------------- Hugging Face


def _hf_gpt2(folder):
    transformers = pytest.importorskip("transformers")
    hf = transformers.GPT2TokenizerFast.from_pretrained(folder)
    assert hf.encode("") == [] and hf.encode("a") == hf.convert_tokens_to_ids(["a"])  # no BOS
    return hf


def test_transformers_reads_our_files_and_agrees(tmp_path, tok):
    tok.save(tmp_path)
    hf = _hf_gpt2(tmp_path)
    for text in STRINGS:
        ids = tok.encode(text)
        assert hf.encode(text) == ids, text
        assert hf.decode(ids, clean_up_tokenization_spaces=False) == text


def test_we_read_files_trained_by_the_tokenizers_library(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    trainer = tokenizers.ByteLevelBPETokenizer(add_prefix_space=False)
    trainer.train_from_iterator(
        [CORPUS], vocab_size=420, min_frequency=2, special_tokens=[EOT], show_progress=False
    )
    trainer.save_model(str(tmp_path))
    ours = BPETokenizer.from_files(tmp_path)
    assert ours.special_tokens == {EOT: 0}  # ids not in our order: the bytes start at 1
    hf = _hf_gpt2(tmp_path)
    for text in STRINGS:
        assert ours.encode(text) == hf.encode(text), text
        assert ours.decode(ours.encode(text)) == text
