"""Figures for issues 2 and 7: the default data stages (dvc repro on a fresh copy), a no-op dvc repro,
and the validate stages on the default data.

    python benchmarks/bench_pipeline.py

Targets: data stages <= 120 s on the 2-core reference machine; no-op `dvc repro` <= 3 s (with the
validate stages in the pipeline); the validate stage <= 20 s. Beside the last, the floor it cannot go
under, measured in the same run: importing Great Expectations.
"""
from __future__ import annotations

import statistics

from _common import repo_copy, report, run_measured


def main() -> None:
    repo = repo_copy()
    run_measured(["dvc", "pull", "-q", "data.dvc"], repo)
    seconds, _ = run_measured(["dvc", "repro"], repo)
    report("default data stages (dvc repro, all stages)", seconds, "s", 120.0, "lower")
    noop = [run_measured(["dvc", "repro"], repo)[0] for _ in range(3)]
    report("no-op dvc repro (median of 3)", statistics.median(noop), "s", 3.0, "lower")
    validate, _ = run_measured(["python", "stages/validate.py"], repo)
    report("validate stage on the default data (every suite)", validate, "s", 20.0, "lower")
    imports, _ = run_measured(["python", "-c", "import great_expectations"], repo)
    print(f"(of which importing Great Expectations: {imports:.1f} s; the rest is {validate - imports:.1f} s)")
    status, _ = run_measured(["dvc", "status"], repo)
    print(f"(dvc status after the run: {status:.2f} s; workspace {repo})")


if __name__ == "__main__":
    main()
