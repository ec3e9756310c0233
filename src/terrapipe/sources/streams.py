"""Named random streams and the BLAS-free arithmetic every sample-world generator uses.

A stream is keyed by the seed and names (a dataset, a site, a purpose), so datasets never share or
shift each other's draws and the order in which sites are generated does not matter. Generators
never call BLAS (``@``, ``np.dot``): OpenBLAS picks its kernel by CPU and different kernels sum in
different orders, so the same seed would give different bytes on different machines. For the same
reason they use this module's exp, log, log10, exp10, cos, sin and lognormal instead of numpy's (whose
float64 loops are picked by CPU: AVX512 or libm's FMA or SSE2 variant).
"""
from __future__ import annotations

import zlib

import numpy as np


def rng(seed: int, *names: str) -> np.random.Generator:
    """A stream keyed by ``seed`` and ``names``."""
    return np.random.default_rng([seed, *(zlib.crc32(str(n).encode()) for n in names)])


def unit_vectors(seed: int, stream: str, names, dim: int) -> np.ndarray:
    """One fixed random unit vector per name (float32 [len(names), dim]), independent of list order."""
    vectors = np.array([rng(seed, stream, str(n)).standard_normal(dim) for n in names]).reshape(-1, dim)
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for a [..., K] and b [K, M] in a fixed order of elementwise operations (no BLAS).

    One multiply-add per k in turn, so the result is the same bits on every CPU and BLAS build.
    """
    a, b = np.asarray(a), np.asarray(b)
    out = np.zeros(a.shape[:-1] + b.shape[1:], np.result_type(a, b))
    for k in range(a.shape[-1]):
        out += a[..., k, None] * b[k]
    return out


# -- Deterministic elementary functions ------------------------------------------------------------
# numpy's np.exp / np.log / np.log10 / np.power on float64 take an AVX512 code path where the CPU has it
# and glibc's libm elsewhere; np.cos / np.sin (and Generator.lognormal) call libm, whose FMA and SSE2
# variants differ too. Each path is within an ULP, but not the same ULP, so the bytes of a generated file
# depended on the CPU. These use only +, -, *, /, floor, round, frexp and ldexp (all exactly rounded, the
# same bits on every CPU) with fdlibm's range reductions and polynomials: within about 1 ULP of the true
# value (exp, log relative error < 2.3e-16, log10 < 3e-16, exp10 < 2e-15; sin, cos absolute < 2e-16 for
# |x| < 2e8, less accurate but still deterministic up to |x| = 2**52, NaN beyond).

_LN2_HI, _LN2_LO = 6.93147180369123816490e-01, 1.90821492927058770002e-10   # ln 2 = HI + LO, HI has 32 bits
_INV_LN2 = 1.44269504088896338700e+00
_EXP_P = (1.66666666666666019037e-01, -2.77777777770155933842e-03, 6.61375632143793436117e-05,
          -1.65339022054652515390e-06, 4.13813679705723846039e-08)
_LOG_LG = (6.666666666666735130e-01, 3.999999999940941908e-01, 2.857142874366239149e-01,
           2.222219843214978396e-01, 1.818357216161805012e-01, 1.531383769920937332e-01, 1.479819860511658591e-01)
_SQRT_HALF = 0.70710678118654752440
_LN10 = 2.30258509299404568402
_INV_LN10 = 0.43429448190325182765
_SIN_S = (-1.66666666666666324348e-01, 8.33333333332248946124e-03, -1.98412698298579493134e-04,
          2.75573137070700676789e-06, -2.50507602534068634195e-08, 1.58969099521155010221e-10)
_COS_C = (4.16666666666666019037e-02, -1.38888888888741095749e-03, 2.48015872894767294178e-05,
          -2.75573143513906633035e-07, 2.08757232129817482790e-09, -1.13596475577881948265e-11)
_INV_PIO2 = 6.36619772367581382433e-01


def _pio2_parts() -> tuple[float, ...]:
    """pi/2 as four doubles of 26 significant bits each (so n * part is exact for |n| < 2**27)."""
    from fractions import Fraction
    # pi/2 to 58 digits (ample for 104 bits)
    rest = Fraction("1.570796326794896619231321691639751442098584699687552910487")
    parts = []
    for _ in range(4):
        exponent = rest.numerator.bit_length() - rest.denominator.bit_length()
        if Fraction(2) ** exponent > rest:
            exponent -= 1                            # now 2**exponent <= rest < 2**(exponent + 1)
        scale = Fraction(2) ** (exponent - 25)
        part = Fraction(int(rest / scale)) * scale   # truncate to 26 bits
        parts.append(float(part))
        rest -= part
    return tuple(parts)


_PIO2 = _pio2_parts()


def _float_array(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def exp(x) -> np.ndarray:
    """``np.exp`` for float64, the same bits on every CPU (fdlibm e_exp: x = k ln2 + r, |r| <= ln2 / 2)."""
    x = _float_array(x)
    finite = np.isfinite(x)
    xs = np.where(finite, np.clip(x, -746.0, 710.0), 0.0)
    k = np.floor(xs * _INV_LN2 + 0.5)
    hi = xs - k * _LN2_HI            # exact: k has at most 11 bits and _LN2_HI 32
    lo = k * _LN2_LO
    r = hi - lo
    t = r * r
    p1, p2, p3, p4, p5 = _EXP_P
    c = r - t * (p1 + t * (p2 + t * (p3 + t * (p4 + t * p5))))
    y = 1.0 - ((lo - (r * c) / (2.0 - c)) - hi)
    ki = k.astype(np.int64)
    # scale by 2**k in two exact steps, so that results near the overflow and subnormal limits are right
    half = ki // 2
    with np.errstate(over="ignore"):
        out = np.ldexp(np.ldexp(y, half), ki - half)
    out = np.where(x > 709.782712893384, np.inf, out)
    out = np.where(x < -745.1332191019412, 0.0, out)
    out = np.where(finite, out, np.where(x == np.inf, np.inf, np.where(x == -np.inf, 0.0, x)))
    return out[()] if out.ndim == 0 else out


def log(x) -> np.ndarray:
    """``np.log`` for float64, the same bits on every CPU (fdlibm e_log: x = 2**k (1 + f), sqrt(1/2) <= 1 + f < sqrt(2))."""
    x = _float_array(x)
    ok = np.isfinite(x) & (x > 0)
    m, e = np.frexp(np.where(ok, x, 1.0))      # exact: m in [0.5, 1), subnormals included
    low = m < _SQRT_HALF
    m = np.where(low, m * 2.0, m)              # exact
    k = (e - low).astype(np.float64)
    f = m - 1.0                                # exact (Sterbenz)
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    lg1, lg2, lg3, lg4, lg5, lg6, lg7 = _LOG_LG
    t1 = w * (lg2 + w * (lg4 + w * lg6))
    t2 = z * (lg1 + w * (lg3 + w * (lg5 + w * lg7)))
    r = t2 + t1
    hfsq = 0.5 * f * f
    out = k * _LN2_HI - ((hfsq - (s * (hfsq + r) + k * _LN2_LO)) - f)
    special = np.where(x == 0, -np.inf, np.where(x == np.inf, np.inf, np.nan))
    out = np.where(ok, out, special)
    return out[()] if out.ndim == 0 else out


def log10(x) -> np.ndarray:
    """``np.log10`` for float64, the same bits on every CPU (``log(x) / ln 10``; within 2 ULP)."""
    return log(x) * _INV_LN10


def power(base, x) -> np.ndarray:
    """``base ** x`` for a positive ``base``, the same bits on every CPU (``exp(x * log(base))``)."""
    return exp(_float_array(x) * log(base))


def exp10(x) -> np.ndarray:
    """``10 ** x`` for float64, the same bits on every CPU."""
    return exp(_float_array(x) * _LN10)


def _reduce_pio2(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(r, quadrant) with x = n pi/2 + r, |r| <= pi/4 (about), quadrant = n mod 4: Cody-Waite in four parts."""
    n = np.round(x * _INV_PIO2)
    r = x - n * _PIO2[0]                       # exact products for |n| < 2**27 (|x| < 2e8)
    for part in _PIO2[1:]:
        r = r - n * part
    q = np.fmod(n, 4.0)                        # exact, and no integer cast for huge |x|
    return r, np.where(q < 0, q + 4.0, q)


