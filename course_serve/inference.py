"""The served models: loaded once from the course checkpoints, run on whole batches.

:class:`Models` holds chapter 02's CNN (with its normalisation constants) and chapter 04's GPT
(with its tokenizer). :meth:`Models.classify` takes a list of 28x28 images and
:meth:`Models.generate` a list of :class:`GenerateJob`; each runs them as one batch.

Batched generation without padding errors: prompts of different lengths are padded on the
*right* and each row reads the logits at its own last position. Attention is causal, so padding
after a position never changes it, and every row keeps its positions 0..T-1: each row gets the
tokens it would get alone (the no-cache path of ``GPT.generate``). Every job has its own random
generator (from its seed, on the model's device), so a request's text does not depend on what it
was batched with. (A request alone takes ``GPT.stream``'s KV-cache path instead: the same
tokens up to floating-point rounding, which can flip a near-tie between two characters.)

Generation runs one token at a time and checks each job between steps: a job whose ``cancelled``
event is set (its client went away, or its deadline passed) stops there, and ``on_token`` hands
each new token to a streaming response as soon as it exists.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

import helpers

from .settings import Settings


@dataclass(frozen=True)
class GenerateJob:
    """One /generate request, already checked: prompt ids and sampling settings."""

    ids: tuple
    max_new_tokens: int
    temperature: float = 1.0
    top_k: int | None = None
    seed: int = 0
    on_token: Callable[[int], None] | None = field(default=None, compare=False, repr=False)
    cancelled: threading.Event = field(default_factory=threading.Event, compare=False, repr=False)

    def take(self, token: int, new: list) -> bool:
        """Record ``token`` unless the job was cancelled; False when it should stop."""
        if self.cancelled.is_set():
            return False
        new.append(token)
        if self.on_token is not None:
            self.on_token(token)
        return len(new) < self.max_new_tokens


class Models:
    """Chapter 02's CNN and chapter 04's GPT, in eval mode on one device."""

    def __init__(self, settings: Settings):
        settings.check_checkpoints()
        if settings.threads:
            torch.set_num_threads(settings.threads)
        self.device = helpers.device.get_device(settings.device)
        self.cnn, config = helpers.pretrained.load_model(
            settings.cnn_checkpoint,
            helpers.models.ConvNet,
            self.device,
            needs=("model", "mean", "std"),
            what="chapter 02's MNIST checkpoint (run notebooks/02_mnist_cnn.ipynb to write it)",
            memory_format=torch.contiguous_format,
        )
        self.cnn.eval()
        self.mean, self.std = float(config["mean"]), float(config["std"])
        self.gpt, self.tokenizer, gpt_state = helpers.gpt.load_gpt(
            settings.gpt_checkpoint, self.device
        )
        self.info = {
            "mnist_cnn": {"checkpoint": str(settings.cnn_checkpoint),
                          "parameters": helpers.summary.count_parameters(self.cnn)},
            "char_gpt": {"checkpoint": str(settings.gpt_checkpoint),
                         "parameters": self.gpt.num_parameters(),
                         "vocab_size": self.tokenizer.vocab_size,
                         "block_size": self.gpt.config.block_size,
                         "val_loss": gpt_state.get("val_loss")},
        }  # fmt: skip

    @torch.inference_mode()
    def classify(self, images: list[torch.Tensor]) -> list[list[float]]:
        """Class probabilities for each 28x28 image (grey levels 0-255, float)."""
        batch = torch.stack(images).unsqueeze(1).to(self.device)
        batch = (batch / 255 - self.mean) / self.std
        probs = torch.softmax(self.cnn(batch).float(), dim=-1)
        return probs.cpu().tolist()

    @torch.inference_mode()
    def generate(self, jobs: list[GenerateJob]) -> list[list[int]]:
        """The new token ids of each job; one job alone uses the GPT's KV cache."""
        gens = [torch.Generator(device=self.device).manual_seed(job.seed) for job in jobs]
        if len(jobs) == 1:
            job = jobs[0]
            idx = torch.tensor([job.ids], device=self.device)
            steps = self.gpt.stream(idx, job.max_new_tokens, job.temperature, job.top_k,
                                    use_cache=True, generator=gens[0])  # fmt: skip
            return [run_alone(job, (int(step) for step in steps))]
        return generate_padded(self.gpt, jobs, gens, self.device)


def run_alone(job: GenerateJob, tokens: Iterable[int]) -> list[int]:
    """Take tokens for one job until it has enough or is cancelled."""
    new = []
    for token in tokens:
        if not job.take(token, new):
            break
    return new


def generate_padded(gpt, jobs: list[GenerateJob], gens: list, device) -> list[list[int]]:
    """Sample every job in one batch: right-padded windows, logits read at each row's end."""
    block = gpt.config.block_size
    seqs = [list(job.ids) for job in jobs]
    new = [[] for _ in jobs]
    active = [i for i, job in enumerate(jobs) if job.max_new_tokens > 0]
    while active:
        windows = [seqs[i][-block:] for i in active]
        lengths = torch.tensor([len(w) for w in windows])
        batch = torch.zeros(len(active), int(lengths.max()), dtype=torch.long)
        for row, window in enumerate(windows):
            batch[row, : len(window)] = torch.tensor(window)
        logits = gpt(batch.to(device))[torch.arange(len(active)), lengths.to(device) - 1]
        sample = helpers.gpt.sample_next
        sampled = [
            sample(logits[row : row + 1], jobs[i].temperature, jobs[i].top_k, gens[i])
            for row, i in enumerate(active)
        ]  # each row with its own generator, in the same order as one at a time
        tokens = torch.cat(sampled).flatten().tolist()  # one wait for the device per step
        going = []
        for i, token in zip(active, tokens):
            seqs[i].append(token)
            if jobs[i].take(token, new[i]):
                going.append(i)
        active = going
    return new
