"""The `terrapipe` command: a front door for people (DVC and Prefect remain the engines).

Only argparse and the standard library are imported at start-up, so `terrapipe --help` is instant;
each subcommand imports what it needs.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

from terrapipe.paths import INPUTS, STAGES


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
