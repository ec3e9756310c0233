"""DVC stage validate: Great Expectations suites over every processed data set -> data/quality/report.json.

Training and evaluation stages depend on the report; GX Data Docs go to data/quality/docs/ (index.html).
A broken contract exits 2, names what broke and keeps the old report.
"""
import _interpreter  # noqa: F401,I001 - first: re-runs this script with the project's Python if needed
from terrapipe import paths
from terrapipe.stage import run_stage


def main(args) -> None:
    from terrapipe.atomic import write_json
    from terrapipe.data.validation import validate_all
    from terrapipe.study import load_study

    study = load_study(args.inputs, args.params_obj.study.sites_per_aoi)
    write_json(paths.VALIDATION_REPORT, validate_all(args.params_obj, study, paths.DATA_DOCS))


if __name__ == "__main__":
    run_stage(main, __doc__)
