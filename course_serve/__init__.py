"""course_serve: chapter 08's small model service (FastAPI + uvicorn).

It serves the course's trained models over HTTP, loaded once at start-up from the course
checkpoints:

- ``POST /classify``: chapter 02's MNIST CNN reads a 28x28 grey image (PNG bytes, an uploaded PNG
  file, or a JSON array of pixel values) and returns the digit and the ten probabilities;
- ``POST /generate``: chapter 04's character GPT continues a prompt (``max_new_tokens``,
  ``temperature``, ``top_k``, ``seed``; limits enforced);
- ``GET /health``: the models, the device, the batching settings and counters.

Concurrent requests are batched on the server: the first request opens a short collection window
(``COURSE_SERVE_BATCH_WINDOW_MS``) and everything that arrives in it runs as one batch. Bad input
gets a clear 4xx; nothing a client sends crashes the worker.

Modules, one job each:

=============  ===================================================================
settings       the settings, read from ``COURSE_SERVE_*`` environment variables
inference      the models: loading from checkpoints, batched classify and generate
batching       the micro-batcher (a collection window in front of one inference thread)
images         request bodies to 28x28 image tensors, with clear errors
app            the FastAPI application: routes, schemas, limits, error handlers
process        start the server in a subprocess on a free loopback port, stop it cleanly
loadtest       a bounded load test: requests per second, latency p50 / p99
=============  ===================================================================

Run it with ``python -m course_serve`` (``make serve``); ``--help`` lists the options.
"""

__version__ = "0.1.0"
