"""The Prefect tasks the flows in flows/ are made of.

Retries live here only, and only for transient failures (``retry_transient``). Caching is off everywhere
(NO_CACHE): DVC already skips a stage whose code, data and params are unchanged, and a Prefect cache keyed
on anything less than all of them could return a result for changed inputs.
"""
from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from terrapipe import paths
from terrapipe.orchestration import artifacts
from terrapipe.orchestration.dvc import DvcCommandError, retry_transient, run_dvc
from terrapipe.orchestration.project import Stages

RETRY_DELAYS_S = [2, 10, 30]  # DVC's lock is held for a stage's length; remotes recover in seconds to minutes


@task(task_run_name="{label}", retries=len(RETRY_DELAYS_S), retry_delay_seconds=RETRY_DELAYS_S,
      retry_condition_fn=retry_transient, cache_policy=NO_CACHE, tags=["dvc"])
def dvc(args: list[str], label: str) -> str:
    """One `dvc` command (repro, pull, push, exp run), its log streamed into this task's log."""
    return run_dvc(*args)


STAGE_DONE = re.compile(r" terrapipe INFO (\S+) done in ([0-9.]+) s$", re.MULTILINE)  # terrapipe.stage.run_stage


def stage_seconds(output: str) -> float:
    """The stages' own work in a `dvc repro` log: the sum of their "STAGE done in N s" lines (after start-up)."""
    return sum(float(seconds) for _, seconds in STAGE_DONE.findall(output))


def repro(targets: list[str] | tuple[str, ...], label: str) -> str:
    """`dvc repro <targets>` as a task named ``label`` (DVC runs what changed, skips the rest)."""
    return dvc(["repro", *targets], label=label)


@task(task_run_name="catalog-{experiment}", cache_policy=NO_CACHE)
def record(experiment: str, kind: str, params: dict, metrics: dict, flow_run_id: str | None) -> str:
    """One row in the DuckDB catalog's ``runs`` table (it waits for, or reports, another writer itself)."""
    from terrapipe.catalog import record_run

    return record_run(paths.CATALOG, experiment=experiment, kind=kind, params=params, metrics=metrics,
                      flow_run_id=flow_run_id, root=Path("."))


def data_and_validate(stages: Stages) -> list[str]:
    """The data stages, then validate; its summary (or its failure) as the data-quality artifact. The logs."""
    logs = [repro(list(stages.data), label="data-stages")] if stages.data else []
    if stages.validate is None:
        return logs
    try:
        logs.append(repro([stages.validate], label="validate"))
    except DvcCommandError as exc:
        artifacts.publish_quality(failure=exc.tail)
        raise
    artifacts.publish_quality()
    return logs


EPHEMERAL_STARTUP_S = 180  # a fresh PREFECT_HOME migrates its SQLite database first: 20 s (Prefect's default) is too
                           # little on a loaded 2-core machine


@contextlib.contextmanager
def local_run():
    """Settings for a flow started from the command line: more time for the ephemeral server to start
    (unless PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS says otherwise). No effect with PREFECT_API_URL."""
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings

    if "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" in os.environ:
        yield
        return
    with temporary_settings({PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: EPHEMERAL_STARTUP_S}):
        yield
