"""Many experiments, each its own DVC experiment and its own Prefect (sub)flow run (the weekly deployment).

    python flows/sweep.py KEY [KEY ...] [-S pretrain.base.train.steps=120 ...]

Each experiment runs as `dvc exp run --temp -n NAME -S pretrain.run=['KEY'] -S ...` in a temporary copy
of the workspace, so experiments never share (or dirty) the workspace; they run one after another in
this process, never racing for DVC's lock. `dvc exp show` lists them by NAME (KEY-<flow run id>), and
each gets a catalog row with its resolved params and metrics.
"""
from __future__ import annotations

import argparse
import json

from prefect import flow
from prefect.runtime import flow_run

from terrapipe import paths
from terrapipe.errors import ConfigError
from terrapipe.orchestration import artifacts, project
from terrapipe.orchestration.dvc import dvc_slot, run_dvc
from terrapipe.orchestration.tasks import dvc, local_run, record


def experiment_result(name: str) -> tuple[dict, dict, str]:
    """(params.yaml as the experiment ran it, its metrics by file, its git rev) from `dvc exp show --json`."""
    shown = json.loads(run_dvc("exp", "show", "--json", stdout_only=True))
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            for rev in exp.get("revs") or []:
                if rev.get("name") == name and rev.get("data"):
                    data = rev["data"]
                    metrics = {path: found.get("data", {}) for path, found in (data.get("metrics") or {}).items()}
                    return data["params"]["params.yaml"]["data"], metrics, rev["rev"]
    raise ConfigError(f"dvc exp show lists no experiment named {name!r}: did `dvc exp run` fail?")


@flow(name="sweep-experiment", flow_run_name="{experiment}")
def sweep_experiment(experiment: str, set_params: list[str], name: str) -> dict:
    """One experiment of a sweep as a DVC experiment ``name``; returns its metrics (pretrain, evaluate)."""
    from terrapipe.config import parse_params
    from terrapipe.train.experiments import pretrain_params, resolved_document

    overrides = [f"pretrain.run=['{experiment}']", *set_params]
    dvc(["exp", "run", "--temp", "-n", name, *(a for o in overrides for a in ("-S", o))], label=f"exp-run-{experiment}")
    params, by_file, rev = experiment_result(name)
    metrics = {stage: by_file[str(path / "metrics.json")] for stage, path in
               (("pretrain", paths.pretrain_dir(experiment)), ("evaluate", paths.evaluate_dir(experiment)))
               if str(path / "metrics.json") in by_file}
    document = {**resolved_document(pretrain_params(parse_params(params)), experiment),
                "set_params": list(set_params), "dvc_experiment": {"name": name, "rev": rev}}
    for kind, values in metrics.items():   # kind "pretrain" or "evaluate"; params.dvc_experiment marks a sweep
        record(experiment, kind, document, values, flow_run.id)
    artifacts.publish_metrics([experiment], key=artifacts.artifact_key("sweep", name), found={experiment: metrics})
    return metrics


@flow(name="sweep", log_prints=True)
def sweep(experiments: list[str], set_params: list[str] | None = None) -> dict[str, dict]:
    """Run each of ``experiments`` (params.yaml keys) with ``set_params`` (`dvc exp run -S` overrides)."""
    keys = project.experiment_keys(experiments, staged=False)
    overrides = list(set_params or [])
    bad = [o for o in overrides if "=" not in o or o.split("=", 1)[0].strip() in ("", "pretrain.run")]
    if bad:
        raise ConfigError(f"set_params {bad}: each must be KEY=VALUE of params.yaml (e.g. pretrain.base.train.steps=120); "
                          "choose experiments with the experiments parameter, not pretrain.run")
    suffix = (flow_run.id or "local")[:8]
    with dvc_slot():  # the subflows run in this process and re-enter it
        found = {key: sweep_experiment(key, overrides, name=f"{key}-{suffix}") for key in keys}
    artifacts.publish_metrics(keys, key="sweep-metrics", found=found)
    return found


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiments", nargs="+", help="params.yaml pretrain.experiments keys")
    parser.add_argument("-S", "--set-param", action="append", default=[], dest="set_params",
                        help="a params.yaml override for every experiment, as `dvc exp run -S` takes it")
    args = parser.parse_args()
    with local_run():
        sweep(args.experiments, args.set_params)
