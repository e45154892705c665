"""API calls in bounded concurrent waves.

The Kubernetes client is synchronous: its calls run on one thread pool the
whole operator shares. Each experiment's owner sends them through three lanes
of its own (decisions and reads, launches, deletions), each with at most
API_CONCURRENCY calls in flight, so a wave of new pods never holds up the
answer a trainer waits for at a rung, nor a slow deletion of a collection of
pods a launch. A wave's calls run in parallel (each is a round trip; in
sequence they made a step of a thousand-trial experiment take seconds); it
ends when all have, and raises the first error.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, TypeVar

T = TypeVar("T")

API_CONCURRENCY = int(os.environ.get("HPO_API_CONCURRENCY", "16"))
API_THREADS = 3 * API_CONCURRENCY  # one per call the three lanes can have in flight
_THREADS = ThreadPoolExecutor(max_workers=API_THREADS, thread_name_prefix="hpo-api")


class Lane:
    def __init__(self, limit: int = API_CONCURRENCY):
        self.limit = limit  # calls in flight at most
        self._slots = asyncio.Semaphore(limit)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        async with self._slots:
            return await asyncio.get_running_loop().run_in_executor(_THREADS, fn, *args)

    async def wave(self, calls: Iterable[Callable[[], T]]) -> list[T]:
        results = await asyncio.gather(*(self.call(c) for c in calls), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return results


class Lanes:
    """One experiment's three lanes."""

    def __init__(self, limit: int = API_CONCURRENCY):
        self.decisions, self.launches, self.deletions = Lane(limit), Lane(limit), Lane(limit)
