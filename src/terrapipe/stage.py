"""The shared entry point of the DVC stage scripts in stages/.

A stage script is a few lines: it names its outputs and calls library functions. ``run_stage``
gives each one the same command line (--params, --inputs), loads the typed params before any
work, and turns a TerrapipeError into a one-paragraph message and exit status 2 (a traceback
only for real bugs). Outputs are written through terrapipe.atomic, so a failure leaves the
previous outputs in place.
"""
from __future__ import annotations

import argparse
import errno
import logging
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from terrapipe import paths
from terrapipe.errors import TerrapipeError

log = logging.getLogger("terrapipe")


def stage_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="params.yaml", type=Path, help="parameters file (default: params.yaml)")
    parser.add_argument("--inputs", default=paths.INPUTS, type=Path, help=f"study definition folder (default: {paths.INPUTS})")
    return parser


def run_stage(main: Callable[[argparse.Namespace], None], description: str,
              extra_args: Callable[[argparse.ArgumentParser], None] | None = None, argv=None) -> None:
    """Parse the stage's arguments, load params into ``args.params_obj`` and run ``main(args)``.

    CPU kernels are pinned first (``terrapipe.portable``): a stage's outputs are then the same bytes on any
    x86-64 machine."""
    from terrapipe.config import load_params
    from terrapipe.portable import pin_cpu_kernels
    from terrapipe.sources.transfer import RedactingFilter, redact

    pin_cpu_kernels()

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
    except OSError as exc:
        message = storage_error(exc)
        if message is None:
            raise  # a real bug: keep the traceback
        print(f"terrapipe: error: {message}", file=sys.stderr)
        sys.exit(2)
    log.info("%s done in %.1f s", Path(sys.argv[0]).stem if argv is None else description, time.perf_counter() - started)


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_NOT_ALLOWED = (errno.EACCES, errno.EPERM, errno.EROFS)


def _free_gb(path: str) -> float:
    folder = Path(path).absolute()
    while not folder.exists():
        folder = folder.parent
    return shutil.disk_usage(folder).free / 1e9


def storage_error(exc: OSError) -> str | None:
    """The one-paragraph message for a full disk or a refused write, else None.

    numpy reports a short write of an array without an errno ("... requested and ... written"): that is
    a full disk too.
    """
    where = exc.filename or "an output file"
    full = exc.errno in _DISK_FULL or (exc.errno is None and "requested and" in str(exc) and "written" in str(exc))
    if full:
        return (f"{where}: the disk is full ({exc.strerror or exc}; {_free_gb(where):.1f} GB free now). Free space there, or move "
                "the data folders and the DVC cache to a larger disk (`dvc cache dir PATH`), then re-run; the "
                "previous outputs were left in place")
    if exc.errno in _NOT_ALLOWED:
        return (f"{where}: writing was refused ({exc.strerror}). Make the folder writable by this user (or run from a "
                "writable checkout), then re-run; the previous outputs were left in place")
    return None


def run_fetch_stage(dataset: str, description: str, argv=None) -> None:
    """A fetch stage: the configured source of ``dataset`` fills data/raw/<dataset>/ atomically."""

    def main(args) -> None:
        from terrapipe.atomic import atomic_path
        from terrapipe.sources import fetch
        from terrapipe.study import load_study

        study = load_study(args.inputs, args.params_obj.study.sites_per_aoi)
        with atomic_path(paths.raw(dataset), directory=True) as tmp:
            fetch(dataset, args.params_obj, study, tmp)

    run_stage(main, description, argv=argv)
