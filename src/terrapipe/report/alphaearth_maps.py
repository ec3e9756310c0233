"""Maps of the Earth4D -> AlphaEarth run over a region of interest, epoch by epoch, and its curves.

DeepEarth projected 64-D embeddings to RGB with an autoencoder it never published (reference/
deepearth-behaviour.md 2.7); here the projection is a PCA to 3 dimensions fitted on the ground truth of
the region only, with each component's 2nd..98th percentile of the truth scores mapped to 0..1. The
projection and the colour scales are fixed before training, so every epoch's map is drawn with the
same colours and the progression can be compared frame by frame. The error map's scale tops out at
the 99th percentile of the mean-embedding baseline's per-point error: a point at full colour is as
wrong as predicting the training mean.

Figures are small (80 dpi), use the Agg canvas without pyplot's global state, DejaVu Sans and no
"Software" metadata, so a rerun writes the same bytes; the map figures are built once and only
recoloured per epoch (a rebuild costs more than the training epoch of a small run).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

DPI = 80
STYLE = {"font.family": "DejaVu Sans", "font.size": 7, "axes.titlesize": 7}
SAVE = {"dpi": DPI, "metadata": {"Software": None}}
FRAME_MS = 500               # GIF frame duration
CURVE_HOLDOUTS_SKIPPED = "spatial_region_"  # per-region curves stay in curves.csv; the plot shows spatial_all


def fit_rgb_projection(truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """PCA of ``truth`` [M, D] to 3 components, signs fixed (largest loading positive).

    Returns (mean [D], components [3, D], low [3], high [3]): the 2nd and 98th percentiles of the scores.
    """
    values = np.asarray(truth, dtype=np.float64)
    mean = values.mean(axis=0)
    _, _, vt = np.linalg.svd(values - mean, full_matrices=False)          # vt (min(M, D), D)
    components = np.zeros((3, values.shape[1]))
    components[:len(vt[:3])] = vt[:3]                                      # fewer than 3 points: pad with 0
    signs = np.sign(components[np.arange(3), np.abs(components).argmax(axis=1)])
    components *= np.where(signs == 0, 1.0, signs)[:, None]
    scores = (values - mean) @ components.T                                # (M, 3)
    low, high = np.percentile(scores, 2, axis=0), np.percentile(scores, 98, axis=0)
    return mean, components, low, np.where(high > low, high, low + 1.0)


class RoiMaps:
    """RGB and error maps of the ROI's points; the projection and colour scales are fixed at construction.

    Args: latlon [M, 2] degrees of the ROI points, truth [M, 64] their embeddings, baseline [M, 64] the
    mean-embedding predictions (the error scale), roi the window (lat_min ... lon_max).
    """

    def __init__(self, latlon: np.ndarray, truth: np.ndarray, baseline: np.ndarray, roi):
        self.lat, self.lon = np.asarray(latlon[:, 0], float), np.asarray(latlon[:, 1], float)
        self.truth, self.roi = np.asarray(truth, np.float64), roi
        self.mean, self.components, self.low, self.high = fit_rgb_projection(self.truth)
        self.error_max = float(np.percentile(self._error(baseline), 99)) or 1.0

    def rgb(self, embeddings: np.ndarray) -> np.ndarray:
        """[M, 64] -> [M, 3] colours in [0, 1] through the fixed projection."""
        scores = (np.asarray(embeddings, np.float64) - self.mean) @ self.components.T
        return np.clip((scores - self.low) / (self.high - self.low), 0.0, 1.0)

    def _error(self, pred: np.ndarray) -> np.ndarray:
        from terrapipe.evals.regression import per_row_mae_over_range_pct

        return per_row_mae_over_range_pct(pred, self.truth)

    def _axes(self, fig, position, title: str):
        ax = fig.add_subplot(position)
        ax.set_xlim(self.roi.lon_min, self.roi.lon_max)
        ax.set_ylim(self.roi.lat_min, self.roi.lat_max)
        ax.set_aspect(1.0 / np.cos(np.radians((self.roi.lat_min + self.roi.lat_max) / 2)))
        ax.set_title(title)
        ax.tick_params(labelsize=6)
        return ax

    def _build(self) -> None:
        """The two figures, drawn once; each epoch only recolours the prediction and error points."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.rgb_fig = Figure(figsize=(6, 3))
        FigureCanvasAgg(self.rgb_fig)
        truth_ax = self._axes(self.rgb_fig, 121, "AlphaEarth (truth)")
        truth_ax.scatter(self.lon, self.lat, c=self.rgb(self.truth), s=9, linewidths=0)
        self.pred_ax = self._axes(self.rgb_fig, 122, "Earth4D")
        self.pred_points = self.pred_ax.scatter(self.lon, self.lat, c=self.rgb(self.truth), s=9, linewidths=0)
        self.rgb_fig.suptitle(f"PCA-3 RGB of {len(self.lat)} holdout points in the ROI (projection fitted on truth)")
        self.error_fig = Figure(figsize=(4, 3))
        FigureCanvasAgg(self.error_fig)
        self.error_ax = self._axes(self.error_fig, 111, "")
        self.error_points = self.error_ax.scatter(self.lon, self.lat, c=np.zeros(len(self.lat)), s=9, linewidths=0,
                                                  cmap="magma", vmin=0.0, vmax=self.error_max)
        self.error_fig.colorbar(self.error_points, ax=self.error_ax, label="100 * MAE / 2 per point (%)")

    def draw(self, pred: np.ndarray, label: str, base: Path) -> Path:
        """Write ``<base>_rgb.png`` (truth | prediction) and ``<base>_error.png``; return ``base``."""
        import matplotlib

        error = self._error(pred)
        with matplotlib.rc_context(STYLE):
            if not hasattr(self, "rgb_fig"):
                self._build()
            self.pred_points.set_facecolors(self.rgb(pred))
            self.pred_ax.set_title(f"Earth4D, {label}")
            self.rgb_fig.savefig(f"{base}_rgb.png", **SAVE)
            self.error_points.set_array(error)
            self.error_ax.set_title(f"{label}: mae/range {error.mean():.2f}% (mean emb. = top of scale)")
            self.error_fig.savefig(f"{base}_error.png", **SAVE)
        return Path(base)


