"""book/faq.md quotes PyTorch's error messages word for word: each one marked *(checked)* is
produced here, with the course's PyTorch, and must appear on the page (line breaks aside)."""

import io
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

PAGE = Path(__file__).resolve().parents[1] / "book" / "faq.md"


def backward_twice():
    x = torch.ones(2, requires_grad=True)
    y = (x * x).sum()
    y.backward()
    y.backward()


def modified_in_place():
    y = torch.ones(2, requires_grad=True).sigmoid()
    y.mul_(2)
    y.sum().backward()


def nan_gradient():
    x = torch.zeros(1, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # anomaly mode warns that it is slow, and where it fired
        with torch.autograd.detect_anomaly():
            (torch.sqrt(x) * 0).sum().backward()


class Custom:
    pass


def load_an_object():
    buffer = io.BytesIO()
    torch.save({"config": Custom()}, buffer)
    buffer.seek(0)
    torch.load(buffer)


def no_helpers():
    done = subprocess.run([sys.executable, "-I", "-S", "-c", "import helpers"], cwd=PAGE.parent,
                          capture_output=True, text=True)  # fmt: skip
    raise ModuleNotFoundError(done.stderr.strip().splitlines()[-1].split(": ", 1)[1])


# case: (what raises, how many characters of "Type: message" the page quotes; None: all)
CASES = {
    "not installed": (no_helpers, None),
    "shapes": (lambda: nn.Linear(3, 5)(torch.randn(4, 4)), None),
    "dtypes": (lambda: nn.Linear(3, 5)(torch.randn(4, 3, dtype=torch.float64)), None),
    "target": (lambda: F.cross_entropy(torch.randn(4, 3), torch.tensor([0, 1, 2, 3])), None),
    "view": (lambda: torch.randn(2, 3).t().view(6), None),
    "backward twice": (
        backward_twice,
        len(
            "RuntimeError: Trying to backward through the graph a "
            "second time (or directly access saved tensors after "
            "they have already been freed)."
        ),
    ),  # fmt: skip
    "in place": (
        modified_in_place,
        len(
            "RuntimeError: one of the variables needed for gradient "
            "computation has been modified by an inplace operation:"
        ),
    ),  # fmt: skip
    "numpy": (lambda: torch.ones(2, requires_grad=True).numpy(), None),
    "nan": (nan_gradient, None),
    "state_dict": (
        lambda: nn.Linear(3, 5).load_state_dict(nn.Linear(3, 4).state_dict()),
        len(
            "RuntimeError: Error(s) in loading state_dict for Linear: size mismatch "
            "for weight: copying a param with shape torch.Size([4, 3]) from checkpoint, "
            "the shape in current model is torch.Size([5, 3])."
        ),
    ),  # fmt: skip
    "weights only": (load_an_object, len("UnpicklingError: Weights only load failed.")),
}


def flat(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


@pytest.mark.parametrize("case", CASES, ids=str)
def test_the_faq_quotes_the_error_word_for_word(case):
    raises, quoted = CASES[case]
    with pytest.raises(Exception) as error:
        raises()
    message = flat(f"{type(error.value).__name__}: {error.value}")[:quoted]
    assert message in flat(PAGE.read_text()), f"the FAQ should quote: {message}"
