"""A bounded load test on loopback: requests per second and latency percentiles.

``load_test(url, make_request, requests=200, concurrency=16, time_limit=30)`` keeps
``concurrency`` requests in flight from as many client threads (one keep-alive connection each)
until ``requests`` have been sent or ``time_limit`` seconds have passed, whichever comes first.
``make_request(i)`` gives the i-th request as ``(method, path, httpx keyword arguments)``.
Threads, not asyncio, so it runs the same in a script and inside Jupyter's event loop.
"""

from __future__ import annotations

import itertools
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation, as numpy's default."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def load_test(url: str, make_request, *, requests: int = 200, concurrency: int = 16,
              time_limit: float = 30.0, timeout: float = 30.0) -> dict:  # fmt: skip
    """Send the requests and return counts, ``requests_per_second`` and latencies in ms."""
    import httpx

    if not url.startswith(("http://127.0.0.1", "http://localhost")):
        raise ValueError(f"load tests run on loopback only (http://127.0.0.1:...), not {url!r}.")
    if requests < 1 or concurrency < 1 or time_limit <= 0:
        raise ValueError("requests and concurrency must be >= 1 and time_limit > 0.")
    counter, lock = itertools.count(), threading.Lock()
    latencies, statuses = [], {}
    start = time.perf_counter()
    deadline = start + time_limit

    def client():
        with httpx.Client(base_url=url, timeout=timeout) as session:
            while time.perf_counter() < deadline:
                with lock:
                    i = next(counter)
                if i >= requests:
                    return
                method, path, kwargs = make_request(i)
                sent = time.perf_counter()
                try:
                    status = session.request(method, path, **kwargs).status_code
                except httpx.HTTPError as error:
                    status = type(error).__name__
                with lock:
                    latencies.append(time.perf_counter() - sent)
                    statuses[status] = statuses.get(status, 0) + 1

    with ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(client) for _ in range(concurrency)]:
            future.result()
    seconds = time.perf_counter() - start
    ms = [s * 1000 for s in latencies]
    return {
        "requests": len(ms),
        "ok": statuses.get(200, 0),
        "statuses": statuses,
        "seconds": seconds,
        "requests_per_second": len(ms) / seconds,
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "mean_ms": statistics.fmean(ms) if ms else float("nan"),
    }
