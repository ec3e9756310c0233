"""Makes a stage script run under the project's Python, whichever `python` DVC found on PATH.

dvc.yaml says `python stages/<stage>.py`; started as `.venv/bin/dvc repro` (or `terrapipe run`) from a
shell without the venv activated, that `python` is the system one, which lacks terrapipe. Then this
re-executes the script with the interpreter of the active or the project's virtual environment.
"""
import os
import sys
from pathlib import Path

try:
    import terrapipe  # noqa: F401
except ModuleNotFoundError:
    root = Path(__file__).resolve().parent.parent
    for venv in filter(None, (os.environ.get("VIRTUAL_ENV"), os.environ.get("TERRAPIPE_VENV"), root / ".venv")):
        python = Path(venv) / "bin" / "python"
        if python.is_file() and Path(sys.prefix).resolve() != Path(venv).resolve():
            os.execv(python, [str(python), *sys.argv])
    sys.exit(f"terrapipe: error: {sys.executable} cannot import terrapipe and no project environment was found "
             f"at {root / '.venv'}. Run `make install` (or set TERRAPIPE_VENV to the environment's folder).")
