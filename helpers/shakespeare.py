"""Tiny Shakespeare as fine-tuning material (chapter 06): chapter 04's split and model, speeches.

- :func:`pretraining_split`: the character index where chapter 04's training text ends (the first
  90% trained the character GPT; of the last 10%, 90-95% validated it and 95-100% tested it,
  see :func:`test_split`);
- :func:`load_char_gpt`: chapter 04's model, tokenizer and checkpoint, trained first with chapter
  04's recipe (:func:`pretrain_char_gpt`) when the checkpoint is missing;
- :func:`speeches`: the text cut into speeches (speaker, body, where it starts and ends), and
  :func:`split_by_position`: train / validation / test by runs of consecutive speeches, so that
  no speech (and no window of text) is in two splits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from .checkpoint import checkpoint_path
from .env import is_quick

PRETRAIN_FRACTION = 0.9  # chapter 04: the first 90% of the characters trained the model
TEST_FRACTION = 0.95  # chapter 04: 90-95% validation (curves, best checkpoint), 95-100% test
QUICK_RECIPE = dict(
    n_layer=2, n_head=4, n_embd=64, block_size=32, batch_size=32, steps=300, warmup_steps=30,
    eval_every=30,
)  # chapter 04 quick mode  # fmt: skip


def pretraining_split(text: str) -> int:
    """Chapter 04's cut: ``text[:cut]`` trained the character GPT, ``text[cut:]`` was held out."""
    return int(PRETRAIN_FRACTION * len(text))


def test_split(text: str) -> int:
    """Chapter 04's second cut: ``text[cut:test]`` validated the GPT, ``text[test:]`` tested it."""
    return int(TEST_FRACTION * len(text))


def pretrain_char_gpt(device, text: str | None = None, progress=None):
    """Train chapter 04's recipe for ``device`` (its quick version in quick mode) and save it.

    The same model, data split, optimizer, schedule and checkpoint as the notebook of chapter 04:
    random windows of the first 90% of the text, the weights of the best evaluation on the
    validation part (90-95%) kept, and their loss on that validation text saved as ``val_loss``
    (the test text, 95-100%, is not read here).
    Returns the checkpoint path.
    """
    from .checkpoint import save_checkpoint
    from .data import tiny_shakespeare
    from .gpt import GPT
    from .loader import TensorLoader, random_windows, split_windows
    from .recipes import gpt_recipe
    from .tokenizer import CharTokenizer
    from .train import fit

    text = text or tiny_shakespeare()
    recipe = gpt_recipe(device)
    recipe = recipe.replace(**QUICK_RECIPE) if is_quick() else recipe
    tokenizer = CharTokenizer.from_text(text)
    data = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    cut, test = pretraining_split(text), test_split(text)
    train_data, val_data = data[:cut].to(device), data[cut:test].to(device)
    torch.manual_seed(0)
    config = recipe.model_config(tokenizer.vocab_size)
    model = GPT(config).to(device)
    optimizer, scheduler = recipe.make_optimizer(model)
    stream = random_windows(
        train_data, config.block_size, recipe.batch_size, torch.Generator().manual_seed(1)
    )
    val = TensorLoader(*split_windows(val_data, config.block_size), batch_size=64)
    history = fit(
        model,
        stream,
        optimizer,
        steps=recipe.steps,
        scheduler=scheduler,
        grad_clip=recipe.grad_clip,
        val_loader=val,
        eval_every=recipe.eval_every,
        keep_best=True,
        progress=progress,
    )
    val_loss = min(history["val_loss"])  # the kept weights' loss, measured by fit
    return save_checkpoint(
        checkpoint_path("char_gpt"),
        model,
        config=config.to_dict(),
        tokenizer=tokenizer.chars,
        val_loss=val_loss,
        recipe=recipe.name,
    )


def load_char_gpt(device, progress=None, verbose: bool = True):
    """Chapter 04's GPT (eval mode), tokenizer and checkpoint; trained first when it is missing."""
    from .gpt import load_gpt

    path = checkpoint_path("char_gpt")
    if not path.exists():
        if verbose:
            print(
                f"No chapter 04 checkpoint at {path}: training chapter 04's recipe first "
                "(helpers.shakespeare.pretrain_char_gpt)."
            )
        pretrain_char_gpt(device, progress=progress)
    elif verbose:
        print(f"Loading chapter 04's model from {path}")
    return load_gpt(path, device)


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
