"""The `terrapipe` command: a front door for people (DVC and Prefect remain the engines).

Only argparse and the standard library are imported at start-up, so `terrapipe --help` is instant;
each subcommand imports what it needs.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

from terrapipe.paths import CATALOG, INPUTS, STAGES


def _cmd_run(args) -> int:
    """Run stages through DVC so that what ran is recorded in dvc.lock and the cache."""
    command = [sys.executable, "-m", "dvc", "repro"]
    if args.single:
        command.append("--single-item")
    if args.force:
        command.append("--force")
    command += args.stages
    print("+", " ".join(command[2:]), file=sys.stderr)
    return subprocess.call(command)


def _cmd_sources(args) -> int:
    from terrapipe.config import load_params
    from terrapipe.sources import BACKENDS

    params = load_params(args.params)
    for dataset, backends in BACKENDS.items():
        chosen = getattr(params.sources, dataset).source
        print(f"{dataset}  (stage fetch_{dataset}, param sources.{dataset}.source)")
        for name, (_, description) in backends.items():
            marker = "*" if name == chosen else " "
            print(f"  {marker} {name:<12} {description}")
    print("\n* = selected in", args.params)
    return 0


def _cmd_params(args) -> int:
    from terrapipe.config import load_params

    params = load_params(args.params).model_dump(mode="json")
    for part in filter(None, (args.key or "").split(".")):
        if not isinstance(params, dict) or part not in params:
            print(f"terrapipe: error: no parameter {args.key!r}", file=sys.stderr)
            return 2
        params = params[part]
    if args.format == "json":
        print(json.dumps(params, indent=2))
    elif not isinstance(params, (dict, list)):
        print(params)
    else:
        import yaml
        print(yaml.safe_dump(params, sort_keys=False).rstrip())
    return 0


def _cmd_inputs(args) -> int:
    from terrapipe.study import write_default_inputs

    write_default_inputs(args.dir, sites_per_aoi=args.sites_per_aoi)
    print(f"wrote the default study definition to {args.dir}; track it with `dvc add` / `dvc commit data.dvc`")
    return 0


def _pretrain(args):
    from terrapipe.train.experiments import load_pretrain
    return load_pretrain(args.params)


def _known(pretrain, *keys, params="params.yaml") -> None:
    from terrapipe.errors import ConfigError
    for key in keys:
        if key not in pretrain.experiments:
            raise ConfigError(f"unknown experiment {key!r}; accepted ({params} pretrain.experiments): "
                              + ", ".join(pretrain.experiments))


def _cmd_experiments_list(args) -> int:
    pretrain = _pretrain(args)
    width = max(map(len, pretrain.experiments), default=0)
    for key, entry in pretrain.experiments.items():
        marker = "*" if key in pretrain.run else " "
        print(f"{marker} {key:<{width}}  extends {entry.get('extends') or 'base'}: {entry.get('about', '')}")
    print("\n* = trained by `dvc repro` (pretrain.run); any key: terrapipe experiments run KEY")
    return 0


def _cmd_experiments_show(args) -> int:
    from terrapipe.train.experiments import resolved_document

    pretrain = _pretrain(args)
    _known(pretrain, args.key, params=args.params)
    document = resolved_document(pretrain, args.key)
    if args.format == "json":
        print(json.dumps(document, indent=2))
    else:
        import yaml
        print(yaml.safe_dump(document, sort_keys=False).rstrip())
    return 0


def _cmd_experiments_diff(args) -> int:
    from terrapipe.train.experiments import diff

    pretrain = _pretrain(args)
    _known(pretrain, args.a, args.b, params=args.params)
    changes = diff(pretrain, args.a, args.b)
    if args.format == "json":
        print(json.dumps({k: list(v) for k, v in changes.items()}, indent=2))
    elif not changes:
        print("no differences")
    else:
        for key, (a, b) in changes.items():
            print(f"{key}: {json.dumps(a)} -> {json.dumps(b)}")
    return 0


def _cmd_experiments_run(args) -> int:
    """Train one experiment as a tracked DVC experiment (params, metrics and plots in `dvc exp show`)."""
    import shlex

    from terrapipe.errors import ConfigError
    from terrapipe.train.experiments import lineage

    pretrain = _pretrain(args)
    _known(pretrain, args.key, params=args.params)
    command = [sys.executable, "-m", "dvc", "exp", "run", "-n", args.key, "-S", f"pretrain.run=[{args.key}]"]
    if args.steps is not None:
        if args.steps < 1:
            raise ConfigError(f"--steps must be at least 1, got {args.steps}")
        # the override goes to the base: an experiment (or an ancestor) that sets train.steps would win silently
        own = [k for k in lineage(pretrain, args.key) if "steps" in (pretrain.experiments[k].get("train") or {})]
        if own:
            raise ConfigError(f"--steps would be ignored: experiment {own[0]!r} sets train.steps itself; "
                              f"change it in {args.params} instead")
        command += ["-S", f"pretrain.base.train.steps={args.steps}"]
    print("+", shlex.join(command[2:]), file=sys.stderr)  # quoted: [..] is a glob pattern in a shell
    return subprocess.call(command)


def _print_frame(frame, fmt: str) -> None:
    if fmt == "json":
        print(frame.to_json(orient="records", date_format="iso", indent=2))
    elif fmt == "csv":
        print(frame.to_csv(index=False), end="")
    elif frame.empty:
        print("(no rows)")
    else:
        print(frame.to_string(index=False, max_colwidth=80))


def _cmd_catalog_refresh(args) -> int:
    import logging

    from terrapipe.catalog import query, refresh
    from terrapipe.catalog.schema import TABLES

    logging.basicConfig(level=logging.INFO, format="%(message)s")  # what was missing, and what was loaded
    refresh(args.db, root=args.root)
    counts = " UNION ALL ".join(f"SELECT '{table}' AS \"table\", count(*) AS \"rows\" FROM {table}" for table in TABLES)
    _print_frame(query(args.db, counts), "table")
    return 0


def _cmd_catalog_query(args) -> int:
    from terrapipe.catalog import query

    _print_frame(query(args.db, args.sql), args.format)
    return 0


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _cmd_catalog_runs(args) -> int:
    from terrapipe.catalog import query

    where = [f"{column} = {_sql_text(value)}" for column, value in (("experiment", args.experiment), ("kind", args.kind))
             if value is not None]
    sql = ("SELECT recorded_at, run_id, kind, experiment, left(code_version, 12) AS code, left(data_version, 12) AS data, "
           f"flow_run_id FROM runs {'WHERE ' + ' AND '.join(where) if where else ''} "
           f"ORDER BY recorded_at DESC LIMIT {int(args.limit)}")
    _print_frame(query(args.db, sql), args.format)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="terrapipe",
        description="Reproducible Earth-observation foundation-model pipelines (DVC + Prefect).",
        epilog="The pipeline itself: `dvc repro` (all stages), `dvc status`, `dvc dag`.")
    parser.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run pipeline stages through DVC (with their upstream stages)")
    run.add_argument("stages", nargs="*", metavar="STAGE", help=f"stage names (default: all): {', '.join(STAGES)}")
    run.add_argument("-s", "--single", action="store_true", help="run only the named stages, not their upstream")
    run.add_argument("-f", "--force", action="store_true", help="run even if DVC sees nothing changed")
    run.set_defaults(func=_cmd_run)

    sources = sub.add_parser("sources", help="list the data sources of each fetch stage and which is selected")
    sources.set_defaults(func=_cmd_sources)

    params = sub.add_parser("params", help="show the validated, resolved parameters")
    params.add_argument("key", nargs="?", help="dotted key to show, e.g. split.deepearth")
    params.add_argument("--format", choices=("yaml", "json"), default="yaml")
    params.set_defaults(func=_cmd_params)

    inputs = sub.add_parser("inputs", help="write the default study definition (AOIs, sites, species)")
    inputs.add_argument("--dir", default=str(INPUTS))
    inputs.add_argument("--sites-per-aoi", type=int, default=50)
    inputs.set_defaults(func=_cmd_inputs)

    experiments = sub.add_parser("experiments", help="the pretraining experiments of params.yaml (seeds 000, 001)")
    exp_sub = experiments.add_subparsers(dest="experiments_command", required=True, metavar="SUBCOMMAND")
    exp_sub.add_parser("list", help="every experiment, what it extends and tests").set_defaults(
        func=_cmd_experiments_list)
    show = exp_sub.add_parser("show", help="the fully resolved config of one experiment (nothing is trained)")
    show.add_argument("key")
    show.add_argument("--format", choices=("yaml", "json"), default="yaml")
    show.set_defaults(func=_cmd_experiments_show)
    compare = exp_sub.add_parser("diff", help="the resolved keys that differ between two experiments")
    compare.add_argument("a")
    compare.add_argument("b")
    compare.add_argument("--format", choices=("text", "json"), default="text")
    compare.set_defaults(func=_cmd_experiments_diff)
    train = exp_sub.add_parser("run", help="train one experiment as a tracked DVC experiment")
    train.add_argument("key")
    train.add_argument("--steps", type=int, help="override pretrain.base.train.steps")
    train.set_defaults(func=_cmd_experiments_run)

    catalog = sub.add_parser("catalog", help="the DuckDB catalog: sites, samples, splits, data versions, runs (SQL)")
    cat_sub = catalog.add_subparsers(dest="catalog_command", required=True, metavar="SUBCOMMAND")
    db = argparse.ArgumentParser(add_help=False)
    db.add_argument("--db", default=str(CATALOG), help=f"catalog file (default: {CATALOG})")
    cat_refresh = cat_sub.add_parser("refresh", parents=[db],
                                     help="reload sites, samples, splits and the data version from the files")
    cat_refresh.add_argument("--root", default=".", help="repository root to read (default: .)")
    cat_refresh.set_defaults(func=_cmd_catalog_refresh)
    cat_query = cat_sub.add_parser("query", parents=[db], help="run one read-only SQL statement and print the result")
    cat_query.add_argument("sql", metavar="SQL")
    cat_query.add_argument("--format", choices=("table", "json", "csv"), default="table")
    cat_query.set_defaults(func=_cmd_catalog_query)
    cat_runs = cat_sub.add_parser("runs", parents=[db], help="the recorded runs, newest first")
    cat_runs.add_argument("--experiment", help="only this experiment key")
    cat_runs.add_argument("--kind", help="only this kind (pretrain, evaluate, ...)")
    cat_runs.add_argument("--limit", type=int, default=20)
    cat_runs.add_argument("--format", choices=("table", "json", "csv"), default="table")
    cat_runs.set_defaults(func=_cmd_catalog_runs)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from terrapipe.errors import TerrapipeError

    try:
        return args.func(args)
    except TerrapipeError as exc:
        print(f"terrapipe: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
