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


HELD_OUT_SPEAKERS = ("GLOUCESTER", "DUKE VINCENTIO", "MENENIUS", "ROMEO")  # chapter 06's tasks
BASE_MODEL = dict(name="shakespeare_base", steps=4000, exclude=HELD_OUT_SPEAKERS)
"""Chapter 06's base model: chapter 04's recipe, four times the steps, without the speeches of
the four speakers whose words chapter 06 classifies and adapts to (``load_char_gpt(device,
**BASE_MODEL)``)."""


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


def _recipe(device, steps: int | None):
    """Chapter 04's recipe for ``device`` (quick mode: its quick version), ``steps`` long."""
    from .recipes import GPT_QUICK, gpt_recipe

    if is_quick():
        return gpt_recipe(device).replace(**GPT_QUICK)
    return gpt_recipe(device).replace(**({} if steps is None else {"steps": steps}))


def pretrain_char_gpt(
    device,
    text: str | None = None,
    progress=None,
    *,
    name: str = "char_gpt",
    steps: int | None = None,
    exclude=(),
):
    """Train chapter 04's recipe for ``device`` (its quick version in quick mode) and save it.

    The same model, data split, optimizer, schedule and checkpoint as the notebook of chapter 04:
    random windows of the first 90% of the text, the weights of the best evaluation on the
    validation part (90-95%) kept, and their loss on that validation text saved as ``val_loss``
    (the test text, 95-100%, is not read here). Chapter 06's base model is the same recipe
    trained for more ``steps`` on that training text without the speeches of the speakers in
    ``exclude``, saved under ``name``. Returns the checkpoint path.
    """
    from .checkpoint import save_checkpoint
    from .data import tiny_shakespeare
    from .gpt import GPT
    from .loader import TensorLoader, random_windows, split_windows
    from .tokenizer import CharTokenizer
    from .train import fit

    text = text or tiny_shakespeare()
    recipe = _recipe(device, steps)
    tokenizer = CharTokenizer.from_text(text)
    parts = split_text(text)
    train_text = without_speakers(parts["train"], exclude) if exclude else parts["train"]
    train_data = torch.tensor(tokenizer.encode(train_text), dtype=torch.long).to(device)
    val_data = torch.tensor(tokenizer.encode(parts["val"]), dtype=torch.long).to(device)
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
    return save_checkpoint(
        checkpoint_path(name),
        model,
        config=config.to_dict(),
        tokenizer=tokenizer.chars,
        val_loss=min(history["val_loss"]),  # the kept weights' loss, measured by fit
        recipe=recipe.name,
        steps=recipe.steps,
        best_step=history["best_step"],
        train_seconds=history["seconds"][-1],
        curve={"step": history["step"], "val_loss": history["val_loss"]},
        excluded=sorted(exclude),
        train_characters=len(train_text),
    )


def load_char_gpt(device, progress=None, verbose: bool = True, **recipe):
    """Chapter 04's GPT (eval mode), tokenizer and checkpoint; trained first when it is missing.

    ``recipe`` (``name``, ``steps``, ``exclude``) asks for another model of the same recipe, as
    :func:`pretrain_char_gpt` trains it (chapter 06's base model).
    """
    from .gpt import load_gpt

    name = recipe.get("name", "char_gpt")
    what = "chapter 04's model" if name == "char_gpt" else f"model {name!r}"
    path = checkpoint_path(name)
    if not path.exists():
        if verbose:
            print(
                f"No {what} at {path}: training it first (helpers.shakespeare.pretrain_char_gpt)."
            )
        pretrain_char_gpt(device, progress=progress, **recipe)
    elif verbose:
        print(f"Loading {what} from {path}")
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
