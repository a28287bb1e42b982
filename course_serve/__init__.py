"""course_serve: chapter 08's small model service (FastAPI + uvicorn).

It serves the course's trained models over HTTP, loaded once at start-up from the course
checkpoints:

- ``POST /classify``: chapter 02's MNIST CNN reads a 28x28 grey image (PNG bytes, an uploaded PNG
  file, or a JSON array of pixel values) and returns the digit and the ten probabilities;
- ``POST /generate``: chapter 04's character GPT continues a prompt (``max_new_tokens``,
  ``temperature``, ``top_k``, ``seed``; limits enforced), as JSON or, with ``"stream": true``, as
  server-sent events, one per character;
- ``GET /health`` (what is served), ``/health/live`` and ``/health/ready`` (probes), and
  ``GET /metrics`` (Prometheus).

Concurrent requests are batched on the server: the first request opens a short collection window
(``COURSE_SERVE_BATCH_WINDOW_MS``) and everything that arrives in it runs as one batch. Each route
has its own queue and inference thread; a full queue answers 503, a request past its deadline
504, and a client that disconnects stops its work. Bad input gets a clear 4xx and fails alone;
nothing a client sends crashes the worker.

Modules, one job each:

=============  ===================================================================
settings       the settings, read from ``COURSE_SERVE_*`` environment variables
inference      the models: loading from checkpoints, batched classify and generate
batching       the micro-batcher (a collection window in front of one inference thread)
images         request bodies to 28x28 image tensors, with clear errors
app            the FastAPI application: routes, schemas, limits, deadlines, streaming
metrics        Prometheus counters and histograms, and the middleware that counts requests
process        start the server in a subprocess on a free loopback port, stop it cleanly
loadtest       a bounded load test: requests per second, latency p50 / p99
client         a Python client and command line (``python -m course_serve.client``)
=============  ===================================================================

Run it with ``python -m course_serve`` (``make serve``); ``--help`` lists the options.
"""

__version__ = "0.1.0"
