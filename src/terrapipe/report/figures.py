"""The report's figures: drawn from the collected summaries, or copied from the stage that drew them.

Same inputs, same bytes: fixed figure sizes and dpi, the Agg canvas without pyplot's global state,
DejaVu Sans, no "Software" metadata and nothing time-dependent (as terrapipe.report.alphaearth_maps).
Each function returns the file names it wrote under ``out_dir`` (nothing when its inputs are missing).
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np

from terrapipe.report.alphaearth_maps import SAVE as MAP_SAVE
from terrapipe.report.alphaearth_maps import STYLE as MAP_STYLE
from terrapipe.report.collect import FORMAT_ERRORS, PretrainRun, ReportInputs, format_problem

log = logging.getLogger("terrapipe")
STYLE = {**MAP_STYLE, "legend.fontsize": 6}
SAVE = {**MAP_SAVE, "dpi": 90}     # the maps' settings (no "Software" metadata), a little sharper for text
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
ERA5_FIGURE, BANDSET_FIGURE = "pretrain_era5_info_nce.png", "pretrain_bandsets.png"
DOWNSTREAM_FIGURE, EARTH4D_FIGURE, DEEPEARTH_FIGURE = "downstream.png", "earth4d_holdouts.png", "deepearth_classifiers.png"


def experiment_codes(inputs: ReportInputs) -> dict[str, str]:
    """Short names for figures (E1, E2, ... in pretrain.run order); the tables say which key is which."""
    return {key: f"E{i}" for i, key in enumerate(inputs.run, start=1)}


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, **SAVE)
    return path.name


def rolling_mean(values: np.ndarray, n: int) -> np.ndarray:
    """Trailing mean over up to ``n`` steps (the window metrics.json's final values average over)."""
    cumulative = np.cumsum(np.insert(np.asarray(values, float), 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    start = np.maximum(idx - n, 0)
    return (cumulative[idx] - cumulative[start]) / (idx - start)


def _curves_panel(ax, runs: list[PretrainRun], column: str, label, title: str) -> None:
    for i, run in enumerate(runs):
        steps, values = run.curves["step"], run.curves[column]
        colour = COLOURS[i % len(COLOURS)]
        ax.plot(steps, values, color=colour, alpha=0.25, lw=0.8)
        ax.plot(steps, rolling_mean(values, run.window), color=colour, lw=1.5, label=label(run))
    ax.set_xlabel("optimizer step")
    ax.set_title(title)
    ax.legend()


def pretrain_figures(inputs: ReportInputs, out_dir: Path) -> list[str]:
    """InfoNCE over steps per ERA5 variant (seed 000) and the bandset variants' losses (seed 001)."""
    import matplotlib

    codes = experiment_codes(inputs)
    written = []
    era5 = [r for r in inputs.pretrain if r.seed == "000" and r.curves is not None and "info_nce" in r.curves]
    bandsets = [r for r in inputs.pretrain if r.seed == "001" and r.curves is not None and "info_nce" in r.curves]
    with matplotlib.rc_context(STYLE):
        if era5:
            fig = _figure(6.5, 3.2)
            _curves_panel(fig.add_subplot(111), era5, "info_nce", lambda r: f"{codes[r.key]} {r.key[:48]} (ERA5: {r.era5_kind})",
                          "InfoNCE between the two views' pooled vectors (thin: per step; thick: trailing mean)")
            written.append(_save(fig, out_dir / ERA5_FIGURE))
        if bandsets:
            fig = _figure(9, 3.2)
            label = lambda r: f"{codes[r.key]} {r.s2_bandsets} S2 bandset{'s' * (r.s2_bandsets != 1)}"  # noqa: E731
            _curves_panel(fig.add_subplot(121), bandsets, "info_nce", label, "InfoNCE (pooled vectors)")
            if all("patch_disc" in r.curves for r in bandsets):
                _curves_panel(fig.add_subplot(122), bandsets, "patch_disc", label,
                              "patch discrimination loss (masked tokens)")
            written.append(_save(fig, out_dir / BANDSET_FIGURE))
    return written


def downstream_figure(inputs: ReportInputs, out_dir: Path) -> list[str]:
    """Per task: each experiment's encoder (± bootstrap std) beside its random encoder, raw pixels, majority."""
    import matplotlib

    codes = experiment_codes(inputs)
    evaluated = [e for e in inputs.evaluate if e.tasks]
    tasks = list(dict.fromkeys(t for e in evaluated for t in e.tasks))
    if not tasks:
        return []
    bars = (("encoder", "pretrained encoder"), ("random_encoder", "random encoder"), ("raw_pixels", "raw pixels"),
            ("majority", "majority class"))
    with matplotlib.rc_context(STYLE):
        fig = _figure(2.4 * len(tasks) + 0.6, 3.0)
        for t, task in enumerate(tasks):
            ax = fig.add_subplot(1, len(tasks), t + 1)
            runs = [e for e in evaluated if task in e.tasks]
            x = np.arange(len(runs))
            for b, (field, label) in enumerate(bars):
                values = [e.tasks[task].values[field] for e in runs]
                errors = [(e.tasks[task].encoder_spread or 0.0) if field == "encoder" else 0.0 for e in runs]
                ax.bar(x + (b - 1.5) * 0.2, values, 0.2, yerr=errors, color=COLOURS[b], label=label, capsize=2)
            ax.set_xticks(x, [codes[e.key] for e in runs])
            ax.set_title(f"{task}: {runs[0].tasks[task].metric}")
            ax.set_ylim(0, 1.25)                       # headroom for the legend
            ax.set_yticks(np.linspace(0, 1, 6))
        fig.axes[0].legend(loc="upper left", ncol=2)
        return [_save(fig, out_dir / DOWNSTREAM_FIGURE)]


def earth4d_figure(inputs: ReportInputs, out_dir: Path) -> list[str]:
    """100 x MAE / 2 per holdout: Earth4D beside the mean-embedding and geodesic kNN baselines."""
    import matplotlib

    holdouts = (inputs.earth4d.metrics or {}).get("holdouts") or {}
    if not holdouts:
        return []
    names = list(holdouts)
    models = (("earth4d", "Earth4D"), ("knn_geodesic", "geodesic kNN"), ("mean_embedding", "mean embedding"))
    with matplotlib.rc_context(STYLE):
        fig = _figure(max(4.0, 0.9 * len(names) + 1.5), 3.0)
        ax = fig.add_subplot(111)
        x = np.arange(len(names))
        for m, (key, label) in enumerate(models):
            ax.bar(x + (m - 1) * 0.27, [holdouts[h][key]["mae_over_range_pct"] for h in names], 0.27,
                   color=COLOURS[m], label=label)
        ax.set_xticks(x, names, rotation=20)
        ax.set_ylabel("100 x MAE / 2 (%), lower is better")
        ax.set_ylim(0, 1.3 * max(holdouts[h][k]["mae_over_range_pct"] for h in names for k, _ in models))
        ax.set_title("Earth4D -> AlphaEarth error per holdout")
        ax.legend(loc="upper left", ncol=3)
        return [_save(fig, out_dir / EARTH4D_FIGURE)]


def deepearth_figure(inputs: ReportInputs, out_dir: Path) -> list[str]:
    """Top-1 per split reason: both classifiers beside the vision classifier's baselines."""
    import matplotlib

    classifiers = (inputs.deepearth.metrics or {}).get("classifiers") or {}
    vision = classifiers.get("vision")
    if vision is None:
        return []
    groups = list(vision["model"])
    series = [("vision classifier", vision["model"])]
    if "language" in classifiers:
        series.append(("language classifier", classifiers["language"]["model"]))
    series += [(f"{name} (vision)", scores) for name, scores in vision["baselines"].items()]
    with matplotlib.rc_context(STYLE):
        fig = _figure(max(4.5, 1.0 * len(groups) + 1.5), 3.0)
        ax = fig.add_subplot(111)
        x, width = np.arange(len(groups)), 0.8 / len(series)
        for s, (label, scores) in enumerate(series):
            values = [scores.get(g, {}).get("top1_all") or 0.0 for g in groups]
            ax.bar(x + (s - (len(series) - 1) / 2) * width, values, width, color=COLOURS[s], label=label)
        ax.set_xticks(x, groups, rotation=20)
        ax.set_ylim(0, 1.3)                            # headroom for the legend
        ax.set_yticks(np.linspace(0, 1, 6))
        ax.set_ylabel("top-1 accuracy (unseen species count as errors)")
        ax.set_title("DeepEarth species classifiers per split reason")
        ax.legend(loc="upper left", ncol=2)
        return [_save(fig, out_dir / DEEPEARTH_FIGURE)]


def copy_images(inputs: ReportInputs, out_dir: Path) -> dict[str, str]:
    """The split maps and Earth4D's maps, copied byte for byte; returns source name -> file name."""
    copied = {}
    sources = [(f"split_{s.dataset}", s.map_png) for s in inputs.splits if s.map_png is not None]
    sources += [(f"earth4d_{name}", path) for name, path in sorted(inputs.earth4d.images.items())]
    for name, path in sources:
        target = out_dir / f"{name}{path.suffix}"
        shutil.copyfile(path, target)
        copied[name] = target.name
    return copied


def draw_all(inputs: ReportInputs, out_dir: Path) -> set[str]:
    """Every figure into ``out_dir``; the set of file names written (the document references only these)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = set(copy_images(inputs, out_dir).values())
    for draw in (pretrain_figures, downstream_figure, earth4d_figure, deepearth_figure):
        try:
            written.update(draw(inputs, out_dir))
        except FORMAT_ERRORS as exc:   # the section says the same; the figure is left out, not half drawn
            log.warning("report: %s skipped: %s", draw.__name__, format_problem(exc))
    return written
