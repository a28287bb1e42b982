"""The trained models chapters hand on: each one trained with its chapter's recipe when missing.

- :func:`mnist_cnn`: chapter 02's ConvNet on MNIST (:func:`train_mnist_cnn` is chapter 02's
  recipe: AdamW, PyTorch's ``OneCycleLR``, batch 128, 5 epochs, on the 55,000 images left after
  chapter 02's validation split, :func:`mnist_split`);
- :func:`cifar5_resnet`: chapter 05's source, chapter 03's ResNet trained on the first five
  CIFAR-10 classes (airplane, automobile, bird, cat, deer) with chapter 03's recipe
  (:func:`train_cifar5_resnet`); :func:`cifar_halves` is the one split of CIFAR-10 into that
  source task and the target task (dog, frog, horse, ship, truck);
- :func:`load_char_gpt`: chapter 04's character GPT, tokenizer and checkpoint, trained with
  chapter 04's recipe (:func:`pretrain_char_gpt`) when missing; with ``**BASE_MODEL``, chapter
  06's base model (the same recipe, longer, without the speeches of the held-out speakers).

Every loader returns the model on the device and its checkpoint's ``config``, prints one line
saying whether it loaded or trained, and keeps quick-mode models apart (``<name>-quick.pt``).
"""

from __future__ import annotations

import torch

from .checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from .env import is_quick, pick
from .recipes import CIFAR_BUDGETS, GPT_QUICK, gpt_recipe
from .shakespeare import HELD_OUT_SPEAKERS, split_text, without_speakers

SOURCE_CLASSES = (0, 1, 2, 3, 4)  # airplane, automobile, bird, cat, deer
TARGET_CLASSES = (5, 6, 7, 8, 9)  # dog, frog, horse, ship, truck

# chapter 05's source network by hardware: chapter 03's ResNet, narrower on a CPU so that the
# chapter's 60-odd fine-tuning runs fit in minutes (measured: 71 s to train on 2 CPU cores)
CIFAR5_BUDGETS = {
    "gpu": CIFAR_BUDGETS["gpu"],  # chapter 03's (not yet measured on a GPU)
    "cpu": {"widths": (16, 64, 64), "epochs": 8},
    "quick": {"widths": (8, 16, 16), "epochs": 1, "batch_size": 64},
}


def load_model(
    path,
    build,
    device="cpu",
    *,
    needs=("model",),
    what: str = "a course checkpoint",
    memory_format=torch.channels_last,
):
    """``(model, config)`` from a checkpoint whose config rebuilds it: ``build(**config["model"])``.

    ``needs`` are the config keys the caller relies on; a checkpoint without them is a clear
    ``ValueError`` naming ``what`` it should have been (nothing is guessed).
    """
    state = load_checkpoint(path, map_location="cpu")
    config = state.get("config") or {}
    missing = [key for key in needs if key not in config]
    if missing:
        raise ValueError(
            f"{path} is not {what}: its config lacks {missing}. Re-create it with the chapter "
            "that writes it (or helpers.pretrained), or point to the right file."
        )
    model = build(**config["model"])
    model.load_state_dict(state["model"])
    return model.to(device, memory_format=memory_format), config


def _load_or_train(name: str, what: str, how: str, train, build, device, progress, verbose):
    """The checkpoint ``name`` as (model on ``device``, config), after ``train`` when missing."""
    path = checkpoint_path(name)
    if verbose:
        found = path.exists()
        print(
            f"Loading {what} from {path}"
            if found
            else f"No {what} at {path}: training it first with {how}."
        )
    if not path.exists():
        train(device, progress=progress)
    return load_model(path, build, device, what=what)


# --------------------------------------------------------------------------- chapter 02


