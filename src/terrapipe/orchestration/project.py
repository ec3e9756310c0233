"""The project a flow runs on: its stage names (read from its dvc.yaml), experiment keys and outputs.

Stage names are data: the flows ask which of the pipeline's roles (data stages, validate, train, evaluate,
report) the project's dvc.yaml has, so a stage added or missing there changes what runs, not the code; a
new experiment family's stage (after validate) becomes a task of its own without a change here.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from terrapipe import paths
from terrapipe.errors import ConfigError, InputDataError

VALIDATE, PRETRAIN, EVALUATE, REPORT = "validate", "pretrain", "evaluate", "report"


@dataclass(frozen=True)
class Stages:
    """The roles of the project's stages; a role whose stage dvc.yaml lacks is None."""

    data: tuple[str, ...]          # every stage before validate, in dvc.yaml's order
    validate: str | None
    pretrain: str | None           # foreach stages: run as f"{name}@{experiment}"
    evaluate: str | None
    report: str | None
    others: tuple[str, ...] = ()   # the rest after validate (other experiment families: earth4d_alphaearth, ...)

    def per_experiment(self, stage: str | None, experiment: str) -> str | None:
        return None if stage is None else f"{stage}@{experiment}"


def stages(root: Path = Path(".")) -> Stages:
    """What root/dvc.yaml defines (foreach groups by their name, as dvc repro takes them by name)."""
    import yaml

    dvc_yaml = Path(root) / "dvc.yaml"
    if not dvc_yaml.is_file():
        raise InputDataError(dvc_yaml, "not found", "run the flow from the repository root (where dvc.yaml is)")
    names = list((yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages", {}))
    before_validate = names[:names.index(VALIDATE)] if VALIDATE in names else [
        n for n in names if n in paths.STAGES[:paths.STAGES.index(VALIDATE)]]
    roles = {role: (role if role in names else None) for role in (VALIDATE, PRETRAIN, EVALUATE, REPORT)}
    others = [n for n in names if n not in before_validate and n not in roles]
    return Stages(data=tuple(before_validate), others=tuple(others), **roles)


def pretrain_params(root: Path = Path(".")):
    """The validated ``pretrain`` section of root/params.yaml (ConfigError naming the key on problems)."""
    from terrapipe.config import load_params
    from terrapipe.train.experiments import pretrain_params as section

    return section(load_params(Path(root) / "params.yaml"))


def experiment_keys(requested: list[str] | None, root: Path = Path("."), *, staged: bool = True) -> list[str]:
    """``requested`` checked against params.yaml (None = pretrain.run, the default set), before any work.

    ``staged``: the keys must be in pretrain.run, the experiments dvc.yaml has pretrain@KEY stages for (a
    sweep runs any experiment: it sets pretrain.run itself).
    """
    pretrain = pretrain_params(root)
    keys = list(pretrain.run) if requested is None else list(requested)
    params = Path(root) / "params.yaml"
    unknown = [k for k in keys if k not in pretrain.experiments]
    if unknown:
        raise ConfigError(f"unknown experiment(s) {', '.join(map(repr, unknown))}; the experiments of "
                          f"{params} (pretrain.experiments) are: {', '.join(pretrain.experiments)}")
    unstaged = [k for k in keys if staged and k not in pretrain.run]
    if unstaged:
        raise ConfigError(f"experiment(s) {', '.join(map(repr, unstaged))} are not in {params} pretrain.run, so DVC "
                          f"has no pretrain@KEY stage for them (it has: {', '.join(pretrain.run)}). Add them to "
                          "pretrain.run, or run them with the sweep flow (flows/sweep.py)")
    if not keys:
        raise ConfigError("no experiments to run: pass experiment keys or list some in params.yaml pretrain.run")
    return list(dict.fromkeys(keys))


def resolved_params(experiment: str, root: Path = Path(".")) -> dict:
    """The experiment's resolved config (what `terrapipe experiments show KEY` prints), for the catalog."""
    from terrapipe.train.experiments import resolved_document

    return resolved_document(pretrain_params(root), experiment)


def read_json(path: Path) -> dict | None:
    """A metrics/report JSON file, or None when the stage that writes it is not in this project."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputDataError(path, f"is not valid JSON ({exc})", "re-run the stage that writes it") from None


def experiment_metrics(experiment: str, root: Path = Path(".")) -> dict:
    """{"pretrain": models/pretrain/KEY/metrics.json, "evaluate": models/evaluate/KEY/metrics.json}, those present."""
    found = {"pretrain": read_json(Path(root) / paths.pretrain_dir(experiment) / "metrics.json"),
             "evaluate": read_json(Path(root) / paths.evaluate_dir(experiment) / "metrics.json")}
    return {k: v for k, v in found.items() if v is not None}
