"""Batches from tensors that already sit on the device: no per-sample Python in the hot loop.

- :class:`TensorLoader`: shuffled mini-batches of whole-dataset tensors (images, labels), with
  an optional batch transform (normalisation and augmentation on the device);
- :func:`random_windows` and :func:`split_windows`: training and evaluation windows of a 1-D
  token stream, for language models.
"""

from __future__ import annotations

import torch


class TensorLoader:
    """Batches from tensors that already sit on the device: indexing, no per-sample Python.

    ``transform`` (optional) maps a batch of inputs to a batch of inputs, e.g. normalisation
    and augmentation on the device. ``inputs=2`` makes the first two tensors one tuple of inputs,
    ``((source, decoder_input), target)``, for a model called as ``model(*inputs)``.
    """

    def __init__(
        self,
        *tensors: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        transform=None,
        generator: torch.Generator | None = None,
        inputs: int = 1,
    ):
        if not tensors or any(len(t) != len(tensors[0]) for t in tensors):
            raise ValueError("TensorLoader needs one or more tensors of the same length.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        self.tensors, self.batch_size, self.shuffle = tensors, batch_size, shuffle
        self.drop_last, self.transform, self.generator = drop_last, transform, generator
        if not 1 <= inputs < len(tensors) and len(tensors) > 1:
            raise ValueError(f"inputs={inputs}: leave at least one tensor for the targets.")
        self.inputs = inputs

    def __len__(self) -> int:
        n = len(self.tensors[0])
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        n = len(self.tensors[0])
        device = self.tensors[0].device
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator).to(device)
        else:
            order = torch.arange(n, device=device)
        for i in range(len(self)):
            index = order[i * self.batch_size : (i + 1) * self.batch_size]
            batch = [t[index] for t in self.tensors]
            if self.transform is not None:
                batch[0] = self.transform(batch[0])
            if self.inputs > 1:
                batch = [tuple(batch[: self.inputs]), *batch[self.inputs :]]
            yield tuple(batch)


def random_windows(
    data: torch.Tensor, block_size: int, batch_size: int, generator: torch.Generator | None = None
):
    """Endless batches ``(x, y)`` of random windows of a 1-D token tensor; y is x shifted by 1."""
    if len(data) <= block_size:
        raise ValueError(
            f"the data ({len(data)} tokens) must be longer than block_size={block_size}."
        )
    windows = data.unfold(0, block_size + 1, 1)  # a view: every window of block_size + 1 tokens
    while True:
        starts = torch.randint(len(windows), (batch_size,), generator=generator).to(data.device)
        chunk = windows[starts]
        yield chunk[:, :-1], chunk[:, 1:]


def split_windows(
    data: torch.Tensor, block_size: int, every: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-overlapping windows ``(x, y)`` covering a 1-D token tensor (every ``every``-th kept).

    Evaluating on all of them scores every token of a validation text once, each with the context
    it has inside its window, like training windows do on average.
    """
    n = (len(data) - 1) // block_size
    if n < 1:
        raise ValueError(
            f"the data ({len(data)} tokens) must be longer than block_size={block_size}."
        )
    x = data[: n * block_size].view(n, block_size)[::every]
    y = data[1 : n * block_size + 1].view(n, block_size)[::every]
    return x, y