def _sincos(x, want_cos: bool) -> np.ndarray:
    x = _float_array(x)
    finite = np.abs(x) < 2.0 ** 52             # beyond, every double is an integer and the phase meaningless: NaN
    r, q = _reduce_pio2(np.where(finite, x, 0.0))
    z = r * r
    w = z * z
    s1, s2, s3, s4, s5, s6 = _SIN_S
    sin_r = r + z * r * (s1 + z * (s2 + z * (s3 + z * s4) + z * w * (s5 + z * s6)))   # fdlibm k_sin
    c1, c2, c3, c4, c5, c6 = _COS_C
    p = z * (c1 + z * (c2 + z * c3)) + w * w * (c4 + z * (c5 + z * c6))             # fdlibm k_cos
    hz = 0.5 * z
    one_minus = 1.0 - hz
    cos_r = one_minus + (((1.0 - one_minus) - hz) + z * p)
    if want_cos:   # cos(n pi/2 + r) = cos r, -sin r, -cos r, sin r
        out = np.where(q == 1.0, -sin_r, np.where(q == 2.0, -cos_r, np.where(q == 3.0, sin_r, cos_r)))
    else:          # sin(n pi/2 + r) = sin r, cos r, -sin r, -cos r
        out = np.where(q == 1.0, cos_r, np.where(q == 2.0, -sin_r, np.where(q == 3.0, -cos_r, sin_r)))
    out = np.where(finite, out, np.nan)
    return out[()] if out.ndim == 0 else out


def cos(x) -> np.ndarray:
    """``np.cos`` for float64, the same bits on every CPU (accurate for |x| < 2e8, NaN for |x| >= 2**52)."""
    return _sincos(x, want_cos=True)


def sin(x) -> np.ndarray:
    """``np.sin`` for float64, the same bits on every CPU (accurate for |x| < 2e8, NaN for |x| >= 2**52)."""
    return _sincos(x, want_cos=False)


def lognormal(rng: np.random.Generator, mean=0.0, sigma=1.0, size=None) -> np.ndarray:
    """``rng.lognormal(mean, sigma, size)`` with the same draws from ``rng`` but a CPU-independent exp
    (numpy's lognormal calls libm's exp, which differs between CPUs)."""
    return exp(mean + sigma * rng.standard_normal(size))


def tanh(x) -> np.ndarray:
    """``np.tanh`` from the CPU-independent ``exp`` (absolute error ~1e-16)."""
    x = _float_array(x)
    e = exp(-2.0 * np.abs(x))
    return np.sign(x) * (1.0 - e) / (1.0 + e)


def logaddexp(a, b) -> np.ndarray:
    """``np.logaddexp`` (log(exp(a) + exp(b))) from the CPU-independent ``exp`` and ``log``."""
    a, b = _float_array(a), _float_array(b)
    top = np.maximum(a, b)
    return top + log(1.0 + exp(-np.abs(a - b)))
