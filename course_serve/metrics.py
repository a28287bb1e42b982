"""Prometheus metrics at ``GET /metrics`` (the text format ``prometheus-client`` writes).

========================================  =============================================
``course_serve_requests_total``           requests answered, by route and status code
``course_serve_request_seconds``          latency histogram by route (to the response's
                                          start)
``course_serve_batch_size``               histogram of the batches each lane ran
``course_serve_pending``                  requests waiting or running, per lane (a gauge)
``course_serve_generated_tokens_total``   characters generated (cancelled requests too)
``course_serve_cancelled_total``          requests given up, by lane and reason
                                          (deadline, disconnect)
``course_serve_rejected_total``           requests refused with 503 (a lane was full)
========================================  =============================================

Each app has its own registry, so several apps in one process (tests) do not collide. With
``--workers N`` every worker process counts its own requests, and a scrape reaches one of them;
Prometheus' multiprocess mode would be needed to add them up.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

ROUTES = ("/classify", "/generate", "/health", "/health/live", "/health/ready", "/metrics")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """The service's counters and histograms, in one registry."""

    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("course_serve_requests", "Requests answered.",
                                ["route", "status"], registry=r)  # fmt: skip
        self.latency = Histogram("course_serve_request_seconds", "Time to the response's start.",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)  # fmt: skip
        self.batch_size = Histogram("course_serve_batch_size", "Requests per batch run.",
                                    ["lane"], buckets=BATCH_BUCKETS, registry=r)  # fmt: skip
        self.pending = Gauge("course_serve_pending", "Requests waiting or running.", ["lane"],
                             registry=r)  # fmt: skip
        self.tokens = Counter("course_serve_generated_tokens", "Characters generated.",
                              registry=r)  # fmt: skip
        self.cancelled = Counter("course_serve_cancelled", "Requests given up.",
                                 ["lane", "reason"], registry=r)  # fmt: skip
        self.rejected = Counter("course_serve_rejected", "Requests refused (lane full).",
                                ["lane"], registry=r)  # fmt: skip

    def watch(self, lane: str, batcher) -> None:
        """Report ``batcher``'s pending count and batch sizes under ``lane``."""
        self.pending.labels(lane).set_function(lambda: batcher.pending)
        batcher.observe = self.batch_size.labels(lane).observe


class RequestMetrics:
    """ASGI middleware: counts every HTTP response by route and status, and times it."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = scope["path"] if scope["path"] in ROUTES else "other"
        start = time.perf_counter()

        async def counted(message):
            if message["type"] == "http.response.start":
                self.metrics.requests.labels(route, str(message["status"])).inc()
                self.metrics.latency.labels(route).observe(time.perf_counter() - start)
            await send(message)

        await self.app(scope, receive, counted)
