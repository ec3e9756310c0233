"""dvc.yaml agrees with the code: stage names and outputs from terrapipe.paths, deps cover every import."""
import re

import pytest

from terrapipe import paths
from terrapipe.cli import build_parser
from terrapipe.testing.pipeline_contract import REPO, imported_files, missing_deps, pipeline_stages


@pytest.fixture(scope="module")
def stages():
    return {stage.addressing: stage for stage in pipeline_stages()}


# Training families whose stage writes several files into its folder (DVC outs, metrics and plots).
FAMILY_DIRS = {"earth4d_alphaearth": paths.EARTH4D, "deepearth_classify": paths.DEEPEARTH}


def expected_out(name: str) -> str:
    """Where terrapipe.paths says a stage writes."""
    kind, _, item = name.replace("@", "_").partition("_")
    if name == "embedding_store":
        return str(paths.EMBEDDING_STORE)
    if name.startswith("fetch_tasks@"):
        return str(paths.task_dir(name.partition("@")[2]))
    if name == "check_params":
        return str(paths.PARAMS_CHECK)
    if name == "validate":
        return str(paths.VALIDATION_REPORT)
    if name == "world_mosaic":
        return str(paths.FIGURES)
    if name == "report":
        return str(paths.REPORTS)
    if kind == "pretrain":
        return str(paths.pretrain_dir(name.partition("@")[2]) / "checkpoint.pt")
    return str({"fetch": paths.raw, "normalize": paths.processed, "split": paths.split_dir}[kind](item))


def test_dvc_yaml_declares_the_stages_of_terrapipe_paths_in_order(stages):
    """pretrain and evaluate (over params pretrain.run) and fetch_tasks (over paths.TASKS) are foreach stages:
    one name in paths.STAGES, NAME@ITEM in DVC."""
    names = list(dict.fromkeys(n.partition("@")[0] if n.startswith(("pretrain@", "evaluate@", "fetch_tasks@"))
                               else n for n in stages))
    assert names == list(paths.STAGES)
    assert [n.partition("@")[2] for n in stages if n.startswith("fetch_tasks@")] == list(paths.TASKS)
    for name, stage in stages.items():
        outs = [out.def_path for out in stage.outs]
        if name in FAMILY_DIRS:  # every out, metric and plot inside the family's folder; metrics.json among them
            assert all(o.startswith(f"{FAMILY_DIRS[name]}/") for o in outs), name
            assert f"{FAMILY_DIRS[name]}/metrics.json" in outs and any(o.endswith(".csv") for o in outs), name
            continue
        if name.startswith("pretrain@"):  # + metrics.json and curves.csv (DVC metrics and plots) beside it
            outs = [o for o in outs if o.endswith("checkpoint.pt")]
        if name.startswith("evaluate@"):  # metrics.json and one confusion plot per task, in evaluate_dir
            where = paths.evaluate_dir(name.partition("@")[2])
            assert outs == [str(where / "metrics.json"), *(str(where / "confusion" / f"{t}.csv") for t in paths.TASKS)]
            assert str(paths.pretrain_dir(name.partition("@")[2]) / "checkpoint.pt") in {d.def_path for d in stage.deps}
            continue
        assert outs == [expected_out(name)], name


def test_every_stage_lists_every_terrapipe_file_it_imports():
    missing = missing_deps()
    assert not missing, ("dvc.yaml misses code deps (run `python -m terrapipe.testing.pipeline_contract --write`): "
                         f"{missing}")


def test_the_import_walk_sees_lazy_imports_and_sibling_helpers():
    files = {str(f.relative_to(REPO)) for f in imported_files(REPO / "stages" / "normalize_sentinel.py")}
    assert {"stages/_interpreter.py", "src/terrapipe/data/imagery.py", "src/terrapipe/grid.py",
            "src/terrapipe/data/arrays.py", "src/terrapipe/study.py"} <= files


def test_training_waits_for_the_quality_gate(stages):
    training = [s for n, s in stages.items() if n.startswith("pretrain@") or n in FAMILY_DIRS]
    assert len(training) > len(FAMILY_DIRS)
    for stage in training:
        assert str(paths.VALIDATION_REPORT) in {d.def_path for d in stage.deps}


def test_training_data_is_validated_before_use(stages):
    """The validate stage reads every processed data set (the next stages depend on its report)."""
    validated = {d.def_path for d in stages["validate"].deps}
    for dataset in paths.DATASETS:
        assert str(paths.processed(dataset)) in validated
    for dataset in paths.SPLIT_DATASETS:
        assert str(paths.split_dir(dataset)) in validated


def _hints():
    pattern = re.compile(r"`(dvc repro|terrapipe) ([^`]*)`")
    for path in sorted((REPO / "src" / "terrapipe").rglob("*.py")):
        for match in pattern.finditer(path.read_text()):
            yield path.relative_to(REPO), match.group(1), match.group(2).split()


def test_fix_hints_name_stages_and_commands_that_exist():
    commands = set(build_parser()._subparsers._group_actions[0].choices)
    found = 0
    for path, tool, words in _hints():
        names = [w for w in words if not w.startswith(("-", "{", "<"))]  # f-string fields and <placeholders> aside
        if tool == "dvc repro":
            unknown = [n for n in names if n not in paths.STAGES and n.partition("@")[0] not in paths.STAGES]
            assert not unknown, f"{path}: `dvc repro {' '.join(words)}` names no stage"
        elif names:
            assert names[0] in commands, f"{path}: `terrapipe {' '.join(words)}` is no command"
        found += 1
    assert found > 10
