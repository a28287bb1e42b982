"""Server-side batching: a short collection window in front of one inference thread.

The first request to arrive opens a window of ``window_s`` seconds; every request that arrives
before it closes (up to ``max_batch``) joins the batch, which then runs as one call of ``fn`` on
the inference thread. Waiting a few milliseconds costs each request a little latency and buys one
matrix product for many requests instead of many small ones.

A batch that fails is run again one request at a time, so one bad request fails alone and the
others get their results.

With ``window_s == 0`` there is no batching: each request runs alone (still one at a time on the
inference thread, so concurrent requests queue instead of fighting over the cores).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor


class MicroBatcher:
    """``await batcher.submit(item)`` returns ``fn([... item ...])[its index]``."""

    def __init__(self, fn: Callable[[list], list], executor: Executor, *, window_s: float,
                 max_batch: int):  # fmt: skip
        if window_s < 0 or max_batch < 1:
            raise ValueError(f"need window_s >= 0 and max_batch >= 1, got {window_s}, {max_batch}.")
        self.fn, self.executor = fn, executor
        self.window_s, self.max_batch = window_s, max_batch
        self.queue: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None
        self.requests = self.batches = self.largest = 0

    @property
    def enabled(self) -> bool:
        return self.window_s > 0 and self.max_batch > 1

    def stats(self) -> dict:
        mean = round(self.requests / self.batches, 2) if self.batches else 0.0
        return {"requests": self.requests, "batches": self.batches, "largest_batch": self.largest,
                "mean_batch": mean}  # fmt: skip

    async def submit(self, item):
        if not self.enabled:
            return (await self._run([item]))[0]
        if self.task is None:  # started on first use, inside the server's event loop
            self.queue = asyncio.Queue()
            self.task = asyncio.create_task(self._collect())
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((item, future))
        return await future

    async def _run(self, items: list) -> list:
        self.requests += len(items)
        self.batches += 1
        self.largest = max(self.largest, len(items))
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
            batch = [(item, future) for item, future in batch if not future.cancelled()]
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
            if future.done():
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

    async def close(self):
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
            self.task = None
