"""DVC stage check_params: the whole params.yaml validated whenever it changes -> data/quality/params.json.

Every stage validates params.yaml before it works, but only stages that re-run do so; this one depends on
the file itself, so a misspelt key in a section no stage tracks stops `dvc repro` too.
"""
import _interpreter  # noqa: F401,I001 - first: re-runs this script with the project's Python if needed
from terrapipe import paths
from terrapipe.stage import run_stage


def main(args) -> None:
    from terrapipe.atomic import write_json
    from terrapipe.config import check_params_file
    from terrapipe.data.tasks import tasks_params
    from terrapipe.evals.downstream import evaluate_params
    from terrapipe.train.alphaearth import earth4d_params
    from terrapipe.train.deepearth import deepearth_params
    from terrapipe.train.experiments import load_pretrain, resolved_document

    resolved = check_params_file(args.params)
    pretrain = load_pretrain(args.params)  # every experiment resolves, or the run stops here
    resolved["pretrain"]["resolved"] = {key: resolved_document(pretrain, key) for key in pretrain.experiments}
    # the sections the model code validates (unknown keys stop the run here, not when that stage runs)
    resolved["earth4d"] = earth4d_params(args.params_obj).model_dump(mode="json")
    resolved["deepearth"] = deepearth_params(args.params_obj).model_dump(mode="json")
    resolved["tasks"] = tasks_params(args.params_obj).model_dump(mode="json")
    resolved["evaluate"] = evaluate_params(args.params_obj).model_dump(mode="json")
    write_json(paths.PARAMS_CHECK, resolved)


if __name__ == "__main__":
    run_stage(main, __doc__)
