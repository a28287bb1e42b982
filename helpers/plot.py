"""Plots a learner would rather look at than read: curves, images, boundaries, confusion."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch


def plot_history(history: dict, title: str = "") -> plt.Figure:
    """Loss (train and validation), validation accuracy and learning rate from ``fit``."""
    x_key = "epoch" if history.get("epoch") else "step"
    x = history[x_key]
    panels = [
        ("loss", ["train_loss", "val_loss"]),
        ("accuracy", ["val_accuracy"]),
        ("learning rate", ["lr"]),
    ]
    panels = [(name, [k for k in keys if history.get(k)]) for name, keys in panels]
    panels = [(name, keys) for name, keys in panels if keys]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2))
    for ax, (name, keys) in zip(np.atleast_1d(axes), panels):
        for key in keys:
            ax.plot(
                x, history[key], marker="o" if len(x) < 30 else None, label=key.replace("_", " ")
            )
        ax.set_xlabel(x_key)
        ax.set_ylabel(name)
        if len(keys) > 1:
            ax.legend()
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def image_grid(
    images: torch.Tensor,
    labels=None,
    predictions=None,
    classes=None,
    ncols: int = 8,
    mean=None,
    std=None,
    size: float = 1.3,
    notes=None,
) -> plt.Figure:
    """Images (N×C×H×W, uint8 or float) in a grid, titled with labels and predictions (red: wrong).

    ``mean``/``std`` undo a normalisation before display. ``notes`` (optional, one string per
    image) adds a line to each title, e.g. the model's confidence.
    """
    images = images.detach().cpu().float()
    if mean is not None:
        images = images * torch.as_tensor(std).view(1, -1, 1, 1) + torch.as_tensor(mean).view(
            1, -1, 1, 1
        )
    elif images.max() > 1.5:
        images = images / 255
    images = images.clamp(0, 1)
    n = len(images)
    nrows = -(-n // ncols)
    title_lines = sum(x is not None for x in (labels, predictions, notes))
    height = size * nrows * (1 + 0.15 * max(1, title_lines))  # room for the titles above each row
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, height), squeeze=False)
    name = (lambda i: classes[i]) if classes is not None else str
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img = images[i].permute(1, 2, 0).numpy()
        ax.imshow(
            img.squeeze(-1) if img.shape[-1] == 1 else img,
            cmap="gray" if img.shape[-1] == 1 else None,
            interpolation="nearest",
        )  # the real pixels, not a smoothed upscaling
        title, colour = "", "black"
        if labels is not None:
            title = name(int(labels[i]))
        if predictions is not None:
            title = (
                f"{title}\n→ {name(int(predictions[i]))}" if title else name(int(predictions[i]))
            )
            if labels is not None and int(predictions[i]) != int(labels[i]):
                colour = "red"
        if notes is not None:
            title = f"{title}\n{notes[i]}" if title else notes[i]
        ax.set_title(title, fontsize=8, color=colour)
    fig.tight_layout()
    return fig


def decision_boundary(
    predict, x: np.ndarray, y: np.ndarray, ax=None, resolution: int = 200, title: str = ""
) -> plt.Axes:
    """Colour the plane by ``predict(points) -> probability of class 1`` and draw the points.

    ``predict`` takes an (M, 2) float array and returns M probabilities.
    """
    x, y = np.asarray(x), np.asarray(y)
    pad = 0.5
    (x0, y0), (x1, y1) = x.min(0) - pad, x.max(0) + pad
    g1, g2 = np.meshgrid(np.linspace(x0, x1, resolution), np.linspace(y0, y1, resolution))
    probs = np.asarray(predict(np.stack([g1.ravel(), g2.ravel()], 1))).reshape(g1.shape)
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4))
    ax.contourf(g1, g2, probs, levels=20, cmap="coolwarm", alpha=0.6, vmin=0, vmax=1)
    ax.contour(g1, g2, probs, levels=[0.5], colors="k")
    ax.scatter(x[:, 0], x[:, 1], c=y, cmap="coolwarm", s=10, edgecolors="k", linewidths=0.2)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    if title:
        ax.set_title(title)
    return ax


def confusion_matrix(y_true, y_pred, classes, normalize: str | None = None, ax=None) -> np.ndarray:
    """Plot scikit-learn's confusion matrix (rows: true class, columns: predicted); return it."""
    from sklearn.metrics import ConfusionMatrixDisplay
    from sklearn.metrics import confusion_matrix as sk_confusion

    matrix = sk_confusion(
        np.asarray(y_true), np.asarray(y_pred), labels=range(len(classes)), normalize=normalize
    )
    if ax is None:
        size = max(4.5, 0.5 * len(classes))
        _, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay(matrix, display_labels=classes).plot(
        ax=ax,
        cmap="Blues",
        colorbar=False,
        xticks_rotation=45,
        values_format=".2f" if normalize else "d",
    )
    return matrix


def per_class_report(y_true, y_pred, classes) -> dict:
    """Print scikit-learn's per-class precision/recall/F1 table; return it as a dict."""
    from sklearn.metrics import classification_report

    kwargs = dict(
        labels=list(range(len(classes))),
        target_names=[str(c) for c in classes],
        digits=4,
        zero_division=0,
    )
    print(classification_report(np.asarray(y_true), np.asarray(y_pred), **kwargs))
    return classification_report(np.asarray(y_true), np.asarray(y_pred), output_dict=True, **kwargs)
