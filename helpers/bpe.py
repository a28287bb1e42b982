"""Byte-level BPE (byte-pair encoding) written from scratch, the way GPT-2 does it.

Text becomes UTF-8 bytes, so any string can be encoded and nothing is ever unknown. Training
starts from the 256 byte values and repeatedly *merges* the most frequent adjacent pair of tokens
into a new token; the ordered list of merges is the tokenizer. Encoding replays the merges on new
text: in each chunk, the pair that was learnt first (lowest rank) is merged, then the next, until
no learnt pair is left. Before any of this, a regex (:data:`GPT2_SPLIT`) cuts the text into
chunks (words with their leading space, numbers, punctuation runs, whitespace), and merges never
cross a chunk boundary. Special tokens such as ``<|endoftext|>`` are cut out of the text first
and never merged.

- :data:`GPT2_SPLIT`: GPT-2's pre-tokenization regex;
- :func:`count_words`: the chunks of a text as tuples of byte ids, with their frequencies;
- :func:`pair_counts`, :func:`best_pair`, :func:`merge_word`: one step of training, by hand;
- :func:`train_naive`: the reference trainer, recounting every pair after every merge;
- :func:`train_merges`: the incremental trainer (updates only the words holding the merged pair);
  it gives the same merges as :func:`train_naive`, much faster;
- :func:`bytes_to_unicode`: GPT-2's map from bytes to printable characters, so that the files
  ``vocab.json`` and ``merges.txt`` are text;
- :class:`BPETokenizer`: ``train``, ``encode``, ``decode``, and ``save``/``from_files`` in GPT-2's
  format (readable by Hugging Face's ``GPT2TokenizerFast``).

Ids: byte ``b`` is id ``b`` and merge ``i`` makes id ``256 + i``, then come the special tokens.
Files written by other tools number their tokens differently; :class:`BPETokenizer` takes the
``vocab`` (id -> bytes) it is given and finds each merge's result by its bytes.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter, defaultdict
from pathlib import Path

import regex

GPT2_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

Word = tuple[int, ...]
Pair = tuple[int, int]


# --------------------------------------------------------------------------- training, by hand


def count_words(text: str, pattern: str = GPT2_SPLIT) -> Counter:
    """Each distinct chunk of ``text`` (cut by ``pattern``) as a tuple of byte ids -> its count."""
    return Counter(tuple(chunk.encode("utf-8")) for chunk in regex.findall(pattern, text))


def pair_counts(words: dict[Word, int]) -> Counter:
    """How often each adjacent pair of ids occurs, each word counting as often as it occurs."""
    counts = Counter()
    for word, n in words.items():
        for pair in zip(word, word[1:]):
            counts[pair] += n
    return counts


def best_pair(counts: dict[Pair, int]) -> Pair | None:
    """The pair to merge next: the most frequent; among equally frequent pairs, the smallest
    (compare the first ids, then the second ones). ``None`` when no pair occurs twice: merging a
    pair seen once would only memorise the training text."""
    top = max(counts.values(), default=0)
    if top < 2:
        return None
    return min(pair for pair, n in counts.items() if n == top)


def merge_word(word: Word, pair: Pair, new_id: int) -> Word:
    """``word`` with every occurrence of ``pair`` replaced by ``new_id``, scanning left to right
    (so ``(a, a, a)`` with pair ``(a, a)`` becomes ``(new_id, a)``)."""
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == pair[0] and word[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def _stopped_early(done: int, wanted: int) -> None:
    warnings.warn(
        f"BPE training stopped after {done} of {wanted} merges: no pair of tokens occurs twice "
        "any more. Train on a longer text, or ask for a smaller vocab_size.",
        stacklevel=3,
    )


def train_naive(text: str, n_merges: int, pattern: str = GPT2_SPLIT) -> list[Pair]:
    """The reference trainer: after each merge, count every pair of every word again.

    Returns the merges in order; merge ``i`` makes id ``256 + i``. Stops early, with a warning,
    when no pair occurs twice. Its cost is (number of merges) x (size of the word list).
    """
    words = count_words(text, pattern)
    merges = []
    for i in range(n_merges):
        pair = best_pair(pair_counts(words))
        if pair is None:
            _stopped_early(i, n_merges)
            break
        # distinct words stay distinct (their bytes do not change), so no counts are lost here
        words = {merge_word(word, pair, 256 + i): n for word, n in words.items()}
        merges.append(pair)
    return merges


# --------------------------------------------------------------------------- training, fast


def _merge_in_place(words, w, n, pair, new_id, counts, where) -> None:
    """Merge ``pair`` in word ``w`` (which occurs ``n`` times) and update the pair counts:
    remove the pairs of the old word, add those of the new one."""
    old = words[w]
    new = merge_word(old, pair, new_id)
    if new == old:  # a stale entry of `where`: the word lost this pair in an earlier merge
        return
    for p in zip(old, old[1:]):
        counts[p] -= n
        if counts[p] == 0:
            del counts[p]
    for p in zip(new, new[1:]):
        counts[p] += n
        where[p].add(w)
    words[w] = new


def train_merges(words: dict[Word, int], n_merges: int) -> list[Pair]:
    """The merges learnt from ``words`` (tuples of byte ids -> counts, see :func:`count_words`).

    The same merges as :func:`train_naive`, but each step only touches the words that hold the
    merged pair: ``counts`` (pair -> count) and ``where`` (pair -> the words holding it) are
    updated, never recounted. Stops early, with a warning, when no pair occurs twice.
    """
    word_list, freqs = list(words), list(words.values())
    counts = pair_counts(words)
    where = defaultdict(set)
    for w, word in enumerate(word_list):
        for pair in zip(word, word[1:]):
            where[pair].add(w)
    merges = []
    while len(merges) < n_merges:
        pair = best_pair(counts)
        if pair is None:
            _stopped_early(len(merges), n_merges)
            break
        new_id = 256 + len(merges)
        for w in where.pop(pair):
            _merge_in_place(word_list, w, freqs[w], pair, new_id, counts, where)
        merges.append(pair)
    return merges


# --------------------------------------------------------------------------- GPT-2's files


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte (0..255) to a printable character.

    Printable bytes (``!``..``~``, ``¡``..``¬``, ``®``..``ÿ``) stand for themselves; the others
    (control characters, space, ...) get the characters from ``chr(256)`` on, in order. So the
    space is ``Ġ`` and the newline ``Ċ``, and every token can be written as a word of text.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return dict(sorted(mapping.items()))


def _read_merges(path: Path, token_ids: dict[str, int]) -> list[Pair]:
    """The pairs of ``merges.txt`` as ids (``token_ids``: token string -> id, from vocab.json)."""
    lines = path.read_text(encoding="utf-8").split("\n")
    first = 1
    if lines and lines[0].startswith("#version"):
        lines, first = lines[1:], 2
    merges = []
    for number, line in enumerate(lines, start=first):
        line = line.rstrip("\r")
        if not line:
            continue
        parts = line.split(" ")
        unknown = [part for part in parts if part not in token_ids]
        if len(parts) != 2 or unknown:
            raise ValueError(
                f"{path}, line {number}: {line!r} is not two tokens of vocab.json separated by "
                f"one space (unknown: {unknown}). Use the merges.txt saved with this vocab.json."
            )
        merges.append((token_ids[parts[0]], token_ids[parts[1]]))
    return merges


# --------------------------------------------------------------------------- the tokenizer


def _default_vocab(merges: list[Pair]) -> dict[int, bytes]:
    """The vocabulary of a trained tokenizer: byte b is id b, merge i makes id 256 + i."""
    vocab = {b: bytes([b]) for b in range(256)}
    for i, (a, b) in enumerate(merges):
        if a not in vocab or b not in vocab:
            raise ValueError(
                f"merge {i} is {(a, b)}, but only ids 0..{255 + i} exist before it (merge i "
                "makes id 256 + i). Pass `vocab` if your ids are numbered differently."
            )
        vocab[256 + i] = vocab[a] + vocab[b]
    return vocab


def _check_vocab(vocab: dict[int, bytes]) -> dict[bytes, int]:
    """bytes -> id; every byte value must have a token, and no two tokens the same bytes."""
    ids = {}
    for i, token in vocab.items():
        if token in ids:
            raise ValueError(
                f"ids {ids[token]} and {i} are both {token!r}: give every byte string one id."
            )
        ids[token] = i
    missing = [b for b in range(256) if bytes([b]) not in ids]
    if missing:
        raise ValueError(
            f"the vocabulary has no token for the bytes {missing[:10]} ({len(missing)} in all): "
            "a byte-level BPE needs all 256, or some texts could not be encoded."
        )
    return ids


def _check_special(special_tokens: dict[str, int], vocab: dict[int, bytes]) -> dict[str, int]:
    """The special tokens, checked: non-empty strings with their own ids."""
    special_tokens = dict(special_tokens or {})
    taken = {}
    for text, i in special_tokens.items():
        if not isinstance(text, str) or not text:
            raise ValueError(f"special token {text!r} must be a non-empty string.")
        if i in vocab or i in taken:
            other = repr(vocab[i]) if i in vocab else repr(taken[i])
            raise ValueError(
                f"special token {text!r} has id {i}, already the id of {other}; "
                "give it an id of its own (train numbers them after the merges)."
            )
        taken[i] = text
    return special_tokens


class BPETokenizer:
    """A byte-level BPE tokenizer: ``encode`` text to ids, ``decode`` ids to text.

    ``merges`` are pairs of ids in the order they were learnt (their rank); ``vocab`` maps every
    ordinary id to its bytes. A merge's result is the token with the two halves' bytes joined.
    Without ``vocab``, byte ``b`` is id ``b`` and merge ``i`` makes id ``256 + i`` (what
    :meth:`train` and :func:`train_naive` produce); GPT-2-format files give their own ``vocab``
    (see :meth:`from_files`). ``special_tokens`` (string -> id) need ids of their own.
    """

    def __init__(
        self,
        merges: list[Pair],
        special_tokens: dict[str, int] | None = None,
        pattern: str = GPT2_SPLIT,
        vocab: dict[int, bytes] | None = None,
    ):
        self.merges = [tuple(pair) for pair in merges]
        self.vocab = dict(vocab) if vocab is not None else _default_vocab(self.merges)
        ids_of_bytes = _check_vocab(self.vocab)
        self.special_tokens = _check_special(special_tokens, self.vocab)
        self.pattern = pattern
        self._chunks = regex.compile(pattern)
        self._byte_ids = [ids_of_bytes[bytes([b])] for b in range(256)]
        self._ranks = {}  # pair -> (rank, id of the merged token)
        for rank, (a, b) in enumerate(self.merges):
            if a not in self.vocab or b not in self.vocab:
                raise ValueError(f"merge {rank} {(a, b)} uses ids that are not in the vocab.")
            joined = self.vocab[a] + self.vocab[b]
            if joined not in ids_of_bytes:
                raise ValueError(f"merge {rank} {(a, b)} makes {joined!r}, not in the vocab.")
            self._ranks.setdefault((a, b), (rank, ids_of_bytes[joined]))
        self._token_bytes = dict(self.vocab)
        self._token_bytes.update({i: s.encode("utf-8") for s, i in self.special_tokens.items()})
        self._cache: dict[str, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        """The number of ids an embedding table needs: the largest id + 1."""
        return max(self._token_bytes) + 1

    def __repr__(self) -> str:
        return (
            f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
            f"special_tokens={self.special_tokens})"
        )

    # ----------------------------------------------------------------------- training

    @classmethod
    def train(
        cls,
        text: str,
        vocab_size: int,
        special_tokens=("<|endoftext|>",),
        pattern: str = GPT2_SPLIT,
    ) -> BPETokenizer:
        """Learn ``vocab_size - 256 - len(special_tokens)`` merges from ``text``.

        The special tokens are cut out of ``text`` first, so they are never merged, and get the
        ids after the merges. If no pair occurs twice before the end, training stops with a
        warning, and the vocabulary is smaller than asked.
        """
        if isinstance(special_tokens, str):
            raise ValueError(f"special_tokens={special_tokens!r}: pass a tuple of strings.")
        special_tokens = tuple(special_tokens)
        if len(set(special_tokens)) != len(special_tokens):
            raise ValueError(f"special_tokens {special_tokens} has repeats; list each once.")
        n_merges = vocab_size - 256 - len(special_tokens)
        if n_merges < 0:
            raise ValueError(
                f"vocab_size={vocab_size} is too small: the 256 bytes and "
                f"{len(special_tokens)} special tokens alone need {256 + len(special_tokens)}."
            )
        words = Counter()
        for piece in _split_on(text, special_tokens)[::2]:
            words.update(count_words(piece, pattern))
        merges = train_merges(words, n_merges)
        first = 256 + len(merges)
        special = {s: first + k for k, s in enumerate(special_tokens)}
        return cls(merges, special, pattern)

    # ----------------------------------------------------------------------- encoding

    def encode(self, text: str, allowed_special: str | set = "all") -> list[int]:
        """The ids of ``text``.

        ``allowed_special``: ``"all"`` (every special token string in the text becomes its id),
        ``"none"``, or a set of special token strings. A special token string that is not allowed
        raises ValueError rather than being encoded as ordinary text.
        """
        if not isinstance(text, str):
            raise ValueError(f"encode takes a str, got {type(text).__name__}; decode it first.")
        allowed = self._allowed(allowed_special)
        pieces = _split_on(text, allowed)
        ids = []
        for k, piece in enumerate(pieces):
            if k % 2:
                ids.append(self.special_tokens[piece])
                continue
            self._refuse_special(piece)
            for chunk in self._chunks.findall(piece):
                ids.extend(self._encode_chunk(chunk))
        return ids

    def _allowed(self, allowed_special) -> tuple[str, ...]:
        if allowed_special == "all":
            return tuple(self.special_tokens)
        if allowed_special == "none":
            return ()
        if isinstance(allowed_special, str) or not set(allowed_special) <= set(self.special_tokens):
            raise ValueError(
                f"allowed_special={allowed_special!r}: pass 'all', 'none', or a set of this "
                f"tokenizer's special tokens {sorted(self.special_tokens)}."
            )
        return tuple(allowed_special)

    def _refuse_special(self, piece: str) -> None:
        found = [s for s in self.special_tokens if s in piece]
        if found:
            raise ValueError(
                f"the text holds the special token(s) {found}, which allowed_special does not "
                "allow: pass allowed_special='all' (or a set naming them) to encode them as "
                "special tokens, or remove them from the text."
            )

    def _encode_chunk(self, chunk: str) -> list[int]:
        """One chunk of the regex: its bytes, then merges by rank (cached, chunks repeat a lot)."""
        ids = self._cache.get(chunk)
        if ids is None:
            ids = self._cache[chunk] = self._merge_bytes(chunk.encode("utf-8"))
        return ids

    def _merge_bytes(self, data: bytes) -> list[int]:
        """GPT-2's algorithm: merge the lowest-rank pair present, everywhere, until none is left."""
        word = tuple(self._byte_ids[b] for b in data)
        never = (float("inf"), -1)
        while len(word) > 1:
            pair = min(zip(word, word[1:]), key=lambda p: self._ranks.get(p, never))
            if pair not in self._ranks:
                break
            word = merge_word(word, pair, self._ranks[pair][1])
        return list(word)

    # ----------------------------------------------------------------------- decoding

    def token_bytes(self, i: int) -> bytes:
        """The bytes of token ``i`` (a special token: its string in UTF-8)."""
        if i not in self._token_bytes:
            raise ValueError(f"id {i} is not in this tokenizer (ids 0..{self.vocab_size - 1}).")
        return self._token_bytes[i]

    def decode(self, ids) -> str:
        """The text of ``ids`` (a list, or a 1-D tensor). Bytes that are not valid UTF-8 (a token
        sequence cut inside a character) show as U+FFFD."""
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        try:
            data = b"".join([self._token_bytes[i] for i in ids])
        except KeyError:
            unknown = list(dict.fromkeys(i for i in ids if i not in self._token_bytes))
            raise ValueError(
                f"ids {unknown} are not in this tokenizer (ids 0..{self.vocab_size - 1}): "
                "decode ids made by this tokenizer's encode."
            ) from None
        except TypeError:
            raise ValueError(
                "decode takes a flat sequence of int ids (a list or a 1-D tensor), got "
                f"{str(ids)[:60]}; decode each row of a batch separately."
            ) from None
        return data.decode("utf-8", errors="replace")

    # ----------------------------------------------------------------------- files

    def save(self, folder) -> None:
        """Write ``vocab.json`` and ``merges.txt`` in GPT-2's format into ``folder``."""
        to_text = bytes_to_unicode()
        names = {i: "".join(to_text[b] for b in token) for i, token in self.vocab.items()}
        token_ids = {name: i for i, name in sorted(names.items())}
        for text, i in self.special_tokens.items():
            if text in token_ids:
                raise ValueError(
                    f"special token {text!r} is spelt like ordinary token {token_ids[text]} in "
                    "GPT-2's file format; rename the special token."
                )
            token_ids[text] = i
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "vocab.json").write_text(
            json.dumps(token_ids, ensure_ascii=False, indent=1), encoding="utf-8"
        )
        lines = ["#version: 0.2", *(f"{names[a]} {names[b]}" for a, b in self.merges)]
        (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")

    @classmethod
    def from_files(cls, folder, special_tokens: dict[str, int] | None = None) -> BPETokenizer:
        """A tokenizer from GPT-2-format ``vocab.json`` + ``merges.txt`` in ``folder``.

        Tokens of ``vocab.json`` that are neither a single byte nor the result of a merge (like
        ``<|endoftext|>``) become special tokens; ``special_tokens`` adds more (string -> id).
        """
        folder = Path(folder)
        missing = [name for name in ("vocab.json", "merges.txt") if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{folder} has no {' and no '.join(missing)}: a GPT-2-format tokenizer is the "
                "two files vocab.json and merges.txt. Point from_files at the folder holding "
                "them (BPETokenizer.save writes them)."
            )
        token_ids = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
        merges = _read_merges(folder / "merges.txt", token_ids)
        names = {i: name for name, i in token_ids.items()}
        ordinary = set(bytes_to_unicode().values()) | {names[a] + names[b] for a, b in merges}
        from_text = {c: b for b, c in bytes_to_unicode().items()}
        vocab = {i: bytes(from_text[c] for c in s) for s, i in token_ids.items() if s in ordinary}
        special = {s: i for s, i in token_ids.items() if s not in ordinary}
        special.update(special_tokens or {})
        return cls(merges, special, vocab=vocab)


def _split_on(text: str, specials) -> list[str]:
    """``text`` cut around each occurrence of the ``specials`` strings: ordinary text at even
    positions, special tokens at odd ones (longest first, so one may start another)."""
    if not specials:
        return [text]
    alternatives = "|".join(regex.escape(s) for s in sorted(specials, key=len, reverse=True))
    return regex.split(f"({alternatives})", text)
