"""flows/prefect.yaml and the Kubernetes base job template, checked offline (no server, no cluster)."""
from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PREFECT_YAML = REPO / "flows" / "prefect.yaml"
K8S_TEMPLATE = REPO / "flows" / "work-pools" / "kubernetes.json"


@pytest.fixture(scope="module")
def document():
    return yaml.safe_load(PREFECT_YAML.read_text())


@pytest.fixture(scope="module")
def template():
    return json.loads(K8S_TEMPLATE.read_text())


def problems(document) -> list[str]:
    from terrapipe.orchestration.deployments import check

    return check(document)


def test_prefect_yaml_is_clean_and_deploys_the_three_flows(document):
    assert problems(document) == []
    by_flow = {}
    for deployment in document["deployments"]:
        by_flow.setdefault(deployment["entrypoint"], []).append(deployment["name"])
        path, function = deployment["entrypoint"].split(":")
        assert f"def {function}(" in (REPO / path).read_text()
    assert sorted(by_flow) == ["flows/data_refresh.py:data_refresh", "flows/sweep.py:sweep",
                               "flows/train_eval_report.py:train_eval_report"]
    pools = {d["work_pool"]["name"] for d in document["deployments"]}
    assert pools == {"terrapipe-process", "terrapipe-kubernetes"}
    clone, pull = document["pull"]
    assert clone["prefect.deployments.steps.git_clone"]["id"] == "clone-step"
    assert pull["prefect.deployments.steps.run_shell_script"]["directory"] == "{{ clone-step.directory }}"
    assert pull["prefect.deployments.steps.run_shell_script"]["script"].startswith("dvc pull")


@pytest.mark.parametrize("where, typo, expected", [
    (("deployments", 0), {"entrypiont": "flows/x.py:x"}, "deployments[0] (local).entrypiont: unknown key"),
    (("deployments", 2), {"schedule_s": []}, "deployments[2] (nightly).schedule_s: unknown key"),
    (("deployments", 0, "work_pool"), {"job_variable": {}}, "work_pool.job_variable: unknown key"),
    (("deployments", 2, "schedules", 0), {"tiemzone": "UTC"}, "schedules[0].tiemzone: unknown key"),
    (("pull", 0, "prefect.deployments.steps.git_clone"), {"brnach": "main"}, "git_clone.brnach: unknown key"),
    ((), {"deploymnets": []}, "prefect.yaml.deploymnets: unknown key"),
])
def test_a_typo_anywhere_fails(document, where, typo, expected):
    broken = copy.deepcopy(document)
    node = broken
    for key in where:
        node = node[key]
    node.update(typo)
    found = problems(broken)
    assert any(expected in p for p in found), found


@pytest.mark.parametrize("schedule, expected", [
    ({"cron": "61 2 * * *", "timezone": "UTC"}, "cron"),
    ({"cron": "0 2 * * *", "timezone": "Mars/Olympus_Mons"}, "timezone"),
    ({"cron": "0 2 * * *"}, "give a timezone"),
    ({"interval": 3600, "timezone": "UTC"}, "every schedule here is a cron"),
])
def test_every_cron_and_timezone_is_validated(document, schedule, expected):
    broken = copy.deepcopy(document)
    broken["deployments"][2]["schedules"] = [schedule]
    found = problems(broken)
    assert any(expected in p.lower() or expected in p for p in found), found


def test_schedules_are_valid_cron_schedules(document):
    from prefect.client.schemas.schedules import CronSchedule

    schedules = {d["name"]: d.get("schedules") for d in document["deployments"]}
    assert schedules["nightly"] and schedules["weekly"]
    for deployment in document["deployments"]:
        for schedule in deployment.get("schedules") or []:
            CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])


def test_serve_offers_the_same_deployments(document):
    spec = importlib.util.spec_from_file_location("serve", REPO / "flows" / "serve.py")
    serve = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve)
    served = {d.name: d for d in serve.runner_deployments(PREFECT_YAML)}
    assert sorted(served) == sorted(d["name"] for d in document["deployments"])
    for spec in document["deployments"]:
        runner = served[spec["name"]]
        assert runner.parameters == (spec.get("parameters") or {})
        assert [(s.schedule.cron, s.schedule.timezone) for s in runner.schedules or []] == [
            (s["cron"], s["timezone"]) for s in spec.get("schedules") or []]
        assert set(runner.tags) == set(spec["tags"])


