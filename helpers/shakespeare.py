"""Tiny Shakespeare as fine-tuning material: chapter 04's split, speeches, held-out speakers.

- :func:`pretraining_split`: the character index where chapter 04's training text ends (the first
  90% trained the character GPT; of the last 10%, 90-95% validated it and 95-100% tested it,
  see :func:`test_split`);
- :func:`split_text`: that split as three texts; :func:`without_speakers`: a text without the
  speeches of some speakers (:data:`HELD_OUT_SPEAKERS`, whom chapter 06's base model never read);
- :func:`speeches`: the text cut into speeches (speaker, body, where it starts and ends), and
  :func:`split_by_position`: train / validation / test by runs of consecutive speeches, so that
  no speech (and no window of text) is in two splits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PRETRAIN_FRACTION = 0.9  # chapter 04: the first 90% of the characters trained the model
TEST_FRACTION = 0.95  # chapter 04: 90-95% validation (curves, best checkpoint), 95-100% test


HELD_OUT_SPEAKERS = ("GLOUCESTER", "DUKE VINCENTIO", "MENENIUS", "ROMEO")  # chapter 06's tasks


def pretraining_split(text: str) -> int:
    """Chapter 04's cut: ``text[:cut]`` trained the character GPT, ``text[cut:]`` was held out."""
    return int(PRETRAIN_FRACTION * len(text))


def test_split(text: str) -> int:
    """Chapter 04's second cut: ``text[cut:test]`` validated the GPT, ``text[test:]`` tested it."""
    return int(TEST_FRACTION * len(text))


def split_text(text: str) -> dict[str, str]:
    """The course's one split of Tiny Shakespeare, by position: ``train`` (the first 90%),
    ``val`` (90-95%) and ``test`` (95-100%); no window of text is in two parts."""
    cut, test = pretraining_split(text), test_split(text)
    return {"train": text[:cut], "val": text[cut:test], "test": text[test:]}


def without_speakers(text: str, speakers) -> str:
    """``text`` with every speech of ``speakers`` removed (name line, words and the blank line
    after them): a model pretrained on the rest has never read a word of theirs."""
    speakers = set(speakers)
    kept, position = [], 0
    for speech in speeches(text):
        if speech.speaker in speakers:
            kept.append(text[position : speech.start])
            position = min(len(text), speech.end + 2)  # the words and the blank line
    kept.append(text[position:])
    return "".join(kept)


# --------------------------------------------------------------------------- speeches


@dataclass(frozen=True)
class Speech:
    """One speech: who speaks, the words (without the name line), where it sits in the text."""

    speaker: str
    body: str
    start: int  # index of the speaker's name in the text
    end: int  # index just after the body
    index: int  # position in the list of all speeches


SPEECH = re.compile(r"(?:^|(?<=\n\n))([^\n:]+):\n(.+?)(?=\n\n|\Z)", re.S)


def speeches(text: str) -> list[Speech]:
    """Every "NAME:\\nwords" block of the text, in order."""
    found = [
        Speech(m.group(1), m.group(2), m.start(1), m.end(2), i)
        for i, m in enumerate(SPEECH.finditer(text))
    ]
    if not found:
        raise ValueError(
            "no speeches found: expected blocks of 'NAME:\\nwords' separated by a "
            "blank line (the layout of Tiny Shakespeare)."
        )
    return found


def split_by_position(items: list, run: int = 5, pattern=(14, 3, 3)) -> dict[str, list]:
    """Cut ``items`` (in text order) into runs of ``run`` and deal the runs out by ``pattern``.

    With the default, out of every 20 runs of 5 consecutive speeches, 14 go to ``train``, 3 to
    ``val`` and 3 to ``test`` (70/15/15): every scene of 100 speeches feeds each split, and
    neighbouring speeches (one exchange) stay together.
    Returns ``{"train": [...], "val": [...], "test": [...]}``.
    """
    if run < 1 or len(pattern) != 3 or min(pattern) < 1:
        raise ValueError(
            f"need run >= 1 and three positive counts in pattern, got {run}, {pattern}."
        )
    names = ["train"] * pattern[0] + ["val"] * pattern[1] + ["test"] * pattern[2]
    out = {"train": [], "val": [], "test": []}
    for i, item in enumerate(items):
        out[names[(i // run) % len(names)]].append(item)
    return out
