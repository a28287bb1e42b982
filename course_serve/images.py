"""Request bodies to 28x28 grey images (float tensors of grey levels 0-255), or a clear error.

Three ways to send an image to ``POST /classify``:

- the PNG file itself as the body, ``Content-Type: image/png``;
- a form upload, ``multipart/form-data`` with the PNG in the field ``file`` (what the interactive
  docs at ``/docs`` send);
- ``application/json``: ``{"pixels": [[...28 numbers...], ... 28 rows]}``, grey levels 0-255.

As in MNIST, the digit is light on a dark background. Colour PNGs are converted to grey.
Every problem raises :class:`BadImage` with the HTTP status and a message naming the fix.
"""

from __future__ import annotations

import io
import warnings

import torch

SIDE = 28
MAX_PIXELS = 4096 * 4096  # refuse to decode larger images (decompression bombs)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class BadImage(ValueError):
    """The request does not hold a usable 28x28 image; ``status`` is the HTTP status to send."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


def wrong_size(width: int, height: int) -> BadImage:
    return BadImage(
        f"wrong image size: {width}x{height} pixels; the model reads {SIDE}x{SIDE} grey images "
        f"(resize the image to {SIDE}x{SIDE} first)."
    )


def from_png(data: bytes) -> torch.Tensor:
    """A 28x28 float tensor from PNG bytes."""
    from PIL import Image

    if not data:
        raise BadImage("the body is empty: send the bytes of a 28x28 PNG image.")
    if not data.startswith(PNG_MAGIC):
        raise BadImage("the body is not a PNG image (it lacks the PNG signature); send a PNG "
                       "file, or JSON {\"pixels\": [[...], ...]} with Content-Type "
                       "application/json.")  # fmt: skip
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise wrong_size(width, height)
            image.load()
    except BadImage:
        raise
    except Exception as error:
        raise BadImage(f"the PNG could not be decoded ({type(error).__name__}: "
                       f"{str(error)[:100]}); send a valid 28x28 PNG.") from None  # fmt: skip
    if image.size != (SIDE, SIDE):
        raise wrong_size(*image.size)
    grey = image.convert("L")
    return torch.frombuffer(bytearray(grey.tobytes()), dtype=torch.uint8).view(SIDE, SIDE).float()


def from_pixels(pixels: list) -> torch.Tensor:
    """A 28x28 float tensor from nested lists (the request schema checked the shape and range)."""
    return torch.tensor(pixels, dtype=torch.float32)


def to_png(image) -> bytes:
    """PNG bytes of a 2-D uint8 tensor or array (for clients, tests and the notebook)."""
    import numpy as np
    from PIL import Image

    array = np.asarray(image.cpu() if isinstance(image, torch.Tensor) else image, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()
