"""A mosaic of sample chips beside their labels: what the sample world looks like, site by site.

Each tile pair is one site: the true-colour S2 acquisition nearest to mid-season next to its land-use
label raster (WorldCover where the source has no land use, e.g. STAC), classes coloured by their
EuroSAT-like family. Sites are picked greedily for the most distinct classes, so the figure shows the
world's range rather than its most common landscape.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from terrapipe.errors import InputDataError
from terrapipe.sources.landscape import BY_CODE, CLASSES, LAND_USE_FILE

# One colour per class group; classes of a group are shaded lighter to darker by code.
GROUP_COLOURS = {"forest": (0.10, 0.45, 0.15), "natural": (0.65, 0.75, 0.35), "crop": (0.95, 0.75, 0.20),
                 "permanent_crop": (0.75, 0.35, 0.55), "pasture": (0.55, 0.85, 0.45), "built": (0.80, 0.15, 0.15),
                 "road": (0.25, 0.25, 0.25), "water": (0.15, 0.45, 0.85), "sea": (0.05, 0.20, 0.55)}
WORLDCOVER_COLOURS = {10: (0.0, 0.39, 0.0), 20: (1.0, 0.73, 0.13), 30: (1.0, 1.0, 0.3), 40: (0.94, 0.59, 1.0),
                      50: (0.98, 0.0, 0.0), 60: (0.71, 0.71, 0.71), 70: (0.94, 0.94, 0.94), 80: (0.0, 0.39, 0.78),
                      90: (0.0, 0.59, 0.63), 95: (0.0, 0.81, 0.46), 100: (0.98, 0.9, 0.63)}


def class_colours() -> np.ndarray:
    """RGB per land-use code (256, 3)."""
    table = np.ones((256, 3))
    for group, colour in GROUP_COLOURS.items():
        members = [c for c in CLASSES if c.group == group]
        for i, c in enumerate(members):
            shade = 1.15 - 0.45 * i / max(len(members) - 1, 1)
            table[c.code] = np.clip(np.array(colour) * shade, 0, 1)
    return table


def _read(path: Path, bands=None) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as src:
        names = list(src.descriptions)
        index = [names.index(b) + 1 for b in bands] if bands else [1]
        data = src.read(index).astype(np.float64)
        scales = np.array([src.scales[i - 1] for i in index])[:, None, None]
        offsets = np.array([src.offsets[i - 1] for i in index])[:, None, None]
    return data * scales + offsets


def pick_sites(raw_dir: Path, site_ids, count: int) -> list[str]:
    """Greedy: each next site adds the most classes not yet shown."""
    seen: set[int] = set()
    chosen: list[str] = []
    labels = {s: np.unique(_labels(raw_dir, s)[0]).astype(int) for s in site_ids}
    for _ in range(min(count, len(site_ids))):
        best = max((s for s in site_ids if s not in chosen), key=lambda s: (len(set(labels[s]) - seen), s))
        chosen.append(best)
        seen |= set(labels[best])
    return chosen


def _labels(raw_dir: Path, site_id: str) -> tuple[np.ndarray, bool]:
    path = raw_dir / site_id / LAND_USE_FILE
    if path.exists():
        return _read(path)[0].astype(int), True
    return _read(raw_dir / site_id / "worldcover.tif")[0].astype(int), False


def write_mosaic(raw_dir: Path, out_png: Path, count: int = 12, columns: int = 4) -> None:
    """Write the mosaic of ``count`` sites to ``out_png`` (deterministic bytes: no software/date metadata)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    from matplotlib.patches import Patch

    scenes_path = raw_dir / "scenes.csv"
    if not scenes_path.exists():
        raise InputDataError(scenes_path, "missing", "Run `dvc repro fetch_sentinel` first")
    scenes = pd.read_csv(scenes_path, parse_dates=["date"])
    s2 = scenes[scenes["sensor"] == "s2"]
    if s2.empty:
        raise InputDataError(scenes_path, "lists no S2 scene", "Include s2 in sources.sentinel.sensors")
    sites = pick_sites(raw_dir, sorted(s2["site_id"].unique()), count)
    colours = class_colours()
    rows = int(np.ceil(len(sites) / columns))
    fig, axes = plt.subplots(rows, 2 * columns, figsize=(2.0 * 2 * columns, 2.2 * rows + 1.6), squeeze=False)
    shown: set[int] = set()
    for ax in axes.ravel():
        ax.axis("off")
    for k, site_id in enumerate(sites):
        scene = s2[s2["site_id"] == site_id].iloc[len(s2[s2["site_id"] == site_id]) // 2]
        rgb = np.moveaxis(_read(raw_dir / scene["path"], ["B04", "B03", "B02"]), 0, -1)
        labels, is_land_use = _labels(raw_dir, site_id)
        table = colours if is_land_use else _worldcover_table()
        shown |= set(np.unique(labels).tolist()) if is_land_use else set()
        a, b = axes[k // columns, 2 * (k % columns)], axes[k // columns, 2 * (k % columns) + 1]
        a.imshow(np.clip(rgb / 0.3, 0, 1) ** 0.8, interpolation="nearest")
        a.set_title(f"{site_id}\n{scene['date']:%Y-%m-%d}", fontsize=6)
        b.imshow(table[labels], interpolation="nearest")
        b.set_title("land use" if is_land_use else "WorldCover", fontsize=6)
    handles = [Patch(color=colours[c], label=BY_CODE[c].name.replace("_", " ")) for c in sorted(shown)]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=6, fontsize=6, frameon=False)
    fig.suptitle("terrapipe sample world: S2 true colour (mid-series acquisition) and land-use labels", fontsize=9)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.92, bottom=0.14, wspace=0.05, hspace=0.35)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110, metadata={"Software": None})
    plt.close(fig)


def _worldcover_table() -> np.ndarray:
    table = np.ones((256, 3))
    for code, colour in WORLDCOVER_COLOURS.items():
        table[code] = colour
    return table
