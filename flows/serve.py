"""Serve every deployment of flows/prefect.yaml from this machine, without a work pool or worker.

    python flows/serve.py          # from the repository root; Ctrl-C stops serving

Names, schedules, parameters and tags come from prefect.yaml (one source), so the UI shows the same
deployments whether they are served here or run by workers. Flow runs start as subprocesses of this
process, in the current directory (where DVC runs), and scheduled ones start on time while it runs.
"""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PREFECT_YAML = ROOT / "flows" / "prefect.yaml"


def runner_deployments(path: Path = PREFECT_YAML) -> list:
    """One RunnerDeployment per prefect.yaml deployment (its work pool and pull steps do not apply here)."""
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.flows import load_flow_from_entrypoint

    from terrapipe.orchestration.deployments import load

    out = []
    for spec in load(path)["deployments"]:
        flow = load_flow_from_entrypoint(str(ROOT / spec["entrypoint"]))
        schedules = [CronSchedule(cron=s["cron"], timezone=s.get("timezone")) for s in spec.get("schedules") or []]
        out.append(flow.to_deployment(name=spec["name"], description=spec.get("description"),
                                      tags=spec.get("tags"), parameters=spec.get("parameters") or {},
                                      schedules=schedules or None))
    return out


if __name__ == "__main__":
    from prefect import serve

    serve(*runner_deployments())
