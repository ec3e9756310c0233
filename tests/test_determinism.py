"""The sample generators and the torch stages write the same bytes on every CPU.

DVC hashes the fetch stages' outputs, so a generator whose bytes depend on the machine makes
``dvc repro`` / ``dvc status`` disagree between machines. Two CPU-dependent code paths are forced
here, in fresh processes running the four fetch stages with SMALL_PARAMS:

* OpenBLAS kernels (OPENBLAS_CORETYPE=Haswell, an FMA kernel, against Prescott, SSE3): a generator
  that calls BLAS (``@``, ``np.dot``) sums in a kernel-dependent order; generators use
  ``terrapipe.sources.streams.matmul``.
* numpy's CPU-dispatched SIMD loops (NPY_DISABLE_CPU_FEATURES switches off every dispatch target this
  CPU has, e.g. AVX512's float64 exp/log): generators use the elementary functions of
  ``terrapipe.sources.streams`` (exp, log, cos, sin, ...) instead of np.exp & co.
"""
from __future__ import annotations

import hashlib
import re

import pytest
import yaml
from conftest import SMALL_PARAMS, run_stage

FETCH_STAGES = ("fetch_era5", "fetch_sentinel", "fetch_alphaearth", "fetch_deepearth")


def _dispatch_targets() -> list[str]:
    """numpy's SIMD dispatch targets above the baseline that this CPU has (what can be disabled)."""
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    return [target for target in __cpu_dispatch__ if __cpu_features__.get(target)]


def generate(root, env: dict) -> dict[str, str]:
    """Run every fetch stage in a fresh working directory under ``env``; md5 of every output file."""
    from terrapipe.study import write_default_inputs

    root.mkdir()
    write_default_inputs(root / "data" / "inputs")
    (root / "params.yaml").write_text(yaml.safe_dump(SMALL_PARAMS))
    for stage in FETCH_STAGES:
        run_stage(stage, cwd=root, env=env)
    raw = root / "data" / "raw"
    hashes = {p.relative_to(raw).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
              for p in sorted(raw.rglob("*")) if p.is_file()}
    assert hashes, "the fetch stages wrote nothing"
    return hashes


def assert_same_bytes(reference: tuple[str, dict], other: tuple[str, dict]) -> None:
    (ref_name, ref), (name, hashes) = reference, other
    print(f"\n{len(ref)} files, {ref_name} against {name}:")
    for path in sorted(set(ref) | set(hashes)):
        a, b = ref.get(path, "-" * 32), hashes.get(path, "-" * 32)
        print(f"  {'  ' if a == b else '!='} {a} {b} {path}")
    differ = sorted(p for p in set(ref) | set(hashes) if ref.get(p) != hashes.get(p))
    assert not differ, (f"{len(differ)} of {len(ref)} files differ between {ref_name} and {name} "
                        f"(the generator's bytes depend on the CPU): {differ[:10]}")


@pytest.fixture(scope="module")
def haswell(tmp_path_factory):
    return "OPENBLAS_CORETYPE=Haswell", generate(tmp_path_factory.mktemp("det") / "haswell", {"OPENBLAS_CORETYPE": "Haswell"})


def test_same_bytes_with_any_blas_kernel(haswell, tmp_path):
    """A generator that used ``@`` / ``np.dot`` (OpenBLAS's kernel picks the summation order) fails here."""
    assert_same_bytes(haswell, ("OPENBLAS_CORETYPE=Prescott",
                                generate(tmp_path / "prescott", {"OPENBLAS_CORETYPE": "Prescott"})))


def test_same_bytes_without_simd_dispatch(haswell, tmp_path):
    """np.exp / np.log / np.log10 / x ** y take AVX512 loops where the CPU has them: generators must not use them."""
    targets = _dispatch_targets()
    if not targets:
        pytest.skip("this CPU has no numpy SIMD dispatch target above the baseline to disable")
    disabled = " ".join(targets)
    assert_same_bytes(haswell, (f"NPY_DISABLE_CPU_FEATURES='{disabled}'", generate(
        tmp_path / "no-simd", {"OPENBLAS_CORETYPE": "Haswell", "NPY_DISABLE_CPU_FEATURES": disabled})))


def test_deterministic_elementary_functions_match_numpy():
    """streams' exp, log, log10, exp10, cos, sin, lognormal are numpy's to about an ULP (and handle the edges)."""
    import numpy as np

    from terrapipe.sources import streams

    r = np.random.default_rng(0)
    x = np.concatenate([r.uniform(-30, 30, 20_000), r.uniform(-745, 709, 2_000), r.uniform(-1e-3, 1e-3, 200)])
    pos = np.concatenate([r.uniform(1e-3, 1e3, 20_000), np.ldexp(r.uniform(0.5, 1, 2_000), r.integers(-1070, 1020, 2_000))])
    angles = np.concatenate([r.uniform(-7, 7, 20_000), r.uniform(-2e5, 2e5, 20_000)])
    with np.errstate(under="ignore"):
        normal = np.abs(np.exp(x)) > 1e-300
        np.testing.assert_allclose(streams.exp(x)[normal], np.exp(x)[normal], rtol=5e-16, atol=0)
    np.testing.assert_allclose(streams.log(pos), np.log(pos), rtol=5e-16, atol=0)
    np.testing.assert_allclose(streams.log10(pos), np.log10(pos), rtol=1e-15, atol=0)
    np.testing.assert_allclose(streams.exp10(x[:20_000] / 10), 10 ** (x[:20_000] / 10), rtol=3e-15, atol=0)
    np.testing.assert_allclose(streams.cos(angles), np.cos(angles), rtol=0, atol=4e-16)
    np.testing.assert_allclose(streams.sin(angles), np.sin(angles), rtol=0, atol=4e-16)
    edges = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 800.0, -800.0, 5e-324])
    with np.errstate(all="ignore"):
        for name in ("exp", "log", "cos", "sin"):
            np.testing.assert_array_equal(getattr(streams, name)(edges), getattr(np, name)(edges), err_msg=name)
    assert streams.exp(0.0) == 1.0 and streams.log(1.0) == 0.0 and streams.cos(0.0) == 1.0 and streams.sin(0.0) == 0.0
    a, b = np.random.default_rng(1), np.random.default_rng(1)
    np.testing.assert_allclose(streams.lognormal(a, 0.0, 0.2, 1000), b.lognormal(0.0, 0.2, 1000), rtol=5e-16)
    assert a.random() == b.random(), "lognormal must draw exactly what Generator.lognormal draws"


