"""CPU kernels that give the same bytes on any x86-64 machine, not only run to run on one.

PyTorch picks its vectorised kernels (ATen), MKL its GEMMs and oneDNN its primitives by the CPU they
start on: an AVX-512 machine and an AVX2 machine sum in different orders, so one seed trained the same
model to different checkpoints on two hosts of this project (dvc.lock changed after a fresh clone).
ATen and oneDNN are pinned to their AVX2 code paths, which every x86-64 CPU since 2013-2015 has.

MKL is pinned to its COMPATIBLE branch (SSE2, without the approximate rcpps/rsqrtps), the one branch
it honours on every vendor's CPU. Its AVX2 branch is Intel-only: on an AMD CPU, MKL_CBWR=AVX2 silently
falls back to AUTO (MKL_VERBOSE prints "CNR:AUTO"; oneMKL's guide, "Getting Started with Conditional
Numerical Reproducibility"), and an AMD EPYC host then trained every checkpoint of `dvc repro` to other
bytes than the Intel hosts had. The cost here: pretraining 35 -> 62 s on 2 cores.

Each library reads its variable at its first kernel call, so ``pin_cpu_kernels`` must run before any
tensor work (``terrapipe.stage.run_stage`` calls it first). A value already in the environment wins:
``ATEN_CPU_CAPABILITY=avx512 MKL_CBWR=AUTO`` buys speed and gives up cross-machine bytes.
"""
from __future__ import annotations

import os

PORTABLE_CPU_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",   # PyTorch's own kernels (reductions, elementwise, softmax, ...)
    "MKL_CBWR": "COMPATIBLE",        # MKL conditional numerical reproducibility: the branch every vendor runs
    "ONEDNN_MAX_CPU_ISA": "AVX2",    # oneDNN (convolutions)
}


def pin_cpu_kernels(environ: dict | None = None) -> dict[str, str]:
    """Set each of ``PORTABLE_CPU_ENV`` in ``environ`` (os.environ) unless it is set; returns what is in force."""
    environ = os.environ if environ is None else environ
    for name, value in PORTABLE_CPU_ENV.items():
        environ.setdefault(name, value)
    return {name: environ[name] for name in PORTABLE_CPU_ENV}
