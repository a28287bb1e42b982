"""Chapter 08's latency table: the served models in every runtime, and int8, on the machine it
runs on (the service under load: ``benchmarks/serve_load.py``).

    python benchmarks/deploy.py                      # a few minutes on 2 CPU cores
    python benchmarks/deploy.py --no-compile

Latency: median ms per call (after warm-up) of chapter 02's CNN and chapter 04's GPT at batch 1
and 64: eager, torch.compile, the reloaded torch.export program, ONNX Runtime (CPU) and PyTorch's
dynamic int8 quantization (CPU).
Needs the course checkpoints (run chapters 02 and 04, or set COURSE_CHECKPOINT_DIR) and the
``[deploy]`` extra.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

import helpers
from course_serve.inference import Models
from course_serve.settings import Settings


def load_models():
    """Chapter 02's CNN and chapter 04's GPT on the CPU, in eval mode, loaded like the service."""
    models = Models(Settings.from_env(device="cpu"))
    return models.cnn.eval(), models.gpt.eval()


def runtimes(model, example, folder: Path, name: str, compile: bool) -> dict:
    """Every way of running ``model`` this chapter measures, by name."""
    program = helpers.deploy.export_program(model, example)
    torch.export.save(program, folder / f"{name}.pt2")
    onnx = helpers.deploy.export_onnx(model, example, folder / f"{name}.onnx")
    out = {
        "eager": model,
        "exported": torch.export.load(folder / f"{name}.pt2").module(),
        "onnxruntime": helpers.deploy.onnx_runner(onnx),
        "int8 dynamic": helpers.deploy.quantize_dynamic_int8(model),
    }
    if compile:
        out["compiled"] = torch.compile(model)
    return out


def latency_table(compile: bool, repeats: int) -> None:
    cnn, gpt = load_models()
    inputs = {"mnist_cnn": lambda b: torch.randn(b, 1, 28, 28),
              "char_gpt": lambda b: torch.randint(0, gpt.config.vocab_size,
                                                  (b, gpt.config.block_size))}  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        for name, model in (("mnist_cnn", cnn), ("char_gpt", gpt)):
            for runtime, fn in runtimes(
                model, inputs[name](2), Path(folder), name, compile
            ).items():
                ms = [
                    helpers.deploy.latency_ms(fn, inputs[name](b), repeats=repeats) for b in (1, 64)
                ]
                print(f"{name:<10} {runtime:<13} {ms[0]:9.2f} {ms[1]:9.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per latency")
    args = parser.parse_args()
    device = torch.device("cpu")
    print(f"device: {helpers.device.describe_device(device)} | torch {torch.__version__}")
    print(f"{'model':<10} {'runtime':<13} {'batch 1':>9} {'batch 64':>9}   (median ms)")
    latency_table(not args.no_compile, args.repeats)


if __name__ == "__main__":
    main()
