"""Figures for issue 10: the four fetch_tasks stages at the default sizes, against the 60 s budget for all four.

    python benchmarks/bench_fetch_tasks.py [--params params.yaml] [--tasks eurosat so2sat pastis mados] [--out DIR]

Runs `python stages/fetch_tasks.py TASK` (the stage itself, in a child process) for each task in a temporary
working directory (so data/raw/ of the checkout is untouched), then reads each output back through the reader of
its real format and reports per task: wall seconds, peak RSS, samples per partition, classes present, and the
read-back time; finally the total against the 60 s target (this machine: 2 shared cores).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

TARGET_S = 60.0  # all four fetch_tasks stages at the default sizes


def main() -> None:
    from _common import VENV_BIN, report, run_measured

    from terrapipe.data.tasks import TASKS, read_task

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default=REPO / "params.yaml", type=Path)
    parser.add_argument("--inputs", default=REPO / "data" / "inputs", type=Path)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--out", type=Path, help="keep the outputs here (default: a temporary folder)")
    args = parser.parse_args()

    work = args.out or Path(tempfile.mkdtemp(prefix="terrapipe-bench-tasks-"))
    total = 0.0
    try:
        for task in args.tasks:
            cmd = [str(VENV_BIN / "python"), str(REPO / "stages" / "fetch_tasks.py"), task,
                   "--params", str(args.params.resolve()), "--inputs", str(args.inputs.resolve())]
            seconds, peak_mib = run_measured(cmd, cwd=work)
            total += seconds
            started = time.perf_counter()
            data = read_task(task, work / "data" / "raw" / "tasks" / task)
            read_s = time.perf_counter() - started
            parts = {p: int((data.partition == p).sum()) for p in ("train", "valid", "test")}
            labels = data.labels[data.labels >= 0]
            shapes = {k: tuple(v.shape) for k, v in data.images.items()}
            print(f"{task}: stage {seconds:.1f} s, peak RSS {peak_mib:.0f} MiB, read back {read_s:.2f} s | "
                  f"{len(data)} samples {parts} | {len(set(labels.tolist()))}/{len(data.class_names)} classes | "
                  f"{shapes}", flush=True)
        if set(args.tasks) == set(TASKS):
            report("fetch_tasks, all four tasks", total, "s", TARGET_S, "lower")
    finally:
        if args.out is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
