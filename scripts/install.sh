#!/usr/bin/env bash
# The one install path for terrapipe: used by `make`, CI and the Dockerfile.
#   scripts/install.sh [VENV_DIR]   (default .venv; TORCH_INDEX_URL picks a torch wheel index if set)
# torch 2.13.0 goes in first and alone: it is the local CPU build, and anything that pulls a newer
# torch would fetch gigabytes of CUDA packages. constraints.txt pins the stack to versions that are
# known to work together (fastapi<0.151 keeps Prefect's server alive).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-.venv}
python=${PYTHON:-python3}
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
python="$venv/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$python" -m pip install --quiet --upgrade "pip>=24" wheel
"$python" -m pip install --quiet ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==2.13.0"
"$python" -m pip install --quiet -c "$here/constraints.txt" -e "$here[dev]"
"$python" -c "import torch, terrapipe; print('terrapipe installed with torch', torch.__version__)"