def test_kubernetes_template_passes_the_server_schema(template):
    from prefect.server.schemas.actions import WorkPoolCreate

    WorkPoolCreate(name="terrapipe-kubernetes", type="kubernetes", base_job_template=template)
    undeclared = copy.deepcopy(template)
    undeclared["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["priorityClassName"] = "{{ priority }}"
    with pytest.raises(ValueError, match="must be present as properties"):
        WorkPoolCreate(name="terrapipe-kubernetes", type="kubernetes", base_job_template=undeclared)


def test_job_variables_match_the_template_schema(document, template):
    import jsonschema

    schema = template["variables"]
    for deployment in document["deployments"]:
        if deployment["work_pool"]["name"] == "terrapipe-kubernetes":
            jsonschema.validate(deployment["work_pool"].get("job_variables", {}), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"gpu_count": "two"}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"gpu_count": 2}, schema)  # Kubernetes env values are strings
    assert schema["properties"]["image"]["default"] == "terrapipe:latest"


def test_rendered_job_requests_the_gpus_and_runs_torchrun_on_them(document, template):
    from prefect.utilities.templating import apply_values

    defaults = {name: prop["default"] for name, prop in template["variables"]["properties"].items() if "default" in prop}
    gpu = next(d for d in document["deployments"] if d["name"] == "gpu")
    values = {**defaults, **gpu["work_pool"]["job_variables"]}
    job = apply_values(template["job_configuration"], values)
    pod = job["job_manifest"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert {"name": "TERRAPIPE_NPROC_PER_NODE", "value": "4"} in container["env"]
    assert all(isinstance(e["value"], str) for e in container["env"])
    assert container["image"] == "terrapipe:latest"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert pod["volumes"][0]["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}


@pytest.mark.parametrize("env, expected", [
    ({}, None),
    ({"TERRAPIPE_NPROC_PER_NODE": "1"}, None),
    ({"TERRAPIPE_NPROC_PER_NODE": "4", "LOCAL_RANK": "0"}, None),   # already a rank: never nested
    ({"TERRAPIPE_NPROC_PER_NODE": "4"}, ["--nproc_per_node=4", "--standalone"]),
    ({"TERRAPIPE_NPROC_PER_NODE": "8", "TERRAPIPE_NNODES": "2", "TERRAPIPE_MASTER_ADDR": "train-0.train",
      "JOB_COMPLETION_INDEX": "1"},
     ["--nproc_per_node=8", "--nnodes=2", "--node_rank=1", "--master_addr=train-0.train", "--master_port=29500"]),
])
def test_torchrun_command(env, expected):
    import sys

    from terrapipe.orchestration.torchrun import torchrun_command

    command = torchrun_command("stages/pretrain.py", ["KEY"], env)
    assert command == (None if expected is None else
                       [sys.executable, "-m", "torch.distributed.run", *expected, "stages/pretrain.py", "KEY"])


@pytest.mark.parametrize("env, message", [
    ({"TERRAPIPE_NPROC_PER_NODE": "two"}, "TERRAPIPE_NPROC_PER_NODE='two'"),
    ({"TERRAPIPE_NPROC_PER_NODE": "2", "TERRAPIPE_NNODES": "2"}, "TERRAPIPE_MASTER_ADDR"),
    ({"TERRAPIPE_NNODES": "2", "TERRAPIPE_MASTER_ADDR": "h", "TERRAPIPE_NODE_RANK": "2"}, "node rank 2"),
])
def test_torchrun_settings_are_checked(env, message):
    from terrapipe.errors import ConfigError
    from terrapipe.orchestration.torchrun import torchrun_command

    with pytest.raises(ConfigError, match=message):
        torchrun_command("stages/pretrain.py", [], env)


def test_a_stage_reexecutes_itself_as_two_torchrun_ranks(tmp_path):
    """What stages/pretrain.py does first: with TERRAPIPE_NPROC_PER_NODE=2 the same command runs as 2 ranks."""
    import os
    import subprocess
    import sys

    script = tmp_path / "stage.py"
    script.write_text(f"import os, sys\nsys.path.insert(0, {str(REPO / 'src')!r})\n"
                      "from terrapipe.orchestration.torchrun import reexec_under_torchrun\n"
                      "reexec_under_torchrun(__file__)\n"
                      "os.write(1, f\"rank {os.environ['RANK']} of {os.environ['WORLD_SIZE']}: {sys.argv[1:]}\\n\".encode())\n")
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "RANK", "WORLD_SIZE")}
    result = subprocess.run([sys.executable, str(script), "era5_reg_mean"], env={**env, "TERRAPIPE_NPROC_PER_NODE": "2",
                            "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    ranks = sorted(line for line in result.stdout.splitlines() if line)   # one write per rank: lines never interleave
    assert ranks == ["rank 0 of 2: ['era5_reg_mean']", "rank 1 of 2: ['era5_reg_mean']"]
    assert "running under torchrun" in result.stderr
