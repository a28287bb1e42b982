"""Tokenizers: text to integer ids and back.

:class:`CharTokenizer` gives one token per character (chapter 04's GPT).
"""

from __future__ import annotations

import torch


class CharTokenizer:
    """One token per character: ``encode`` maps text to ids, ``decode`` maps ids back."""

    def __init__(self, chars):
        chars = "".join(chars)
        if not chars or len(set(chars)) != len(chars):
            raise ValueError(
                "CharTokenizer needs a non-empty string of distinct characters; "
                "use CharTokenizer.from_text(text) to build one from a text."
            )
        self.chars = chars
        self.stoi = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        """The vocabulary is every character of ``text``, sorted."""
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[c] for c in text]
        except KeyError:
            unknown = sorted(set(text) - self.stoi.keys())
            raise ValueError(
                f"characters {unknown} are not in this tokenizer's vocabulary of {self.vocab_size} "
                "characters; remove them from the text, or build the tokenizer from a text that "
                "contains them (CharTokenizer.from_text)."
            ) from None

    def decode(self, ids) -> str:
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        if any(not 0 <= i < self.vocab_size for i in ids):
            bad = sorted({i for i in ids if not 0 <= i < self.vocab_size})
            raise ValueError(
                f"ids {bad[:10]} are outside the vocabulary (0 to {self.vocab_size - 1})."
            )
        return "".join(self.chars[i] for i in ids)

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"