TRAIN_A_FEW_STEPS = """
import hashlib, torch
from terrapipe.stage import run_stage

def main(args):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(12, 64, 3, padding=1)
    mlp = torch.nn.Sequential(torch.nn.LayerNorm(64), torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 64))
    attention = torch.nn.MultiheadAttention(64, 4, batch_first=True)
    parameters = [*conv.parameters(), *mlp.parameters(), *attention.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=1e-3)
    series = torch.randn(16, 12, 48)                                  # (B, C, T)
    for _ in range(4):
        tokens = mlp(conv(series).transpose(1, 2))                    # (B, T, 64)
        tokens, _ = attention(tokens, tokens, tokens)
        loss = torch.logsumexp(tokens, -1).mean() + tokens.std()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    digest = hashlib.md5(b"".join(p.detach().numpy().tobytes() for p in parameters)).hexdigest()
    print(digest, torch.backends.cpu.get_cpu_capability())

run_stage(main, "train a few steps", argv=[])
"""


def stage_process(tmp_path, script: str, env: dict) -> str:
    """The stdout of ``script`` (a stage) run in a fresh process under ``env`` without the pinning's variables."""
    import os
    import subprocess
    import sys

    from terrapipe.portable import PORTABLE_CPU_ENV

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(SMALL_PARAMS))
    clean = {k: v for k, v in os.environ.items() if k not in {*PORTABLE_CPU_ENV, "MKL_ENABLE_INSTRUCTIONS"}}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env={**clean, **env},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def train_digest(tmp_path, env: dict) -> tuple[str, str]:
    """(md5 of the parameters after a few AdamW steps, ATen's kernel level) from a stage process under ``env``."""
    digest, capability = stage_process(tmp_path, TRAIN_A_FEW_STEPS, env).split()
    return digest, capability


ONE_GEMM = """
import torch
from terrapipe.stage import run_stage

run_stage(lambda args: torch.ones(64, 64) @ torch.ones(64, 64), "one GEMM", argv=[])
"""


def test_stages_run_the_mkl_branch_that_every_vendor_honours(tmp_path):
    """MKL_VERBOSE names the branch a GEMM ran: COMPATIBLE, the one MKL keeps on AMD CPUs too. Its AVX2
    branch is Intel-only: on an AMD EPYC host MKL_CBWR=AVX2 ran "CNR:AUTO" and every checkpoint of
    `dvc repro` came out with other bytes than on the Intel hosts."""
    verbose = stage_process(tmp_path, ONE_GEMM, {"MKL_VERBOSE": "1"})
    branches = set(re.findall(r"CNR:(\S+)", verbose))
    assert branches == {"COMPATIBLE"}, verbose[-2000:]


AVX2_MKL = {"MKL_ENABLE_INSTRUCTIONS": "AVX2"}  # the GEMM branch MKL picks on an AVX2-only machine


def test_stage_training_bytes_do_not_depend_on_the_cpu(tmp_path):
    """A stage's torch training gives the same parameters under an AVX2-only MKL as under this CPU's own, and
    ATen runs its AVX2 kernels, not AVX-512 ones (terrapipe.portable)."""
    native, capability = train_digest(tmp_path, {})
    avx2_machine, _ = train_digest(tmp_path, AVX2_MKL)
    assert capability != "AVX512", "run_stage must pin ATen below AVX-512"
    assert native == avx2_machine, "MKL's GEMM branch depends on the CPU: MKL_CBWR is not in force in stages"


def test_without_pinning_this_cpu_would_change_the_bytes(tmp_path):
    """What the pinning prevents: this CPU's own kernels (ATen's best, MKL's AUTO branch, oneDNN's best) give
    other bytes than the portable ones, so two CPUs with different best kernels would give two checkpoints.
    (MKL's AUTO branch uses fused multiply-adds where the CPU has them; COMPATIBLE's SSE2 has none.)"""
    native = {"ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AUTO", "ONEDNN_MAX_CPU_ISA": "ALL"}
    assert train_digest(tmp_path, native)[0] != train_digest(tmp_path, {})[0]


def test_pinning_keeps_what_the_user_set():
    from terrapipe.portable import PORTABLE_CPU_ENV, pin_cpu_kernels

    environ = {"MKL_CBWR": "AUTO"}
    assert pin_cpu_kernels(environ) == {**PORTABLE_CPU_ENV, "MKL_CBWR": "AUTO"} == environ
