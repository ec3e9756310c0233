"""DVC stage validate_GROUP: Great Expectations suites over a group of processed data sets.

python stages/validate.py {imagery,points}: writes data/quality/GROUP/report.json (what training stages
depend on) and GX Data Docs to data/quality/docs/GROUP/; a broken contract exits 2 and keeps the old report.
"""
import _interpreter  # noqa: F401,I001 - first: re-runs this script with the project's Python if needed
from terrapipe import paths
from terrapipe.stage import run_stage


def main(args) -> None:
    from terrapipe.atomic import atomic_path, write_json
    from terrapipe.data.validation import validate_group
    from terrapipe.study import load_study

    study = load_study(args.inputs, args.params_obj.study.sites_per_aoi)
    docs = paths.DATA_DOCS / args.group
    report = validate_group(args.group, args.params_obj, study, docs)
    with atomic_path(paths.quality_dir(args.group), directory=True) as tmp:
        write_json(tmp / "report.json", report)


if __name__ == "__main__":
    run_stage(main, __doc__, extra_args=lambda parser: parser.add_argument(
        "group", choices=paths.VALIDATION_GROUPS, help="which group of data sets to validate"))
