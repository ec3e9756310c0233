"""Figure for issue 11: what Prefect adds per task beyond the work it wraps (target <= 1 s per task).

    python benchmarks/bench_prefect_overhead.py [--tasks 50] [--dvc-calls 5]

On a fresh temporary PREFECT_HOME and an ephemeral local server (no PREFECT_API_URL), as `make demo`
runs the flow: N no-op tasks called in one flow (each call: task-run creation, state transitions, result
handling, logs), minus the same N calls of ``task.fn`` (the plain function) in a plain loop. The flow
call itself is timed apart (flow-run creation and its states), as is the first flow of the session
(starting the ephemeral server). A task of train_eval_report wraps a `dvc repro` of seconds to minutes,
so the per-task overhead is the share that matters. Then the flows' own `dvc` task (concurrency slot,
log streaming into the run log, retry bookkeeping) on `dvc version` against the same command run plainly.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=50, help="no-op tasks per flow (default 50)")
    parser.add_argument("--dvc-calls", type=int, default=5, help="`dvc version` calls, each way (default 5)")
    args = parser.parse_args()
    os.environ.update(PREFECT_HOME=tempfile.mkdtemp(prefix="terrapipe-bench-prefect-"),
                      PREFECT_SERVER_ANALYTICS_ENABLED="false")
    os.environ.pop("PREFECT_API_URL", None)

    started = time.perf_counter()
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE
    imported = time.perf_counter() - started

    @task(cache_policy=NO_CACHE)  # as the flows' tasks: no caching, DVC skips unchanged stages
    def noop(i: int) -> int:
        return i

    @flow
    def tasks_flow(n: int) -> int:
        return sum(noop(i) for i in range(n))

    @flow
    def empty_flow(n: int) -> int:
        return n

    started = time.perf_counter()
    empty_flow(0)                                   # starts the ephemeral server (SQLite migrations)
    first = time.perf_counter() - started
    def best_of_3(run) -> float:  # the machine is shared: the least disturbed of three runs
        times = []
        for _ in range(3):
            started = time.perf_counter()
            run()
            times.append(time.perf_counter() - started)
        return min(times)

    flow_cost = best_of_3(lambda: empty_flow(0))
    with_tasks = best_of_3(lambda: tasks_flow(args.tasks))
    started = time.perf_counter()
    assert sum(noop.fn(i) for i in range(args.tasks)) == sum(range(args.tasks))
    plain = time.perf_counter() - started

    per_task = (with_tasks - flow_cost - plain) / args.tasks
    print(f"import prefect: {imported:.2f} s; first flow (ephemeral server start): {first:.1f} s")
    print(f"empty flow: {flow_cost:.2f} s; flow of {args.tasks} no-op tasks: {with_tasks:.2f} s; "
          f"the same {args.tasks} task.fn calls: {plain * 1e3:.3f} ms")
    from _common import report

    report("Prefect overhead per no-op task", per_task * 1e3, "ms", 1000.0, "lower")

    from terrapipe.orchestration.dvc import dvc_executable, dvc_slot
    from terrapipe.orchestration.tasks import dvc

    @flow
    def dvc_flow(n: int) -> None:
        with dvc_slot():  # as the flows hold it
            for i in range(n):
                dvc(["version"], label=f"version-{i}")

    started = time.perf_counter()
    dvc_flow(args.dvc_calls)
    in_tasks = time.perf_counter() - started - flow_cost
    started = time.perf_counter()
    for _ in range(args.dvc_calls):
        subprocess.run([dvc_executable(), "version"], check=True, capture_output=True)
    direct = time.perf_counter() - started
    print(f"{args.dvc_calls} x `dvc version`: {in_tasks:.2f} s as the flows' dvc task, {direct:.2f} s plainly")
    report("overhead of the flows' dvc task per call", (in_tasks - direct) / args.dvc_calls * 1e3, "ms", 1000.0, "lower")


if __name__ == "__main__":
    main()
