"""Pools for the many-small-files stages: results in input order, with a bounded number in flight.

``Executor.map`` submits every job at once, so its pickled arguments and finished results pile up with the
size of the run; ``ordered_map`` keeps at most ``window`` jobs in flight, so memory stays flat at any scale.

The pool is local worker processes by default, or the workers of a Dask cluster when params.yaml
``compute.dask_scheduler`` or the environment variable TERRAPIPE_DASK_SCHEDULER (which wins) names its
scheduler. Either way the jobs are the same pure functions and results come back in input order, so the
outputs are byte-identical: the setting says where the work runs, never what it computes.
"""
from __future__ import annotations

import contextlib
import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator

WINDOW = 16
SCHEDULER_ENV = "TERRAPIPE_DASK_SCHEDULER"
log = logging.getLogger("terrapipe")
CONNECT_TIMEOUT_S = 5     # a wrong address fails in seconds, not after distributed's default 30 s
WORKERS_TIMEOUT_S = 30    # a scheduler may be up before its workers (a cluster being started)


def scheduler_address(compute=None) -> tuple[str, str] | None:
    """(address, where it was set) of the Dask scheduler to use, or None for the local process pool."""
    env = os.environ.get(SCHEDULER_ENV, "").strip()
    if env:
        return env, SCHEDULER_ENV
    if compute is not None and compute.dask_scheduler:
        return compute.dask_scheduler, "params.yaml compute.dask_scheduler"
    return None


def process_pool(compute=None):
    """An executor for the per-site work, to use in a ``with`` block: one local worker process per core (the
    work is many small numpy and GDAL calls that hold the GIL), or a Dask cluster's workers if ``compute``
    (terrapipe.config.ComputeParams) or TERRAPIPE_DASK_SCHEDULER names a scheduler."""
    where = scheduler_address(compute)
    if where is not None:
        return _dask_pool(*where)
    from concurrent.futures import ProcessPoolExecutor

    workers = max(1, os.cpu_count() or 1)
    pool = ProcessPoolExecutor(max_workers=workers)
    pool.slots = workers
    return pool


@contextlib.contextmanager
def _dask_pool(address: str, origin: str):
    """A concurrent.futures executor on the cluster; the client closes on exit, after the jobs in flight end
    (as a process pool's ``with`` block waits for them), so no worker still writes into a discarded output."""
    client = connect(address, origin)
    try:
        with client.get_executor(pure=False) as pool:  # pure=False: jobs write files, never deduplicate them
            pool.slots = sum(client.nthreads().values())
            log.info("per-site work on the Dask cluster at %s (%s): %d worker thread(s)", address, origin, pool.slots)
            yield pool
    finally:
        client.close()


def _unusable(address: str, origin: str, problem: str, fix: str):
    from terrapipe.errors import ConfigError

    overrides = " (it overrides params.yaml compute.dask_scheduler)" if origin == SCHEDULER_ENV else ""
    return ConfigError(f"{origin} = {address!r}{overrides}: {problem}. {fix}; or run on the local process pool: "
                       f"unset {SCHEDULER_ENV} and set compute.dask_scheduler: null in params.yaml")


async def _probe(address: str) -> None:
    from distributed.comm import connect as open_comm

    comm = await open_comm(address, timeout=CONNECT_TIMEOUT_S)
    await comm.close()


def connect(address: str, origin: str):
    """A Dask client whose workers can run this project's jobs; ConfigError naming the setting otherwise.

    The jobs read and write files by the stage's relative paths (data/raw/...), so every worker must run in
    this process's working directory, on a filesystem the machines share at the same path.
    """
    import asyncio

    from distributed import Client

    try:  # a bare connection first: a Client that fails to start hangs 10 s more when collected
        asyncio.run(_probe(address))
    except (OSError, ValueError, TypeError) as exc:  # refused, unknown host or scheme, timeout
        raise _unusable(address, origin, f"cannot reach a Dask scheduler there ({exc})",
                        f"Start one (`dask scheduler`, then `dask worker {address}` in the repository root on "
                        "each machine) or correct the address (tcp://host:8786)") from None
    client = Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    try:
        try:
            client.wait_for_workers(1, timeout=WORKERS_TIMEOUT_S)
        except TimeoutError:
            raise _unusable(address, origin, f"the scheduler has no worker after {WORKERS_TIMEOUT_S} s",
                            f"Start workers with `dask worker {address}` in the repository root") from None
        here = os.getcwd()
        elsewhere = {worker: cwd for worker, cwd in client.run(os.getcwd).items() if cwd != here}
        if elsewhere:
            raise _unusable(address, origin, f"{len(elsewhere)} worker(s) run in another directory than this "
                            f"stage ({here}), e.g. {next(iter(elsewhere.items()))}, so they would read and write "
                            "other files", f"Start `dask worker {address}` in {here} (a path the machines share)")
    except BaseException:
        client.close()
        raise
    return client


def ordered_map(pool, fn: Callable, jobs: Iterable, window: int | None = None) -> Iterator:
    """``pool.map(fn, jobs)`` in order, with at most ``window`` jobs submitted and not yet consumed (by default
    twice the pool's workers, at least WINDOW, so a large cluster is kept busy while the results wait in order)."""
    window = window or max(WINDOW, 2 * getattr(pool, "slots", 1))
    jobs = iter(jobs)
    pending = deque(pool.submit(fn, job) for _, job in zip(range(window), jobs))
    while pending:
        result = pending.popleft().result()
        for job in jobs:  # refill by one
            pending.append(pool.submit(fn, job))
            break
        yield result
