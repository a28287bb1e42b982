"""Server-side batching: a short collection window in front of an inference thread.

The first request to arrive opens a window of ``window_s`` seconds; every request that arrives
before it closes (up to ``max_batch``) joins the batch, which then runs as one call of ``fn`` on
the lane's inference thread. Waiting a few milliseconds costs each request a little latency and
buys one matrix product for many requests instead of many small ones.

A batch that fails is run again one request at a time, so one bad request fails alone and the
others get their results.

With ``window_s == 0`` there is no batching: each request runs alone (still one at a time on the
inference thread, so concurrent requests queue instead of fighting over the cores).

Backpressure: a lane holds at most ``max_pending`` requests (waiting or running). ``submit``
refuses the next one at once with :class:`Overloaded` (the service answers 503 and
``Retry-After``) instead of letting a queue, and every client's wait, grow without bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor


class Overloaded(Exception):
    """The lane already holds ``max_pending`` requests."""


class MicroBatcher:
    """``await batcher.submit(item)`` returns ``fn([... item ...])[its index]``.

    ``submit`` itself is not a coroutine: it admits or refuses the request immediately and
    returns a future. Cancelling that future (a deadline, a client that left) drops the request
    if it is still waiting; ``observe(size)`` is called with the size of every batch that runs.
    """

    def __init__(self, fn: Callable[[list], list], executor: Executor, *, window_s: float,
                 max_batch: int, max_pending: int = 1_000_000,
                 observe: Callable[[int], None] | None = None):  # fmt: skip
        if window_s < 0 or max_batch < 1 or max_pending < 1:
            raise ValueError("need window_s >= 0, max_batch >= 1 and max_pending >= 1, got "
                             f"{window_s}, {max_batch}, {max_pending}.")  # fmt: skip
        self.fn, self.executor, self.observe = fn, executor, observe
        self.window_s, self.max_batch, self.max_pending = window_s, max_batch, max_pending
        self.queue: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None
        self.pending = 0  # admitted and not finished (waiting, or in the running batch)
        self.requests = self.batches = self.largest = 0

    @property
    def enabled(self) -> bool:
        return self.window_s > 0 and self.max_batch > 1

    @property
    def full(self) -> bool:
        return self.pending >= self.max_pending

    def stats(self) -> dict:
        mean = round(self.requests / self.batches, 2) if self.batches else 0.0
        return {"requests": self.requests, "batches": self.batches, "largest_batch": self.largest,
                "mean_batch": mean, "pending": self.pending}  # fmt: skip

    def submit(self, item) -> asyncio.Future:
        """Admit ``item`` (or raise :class:`Overloaded`) and return the future of its result."""
        if self.full:
            raise Overloaded(f"{self.pending} requests are already waiting or running")
        self.pending += 1
        if self.enabled:
            if self.task is None:  # started on first use, inside the server's event loop
                self.queue = asyncio.Queue()
                self.task = asyncio.create_task(self._collect())
            future = asyncio.get_running_loop().create_future()
            self.queue.put_nowait((item, future))
        else:
            future = asyncio.ensure_future(self._first([item]))
        future.add_done_callback(self._done)
        return future

    def _done(self, _future) -> None:
        self.pending -= 1

    async def _first(self, items: list):
        return (await self._run(items))[0]

    async def _run(self, items: list) -> list:
        self.requests += len(items)
        self.batches += 1
        self.largest = max(self.largest, len(items))
        if self.observe is not None:
            self.observe(len(items))
        return await asyncio.get_running_loop().run_in_executor(self.executor, self.fn, items)

    async def _collect(self):
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + self.window_s
            while len(batch) < self.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            batch = [(item, future) for item, future in batch if not future.done()]
            if batch:
                await self._finish(batch)

    async def _finish(self, batch: list):
        try:
            results = await self._run([item for item, _ in batch])
        except Exception as error:
            if len(batch) == 1:
                results = [error]
            else:  # run each request alone: only the one that fails gets the error
                results = [await self._alone(item) for item, _ in batch]
        for (_, future), result in zip(batch, results):
            if future.done():  # cancelled meanwhile: nobody waits for it
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _alone(self, item):
        try:
            return (await self._run([item]))[0]
        except Exception as error:  # the loop keeps serving
            return error

    async def close(self, timeout: float = 0.0):
        """Stop collecting; with a ``timeout``, first let admitted requests finish (drain)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while self.pending and loop.time() < end:
            await asyncio.sleep(0.01)
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
            self.task = None
