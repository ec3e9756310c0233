"""flows/prefect.yaml read and checked: Prefect's own model ignores unknown keys (a misspelt `entrypiont` or
`schedules` is silently dropped) and accepts impossible crons and timezones, so they are checked here.

Allowed keys are taken from Prefect's models (PrefectYamlModel and the models of its fields), the step
arguments from each step function's signature; `definitions` is the documented home of YAML anchors.
"""
from __future__ import annotations

import inspect
from pathlib import Path

from terrapipe.errors import ConfigError

STEP_KEYS = {"id", "requires"}   # every step accepts these besides its function's arguments


def _keys(model) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()} | set(model.model_fields)


def _unknown(where: str, found: dict, allowed: set[str]) -> list[str]:
    return [f"{where}.{key}: unknown key; allowed: {', '.join(sorted(allowed))}" for key in found if key not in allowed]


def _check_steps(where: str, steps) -> list[str]:
    from prefect.utilities.importtools import import_object

    problems = []
    for i, step in enumerate(steps or []):
        if not isinstance(step, dict) or len(step) != 1:
            problems.append(f"{where}[{i}]: a step is a mapping of one function path to its arguments")
            continue
        (function, kwargs), = step.items()
        try:
            signature = inspect.signature(import_object(function))
        except (ImportError, AttributeError, ValueError) as exc:
            problems.append(f"{where}[{i}]: cannot import step {function!r} ({exc})")
            continue
        takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
        if not takes_any:
            problems += _unknown(f"{where}[{i}].{function}", kwargs or {}, set(signature.parameters) | STEP_KEYS)
    return problems


def _check_schedule(where: str, schedule: dict) -> list[str]:
    from prefect.cli.deploy._models import RawScheduleConfig
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    problems = _unknown(where, schedule, _keys(RawScheduleConfig))
    if "cron" not in schedule:
        return problems + [f"{where}: every schedule here is a cron (nightly, weekly); got {sorted(schedule)}"]
    if "timezone" not in schedule:
        problems.append(f"{where}: give a timezone (a cron without one runs in UTC, whatever the reader assumes)")
    try:
        CronSchedule(cron=schedule["cron"], timezone=schedule.get("timezone"))
    except ValidationError as exc:
        problems.append(f"{where}: {'; '.join(e['msg'] for e in exc.errors())}")
    return problems


def check(document: dict) -> list[str]:
    """Every problem of a prefect.yaml document: unknown keys (at any level Prefect reads), bad schedules."""
    from prefect.cli.deploy._models import DeploymentConfig, PrefectYamlModel, WorkPoolConfig

    problems = _unknown("prefect.yaml", document, _keys(PrefectYamlModel) | {"definitions"})
    for action in ("build", "push", "pull"):
        problems += _check_steps(action, document.get(action))
    for i, deployment in enumerate(document.get("deployments") or []):
        where = f"deployments[{i}] ({deployment.get('name', '?')})"
        problems += _unknown(where, deployment, _keys(DeploymentConfig))
        for key in ("name", "entrypoint"):
            if not deployment.get(key):
                problems.append(f"{where}: {key} is required")
        problems += _unknown(f"{where}.work_pool", deployment.get("work_pool") or {}, _keys(WorkPoolConfig))
        for action in ("build", "push", "pull"):
            problems += _check_steps(f"{where}.{action}", deployment.get(action))
        for j, schedule in enumerate(deployment.get("schedules") or []):
            problems += _check_schedule(f"{where}.schedules[{j}]", schedule)
    if not problems:  # types, as `prefect deploy` reads them
        from pydantic import ValidationError

        try:
            PrefectYamlModel.model_validate(document)
        except ValidationError as exc:
            problems += [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
    return problems


def load(path: Path) -> dict:
    """The checked prefect.yaml (YAML anchors and merges resolved); ConfigError listing every problem."""
    import yaml

    document = yaml.safe_load(Path(path).read_text())
    problems = check(document)
    if problems:
        raise ConfigError(f"{path}: {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    return document
