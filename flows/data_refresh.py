"""Refresh the data: dvc pull -> data stages -> validate -> dvc push (the nightly deployment).

    python flows/data_refresh.py       # from the repository root

Pulling first means a stage whose outputs are already in the remote is checked out, not recomputed;
pushing last shares what changed. Validation failing stops the run before anything is pushed.
"""
from __future__ import annotations

from prefect import flow

from terrapipe.orchestration import project
from terrapipe.orchestration.dvc import dvc_slot
from terrapipe.orchestration.tasks import data_and_validate, dvc, local_run


@flow(name="data-refresh", log_prints=True)
def data_refresh() -> None:
    """dvc pull, the data stages and validate, then dvc push."""
    stages = project.stages()
    with dvc_slot():
        dvc(["pull", "--allow-missing"], label="pull")
        data_and_validate(stages)
        dvc(["push"], label="push")


if __name__ == "__main__":
    with local_run():
        data_refresh()
