"""train -> downstream-eval -> report through DVC, as one Prefect flow run.

    python flows/train_eval_report.py                 # the default set (params.yaml pretrain.run) on an
                                                      # ephemeral local server, or on PREFECT_API_URL's
    python flows/train_eval_report.py KEY [KEY ...]   # chosen experiments (terrapipe experiments list)

Run from the repository root. Data stages -> validate (a broken data contract stops the run before any
training) -> per experiment train (`dvc repro pretrain@KEY`) and evaluate (`dvc repro evaluate@KEY`) ->
each other stage after validate (the other experiment families) -> report; then one catalog row per experiment and keyed artifacts (report, metrics, training progress,
data quality). DVC decides what actually reruns; stages this project's dvc.yaml lacks are skipped.
"""
from __future__ import annotations

import sys
import time

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from terrapipe.orchestration import artifacts, project
from terrapipe.orchestration.dvc import dvc_slot
from terrapipe.orchestration.tasks import data_and_validate, local_run, record, repro, stage_seconds


@flow(name="train-eval-report", log_prints=True)
def train_eval_report(experiments: list[str] | None = None) -> list[dict]:
    """Train, evaluate and report ``experiments`` (None: params.yaml pretrain.run); returns the metrics rows."""
    started = time.perf_counter()
    keys = project.experiment_keys(experiments)  # an unknown key stops here, before any work
    stages = project.stages()
    logs = []
    with dvc_slot():  # one DVC user of this workspace at a time, for the whole run
        logs += data_and_validate(stages)
        progress = artifacts.Progress(len(keys))
        for key in keys:
            for stage, verb in ((stages.pretrain, "train"), (stages.evaluate, "evaluate")):
                if stage is not None:
                    logs.append(repro([stages.per_experiment(stage, key)], label=f"{verb}-{key}"))
            progress.advance()
        for stage in stages.others:  # the other experiment families (Earth4D, DeepEarth, ...)
            logs.append(repro([stage], label=stage))
        if stages.report is not None:
            logs.append(repro([stages.report], label="report"))
            artifacts.publish_report()
    found = {key: project.experiment_metrics(key) for key in keys}
    for key in keys:   # one catalog row per metrics file: kind "pretrain" or "evaluate"
        for kind, metrics in found[key].items():
            record(key, kind, project.resolved_params(key), metrics, flow_run.id)
    rows = artifacts.publish_metrics(keys, found=found)
    wall, work = time.perf_counter() - started, sum(map(stage_seconds, logs))
    get_run_logger().info("done: %d experiment(s) in %.0f s, %.0f s of it the stages' own work (%.0f%% outside it: "
                          "Prefect, DVC and stage start-up); report in reports/index.html",
                          len(keys), wall, work, 100 * (wall - work) / wall)
    return rows


if __name__ == "__main__":
    with local_run():
        train_eval_report(sys.argv[1:] or None)
