"""Köppen-Geiger climate classes from twelve monthly normals (Peel et al. 2007 rules, with
Köppen's -3 C boundary between C and D).

A pure function so that the sample world's climate can be checked against the real places'
classes, and real ERA5 normals classified the same way. Polar (E) is tested first, then arid (B),
then the temperature groups A, C, D. "Summer" is the warmer half-year (Apr-Sep or Oct-Mar), so no
latitude is needed.
"""
from __future__ import annotations

import re

import numpy as np

GROUPS = "ABCDE"
CODE_PATTERN = re.compile(r"^(A[fmws]|B[WS][hk]|C[sfw][abc]|D[sfw][abcd]|E[TF])$")


def is_koppen_code(code: str) -> bool:
    """Whether ``code`` is a full Köppen-Geiger code such as "Af", "BSh", "Cfb", "Dwd" or "ET"."""
    return bool(CODE_PATTERN.match(str(code)))


def warm_half(temp_c) -> np.ndarray:
    """Mask (..., 12) of the summer months: Apr-Sep or Oct-Mar, whichever half-year is warmer."""
    t = np.asarray(temp_c, float)
    apr_sep = (np.arange(12) >= 3) & (np.arange(12) < 9)
    north = t[..., apr_sep].mean(-1) >= t[..., ~apr_sep].mean(-1)
    return np.where(north[..., None], apr_sep, ~apr_sep)


def arid_threshold(temp_c, precip_mm) -> np.ndarray:
    """The B (arid) boundary [mm/yr]: 20 x mean temperature, + 280 when >= 70% of the rain falls in
    summer, + 0 when >= 70% falls in winter, else + 140."""
    t, p = np.asarray(temp_c, float), np.asarray(precip_mm, float)
    summer_share = (p * warm_half(t)).sum(-1) / np.maximum(p.sum(-1), 1e-9)
    return 20.0 * t.mean(-1) + np.where(summer_share >= 0.7, 280.0, np.where(summer_share <= 0.3, 0.0, 140.0))


def classify(temp_c, precip_mm) -> str:
    """Köppen-Geiger code from monthly mean temperature [deg C] and precipitation [mm/month], Jan..Dec."""
    t = np.asarray(temp_c, float).reshape(12)
    p = np.asarray(precip_mm, float).reshape(12)
    t_hot, t_cold, t_mean, p_year = t.max(), t.min(), t.mean(), p.sum()
    summer = warm_half(t)
    p_summer, p_winter = p[summer], p[~summer]

    if t_hot < 10:
        return "ET" if t_hot > 0 else "EF"
    threshold = arid_threshold(t, p)
    if p_year < threshold:
        return "B" + ("W" if p_year < threshold / 2 else "S") + ("h" if t_mean >= 18 else "k")
    if t_cold >= 18:
        if p.min() >= 60:
            return "Af"
        if p.min() >= 100 - p_year / 25:
            return "Am"
        return "As" if p_summer.min() < 60 and p_summer.min() <= p_winter.min() else "Aw"
    group = "C" if t_cold > -3 else "D"
    if p_summer.min() < 40 and p_summer.min() < p_winter.max() / 3:
        rain = "s"
    elif p_winter.min() < p_summer.max() / 10:
        rain = "w"
    else:
        rain = "f"
    if t_hot >= 22:
        heat = "a"
    elif (t >= 10).sum() >= 4:
        heat = "b"
    elif group == "D" and t_cold < -38:
        heat = "d"
    else:
        heat = "c"
    return group + rain + heat