def write_animation(frames: list[Path], out_gif: Path) -> None:
    """An animated GIF of the PNG ``frames`` in order (Pillow; no ffmpeg needed), looping forever."""
    from PIL import Image

    images = [Image.open(path).convert("RGB") for path in frames]
    images[0].save(out_gif, save_all=True, append_images=images[1:], duration=FRAME_MS, loop=0)


def plot_training_curves(curves: list[dict], holdouts: list[str], out_png: Path) -> None:
    """Train/val MSE, mae_over_range_pct per holdout (spatial regions as spatial_all) and the lr, by epoch."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [row["epoch"] for row in curves]
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(9, 3))
        FigureCanvasAgg(fig)
        loss, error, lr = fig.add_subplot(131), fig.add_subplot(132), fig.add_subplot(133)
        for key in ("train_mse", "val_mse"):
            loss.plot(epochs, [row[key] for row in curves], marker="o", ms=2, label=key)
        loss.set_yscale("log")
        loss.set_title("MSE (val: carved from the training rows)")
        for name in holdouts:
            if not name.startswith(CURVE_HOLDOUTS_SKIPPED):
                error.plot(epochs, [row[f"{name}_mae_over_range_pct"] for row in curves], marker="o", ms=2, label=name)
        error.set_title("100 * MAE / 2 (DeepEarth's \"MAPE\"), %")
        lr.plot(epochs, [row["lr"] for row in curves], marker="o", ms=2, label="predictor")
        lr.plot(epochs, [row["encoder_lr"] for row in curves], marker="o", ms=2, label="encoder")
        lr.set_yscale("log")
        lr.set_title("learning rate (ReduceLROnPlateau on val)")
        for ax in (loss, error, lr):
            ax.set_xlabel("epoch")
            ax.legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(out_png, **SAVE)
