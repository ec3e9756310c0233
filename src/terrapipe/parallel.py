"""Process pools for the many-small-files stages: results in input order, with a bounded number in flight.

``Executor.map`` submits every job at once, so its pickled arguments and finished results pile up with the
size of the run; ``ordered_map`` keeps at most ``window`` jobs in flight, so memory stays flat at any scale.
"""
from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator

WINDOW = 16


def process_pool():
    """One worker process per core (the work is many small numpy and GDAL calls that hold the GIL)."""
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(max_workers=max(1, os.cpu_count() or 1))


def ordered_map(pool, fn: Callable, jobs: Iterable, window: int = WINDOW) -> Iterator:
    """``pool.map(fn, jobs)`` in order, with at most ``window`` jobs submitted and not yet consumed."""
    jobs = iter(jobs)
    pending = deque(pool.submit(fn, job) for _, job in zip(range(window), jobs))
    while pending:
        result = pending.popleft().result()
        for job in jobs:  # refill by one
            pending.append(pool.submit(fn, job))
            break
        yield result
