"""course_serve under load, as users hit it: requests per second, latency p50 / p99 and the
status codes (5xx must stay at 0), each scenario run ``--repeats`` times (median and range).

    python benchmarks/serve_load.py                 # about 4 minutes on 2 CPU cores
    python benchmarks/serve_load.py --repeats 1 --windows 0 5   # batching off, then on

Scenarios, 32 requests in flight from as many loopback clients, with the batching window(s) of
``--windows`` (default: the service's 5 ms):

- ``classify``: a PNG digit;  ``generate``: 32 characters of chapter 04's GPT;
- ``mixed``: both routes interleaved, with every 9th request one that used to break its batch
  (temperature 1e-40) and every 10th one that is invalid (a character outside the vocabulary:
  422);
- ``classify behind generation``: 4 clients classify while 16 clients ask for 500 characters each
  (a classification used to wait for the generations' batch).

Needs the course checkpoints (chapters 02 and 04, or ``--train-missing`` through ``make serve``)
and the ``serve`` extra. The same script measures an older checkout:
``PYTHONPATH=/path/to/old/checkout python benchmarks/serve_load.py``.
"""

from __future__ import annotations

import argparse
import statistics
import threading

import torch

import helpers
from course_serve.images import to_png
from course_serve.loadtest import load_test
from course_serve.process import ServerProcess

IMAGE = torch.zeros(28, 28, dtype=torch.uint8)
IMAGE[4:24, 12:16] = 255
PNG = ("POST", "/classify", {"content": to_png(IMAGE), "headers": {"content-type": "image/png"}})


def generate(i: int, tokens: int = 32, **extra) -> tuple:
    body = {"prompt": "ROMEO:\n" + "a" * (i % 30), "max_new_tokens": tokens, "seed": i, **extra}
    return ("POST", "/generate", {"json": body})


def mixed(i: int) -> tuple:
    if i % 10 == 9:
        return generate(i, prompt="héllo")  # 422: not in the vocabulary
    if i % 9 == 8:
        return generate(i, temperature=1e-40)  # greedy; it used to be a 500 for its whole batch
    return PNG if i % 2 else generate(i)


def behind_generation(url: str, seconds: float) -> dict:
    """Classify (4 clients) while 16 clients generate 500 characters each."""
    long = threading.Thread(target=load_test, args=(url, lambda i: generate(i, 500)),
                            kwargs=dict(requests=16, concurrency=16, time_limit=seconds,
                                        timeout=120))  # fmt: skip
    long.start()
    threading.Event().wait(1.0)  # the generations are running
    result = load_test(url, lambda i: PNG, requests=40, concurrency=4, time_limit=seconds)
    long.join()
    return result


SCENARIOS = ("classify", "generate", "mixed", "classify behind generation")


def run(url: str, scenario: str, seconds: float) -> dict:
    if scenario == "classify behind generation":
        return behind_generation(url, seconds)
    make, n = {"classify": (lambda i: PNG, 1000), "generate": (generate, 160),
               "mixed": (mixed, 300)}[scenario]  # fmt: skip
    return load_test(url, make, requests=n, concurrency=32, time_limit=seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20, help="time limit per run")
    parser.add_argument("--windows", type=float, nargs="+", default=[5.0], help="batching "
                        "windows in ms, one server each (0: no batching)")  # fmt: skip
    args = parser.parse_args()
    print(f"device: {helpers.device.describe_device(torch.device('cpu'))} | torch "
          f"{torch.__version__}")  # fmt: skip
    print(f"{'window':<7}{'scenario':<27}{'req/s':>16}{'p50 ms':>22}{'p99 ms':>24}  statuses")
    for window in args.windows:
        with ServerProcess(env={"COURSE_SERVE_BATCH_WINDOW_MS": window}) as server:
            load_test(server.url, mixed, requests=64, concurrency=32)  # warm-up
            for scenario in SCENARIOS:
                runs = [run(server.url, scenario, args.seconds) for _ in range(args.repeats)]
                print(f"{window:<7g}{scenario:<27}{row(runs)}", flush=True)


def row(runs: list[dict]) -> str:
    """Median [lowest-highest] of each number over the runs, and every status code counted."""
    cells = []
    for key, width in (("requests_per_second", 16), ("p50_ms", 22), ("p99_ms", 24)):
        values = [r[key] for r in runs]
        text = f"{statistics.median(values):8.1f} [{min(values):.0f}-{max(values):.0f}]"
        cells.append(text.rjust(width))
    statuses = {}
    for r in runs:
        for code, count in r["statuses"].items():
            statuses[code] = statuses.get(code, 0) + count
    return "".join(cells) + f"  {statuses}"


if __name__ == "__main__":
    main()
