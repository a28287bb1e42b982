"""Chapter 08's measurements in one table: latency of the served models in every runtime, int8,
and the service under load with and without server-side batching, on the machine it runs on.

    python benchmarks/deploy.py                      # everything, a few minutes on 2 CPU cores
    python benchmarks/deploy.py --no-compile --requests 300

Latency: median ms per call (after warm-up) of chapter 02's CNN and chapter 04's GPT at batch 1
and 64: eager, torch.compile, the reloaded torch.export program, ONNX Runtime (CPU) and PyTorch's
dynamic int8 quantization (CPU). Load: the service (course_serve) in a subprocess on a free
loopback port, 32 requests in flight (classify: a PNG; generate: 32 characters), a bounded
number of requests and seconds per run.
Needs the course checkpoints (run chapters 02 and 04, or set COURSE_CHECKPOINT_DIR) and the
``[deploy]`` extra.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

import helpers
from course_serve.images import to_png
from course_serve.inference import Models
from course_serve.loadtest import load_test
from course_serve.process import ServerProcess
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


def load_runs(requests: int, seconds: float) -> None:
    image = torch.zeros(28, 28, dtype=torch.uint8)
    image[4:24, 12:16] = 255
    png = {"content": to_png(image), "headers": {"content-type": "image/png"}}
    routes = {
        "classify": lambda i: ("POST", "/classify", png),
        "generate": lambda i: (
            "POST",
            "/generate",
            {"json": {"prompt": "ROMEO:\n" + "a" * (i % 30), "max_new_tokens": 32, "seed": i}},
        ),  # fmt: skip
    }
    for window in (0, 5):
        with ServerProcess(env={"COURSE_SERVE_BATCH_WINDOW_MS": window}) as server:
            for route, make in routes.items():
                n = requests if route == "classify" else max(32, requests // 8)
                load_test(server.url, make, requests=32, concurrency=32)  # warm-up
                r = load_test(server.url, make, requests=n, concurrency=32, time_limit=seconds)
                print(f"{route:<9} window {window} ms  {r['requests']:>5} requests  "
                      f"{r['requests_per_second']:7.1f} req/s  p50 {r['p50_ms']:7.1f} ms  "
                      f"p99 {r['p99_ms']:7.1f} ms  ok {r['ok']}", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per latency")
    parser.add_argument("--requests", type=int, default=1500, help="classify requests per run")
    parser.add_argument("--seconds", type=float, default=30, help="time limit per load run")
    args = parser.parse_args()
    device = torch.device("cpu")
    print(f"device: {helpers.device.describe_device(device)} | torch {torch.__version__}")
    print(f"{'model':<10} {'runtime':<13} {'batch 1':>9} {'batch 64':>9}   (median ms)")
    latency_table(not args.no_compile, args.repeats)
    load_runs(args.requests, args.seconds)


if __name__ == "__main__":
    main()