def mnist_split(n_train: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Chapter 02's split of MNIST's 60,000 training images: ``(train, validation)`` indices.

    A permutation seeded with 0: the first 5,000 validate, the next 55,000 train (6,000 in quick
    mode, or ``n_train``).
    """
    order = torch.randperm(60_000, generator=torch.Generator().manual_seed(0))
    return order[5_000:][: n_train or pick(full=55_000, quick=6_000)], order[:5_000]


def train_mnist_cnn(device, *, epochs: int | None = None, progress=None):
    """Chapter 02's recipe, trained and saved where chapter 02 saves it; returns the path.

    ConvNet (16-32-64, channels_last) on :func:`mnist_split`'s training images, normalised with
    their own mean and std; AdamW (weight decay 0.01) with ``torch.optim.lr_scheduler.OneCycleLR``
    (peak 1e-2, a quarter warm-up), batch 128, 5 epochs (1 in quick mode), seed 0.
    """
    from .augment import normalize
    from .data import as_tensors, mnist
    from .loader import TensorLoader
    from .models import ConvNet
    from .train import evaluate, fit

    device = torch.device(device)
    images, labels = as_tensors(mnist(train=True))
    train_idx, _ = mnist_split()
    pixels = images[train_idx].float() / 255
    mean, std = pixels.mean().item(), pixels.std().item()
    del pixels

    def transform(x):
        return normalize(x, (mean,), (std,))

    epochs = epochs or pick(full=5, quick=1)
    torch.manual_seed(0)
    model = ConvNet().to(device, memory_format=torch.channels_last)
    x, y = images[train_idx].to(device), labels[train_idx].to(device)
    loader = TensorLoader(x, y, batch_size=128, shuffle=True, drop_last=True, transform=transform)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=1e-2, total_steps=epochs * len(loader), pct_start=0.25
    )
    fit(model, loader, optimizer, epochs=epochs, scheduler=schedule, progress=progress)
    test_x, test_y = (t.to(device) for t in as_tensors(mnist(train=False)))
    test = TensorLoader(test_x, test_y, batch_size=1000, transform=transform)
    config = {
        "model": model.config,
        "mean": mean,
        "std": std,
        "epochs": epochs,
        "max_lr": 1e-2,
        "batch_size": 128,
        "test_accuracy": evaluate(model, test)["accuracy"],
        "trained_by": "helpers.pretrained.train_mnist_cnn",
    }
    path = checkpoint_path("mnist_cnn")
    return save_checkpoint(path, model, optimizer, schedule, epoch=epochs, config=config)


def mnist_cnn(device, *, progress=None, verbose: bool = True):
    """Chapter 02's MNIST ConvNet and its config; trained first when the checkpoint is missing."""
    from .models import ConvNet

    return _load_or_train("mnist_cnn", "chapter 02's model", "chapter 02's recipe",
                          train_mnist_cnn, ConvNet, device, progress, verbose)  # fmt: skip


# --------------------------------------------------------------------------- chapter 05


def cifar_halves(train: bool = True) -> dict:
    """CIFAR-10 cut into chapter 05's two tasks, as uint8 tensors on the CPU.

    ``{"source": (images, labels), "target": (images, labels), "classes": {...}}``: the source
    task is :data:`SOURCE_CLASSES`, the target task :data:`TARGET_CLASSES`, each with its labels
    renumbered 0-4 in that order (25,000 training or 5,000 test images each).
    """
    from .data import CIFAR10_CLASSES, as_tensors, cifar10

    images, labels = as_tensors(cifar10(train=train, verbose=False))
    out = {"classes": {}}
    for task, classes in (("source", SOURCE_CLASSES), ("target", TARGET_CLASSES)):
        keep = torch.isin(labels, torch.tensor(classes))
        renumber = torch.full((10,), -1, dtype=torch.long)
        renumber[list(classes)] = torch.arange(len(classes))
        out[task] = (images[keep], renumber[labels[keep]])
        out["classes"][task] = [CIFAR10_CLASSES[c] for c in classes]
    return out


def cifar5_budget(device) -> dict:
    """The source network's size and epochs for ``device`` (see :data:`CIFAR5_BUDGETS`)."""
    kind = "quick" if pick(full=False, quick=True) else "gpu"
    if kind == "gpu" and torch.device(device).type != "cuda":
        kind = "cpu"
    return dict(CIFAR5_BUDGETS[kind])


def train_cifar5_resnet(device, *, progress=None):
    """Chapter 03's recipe on the source half of CIFAR-10, saved as ``cifar5_resnet``.

    500 images of every source class are held out for validation (chapter 03's
    :func:`helpers.recipes.holdout_split`, seed 0); the rest train the recipe at
    :func:`cifar5_budget`'s size; the source test images (5,000) are read once, with the recipe's
    test-time augmentation, and their accuracy saved in the config. Returns the path.
    """
    from .augment import channel_stats
    from .recipes import CifarRecipe, evaluate_cifar, holdout_split, train_cifar

    device = torch.device(device)
    images, labels = cifar_halves(train=True)["source"]
    if pick(full=False, quick=True):  # quick mode: a subset
        keep = holdout_split(labels, 400)[1]
        images, labels = images[keep], labels[keep]
    train_idx, val_idx = holdout_split(labels, pick(full=500, quick=100))
    mean, std = channel_stats(images[train_idx])
    recipe = CifarRecipe().replace(**cifar5_budget(device))
    x, y = images[train_idx].to(device), labels[train_idx].to(device)
    vx, vy = images[val_idx].to(device), labels[val_idx].to(device)
    run = train_cifar(recipe, x, y, vx, vy, mean=mean, std=std, device=device, progress=progress)
    test_x, test_y = (t.to(device) for t in cifar_halves(train=False)["source"])
    test = evaluate_cifar(run["model"], test_x, test_y, mean=mean, std=std, tta=recipe.tta)
    config = {
        "model": run["model"].config,
        "recipe": recipe.to_dict(),
        "mean": mean.tolist(),
        "std": std.tolist(),
        "classes": list(SOURCE_CLASSES),
        "val_accuracy": run["val_accuracy"],
        "test_accuracy": test,
        "train_seconds": run["train_seconds"],
        "trained_by": "helpers.pretrained.train_cifar5_resnet",
    }
    path = checkpoint_path("cifar5_resnet")
    return save_checkpoint(path, run["model"], epoch=recipe.epochs, config=config)


def cifar5_resnet(device, *, progress=None, verbose: bool = True):
    """Chapter 05's source ResNet (five CIFAR-10 classes) and its config; trained when missing.

    The whitening stem's weights come back frozen, as the recipe trained them.
    """
    from .models import ResNet

    model, config = _load_or_train("cifar5_resnet", "chapter 05's source ResNet",
                                   "chapter 03's recipe", train_cifar5_resnet, ResNet, device,
                                   progress, verbose)  # fmt: skip
    model.stem.weight.requires_grad_(False)
    return model, config


# ----------------------------------------------------------- the character GPT (chapters 04, 06)

BASE_MODEL = dict(name="shakespeare_base", steps=4000, exclude=HELD_OUT_SPEAKERS)
"""Chapter 06's base model: chapter 04's recipe, four times the steps, without the speeches of
the four speakers whose words chapter 06 classifies and adapts to (``load_char_gpt(device,
**BASE_MODEL)``)."""


def _recipe(device, steps: int | None):
    """Chapter 04's recipe for ``device`` (quick mode: its quick version), ``steps`` long."""
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
            print(f"No {what} at {path}: training it first (helpers.pretrained.pretrain_char_gpt).")
        pretrain_char_gpt(device, progress=progress, **recipe)
    elif verbose:
        print(f"Loading {what} from {path}")
    return load_gpt(path, device)
