"""The shared entry point of the DVC stage scripts in stages/.

A stage script is a few lines: it names its outputs and calls library functions. ``run_stage``
gives each one the same command line (--params, --inputs), loads the typed params before any
work, and turns a TerrapipeError into a one-paragraph message and exit status 2 (a traceback
only for real bugs). Outputs are written through terrapipe.atomic, so a failure leaves the
previous outputs in place.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

from terrapipe.errors import TerrapipeError

log = logging.getLogger("terrapipe")


def stage_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="params.yaml", type=Path, help="parameters file (default: params.yaml)")
    parser.add_argument("--inputs", default="data/inputs", type=Path, help="study definition folder (default: data/inputs)")
    return parser


def run_stage(main: Callable[[argparse.Namespace], None], description: str,
              extra_args: Callable[[argparse.ArgumentParser], None] | None = None, argv=None) -> None:
    """Parse the stage's arguments, load params into ``args.params_obj`` and run ``main(args)``."""
    from terrapipe.config import load_params
    from terrapipe.sources.transfer import RedactingFilter, redact

    parser = stage_parser(description)
    if extra_args:
        extra_args(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    for handler in logging.getLogger().handlers:  # no provider key or token reaches a log line
        handler.addFilter(RedactingFilter())
    started = time.perf_counter()
    try:
        args.params_obj = load_params(args.params)
        main(args)
    except TerrapipeError as exc:
        print(f"terrapipe: error: {redact(str(exc))}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("terrapipe: interrupted; previous outputs were left in place", file=sys.stderr)
        sys.exit(130)
    log.info("%s done in %.1f s", Path(sys.argv[0]).stem if argv is None else description, time.perf_counter() - started)


def run_fetch_stage(dataset: str, description: str, argv=None) -> None:
    """A fetch stage: the configured source of ``dataset`` fills data/raw/<dataset>/ atomically."""

    def main(args) -> None:
        from terrapipe.atomic import atomic_path
        from terrapipe.sources import fetch
        from terrapipe.study import load_study

        study = load_study(args.inputs, args.params_obj.study.sites_per_aoi)
        with atomic_path(Path("data/raw") / dataset, directory=True) as tmp:
            fetch(dataset, args.params_obj, study, tmp)

    run_stage(main, description, argv=argv)
