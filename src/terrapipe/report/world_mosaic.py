"""A mosaic of sample chips beside their labels: what the sample world looks like, site by site.

Each tile pair is one site of the imagery store: its middle clear S2 acquisition in true colour next to
its land-use labels (WorldCover where the source has none, e.g. STAC), classes coloured by group. Sites are picked greedily for the most distinct classes, so the figure shows the
world's range rather than its most common landscape.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from terrapipe.data.normalize import MISSING_VALUE
from terrapipe.errors import InputDataError
from terrapipe.sources.landscape import BY_CODE, CLASSES

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


def _physical(store_dir: Path, name: str, bands: list[str]) -> np.ndarray:
    """A store modality's bands back in physical units (memory-mapped, normalized -> x), [N, H, W, T, len(bands)]."""
    import json

    stats = json.loads((store_dir / "stats.json").read_text())[name]
    manifest = json.loads((store_dir / "store.json").read_text())["modalities"][name]
    index = [manifest["bands"].index(b) for b in bands]
    k = stats["std_multiplier"]
    mean = np.array([stats["bands"][b]["mean"] for b in bands])
    std = np.array([stats["bands"][b]["std"] for b in bands])
    values = np.load(store_dir / manifest["file"], mmap_mode="r")[..., index]
    return np.where(values == MISSING_VALUE, np.nan, values * (2 * k * std) + (mean - k * std))


def pick_sites(labels: np.ndarray, count: int) -> list[int]:
    """Greedy over store rows: each next site adds the most classes not yet shown."""
    seen: set[int] = set()
    chosen: list[int] = []
    classes = [set(np.unique(label).tolist()) for label in labels]
    for _ in range(min(count, len(labels))):
        best = max((i for i in range(len(labels)) if i not in chosen), key=lambda i: (len(classes[i] - seen), -i))
        chosen.append(best)
        seen |= classes[best]
    return chosen


def write_mosaic(store_dir: Path, out_png: Path, count: int = 12, columns: int = 4) -> None:
    """Write the mosaic of ``count`` sites of the imagery store to ``out_png`` (deterministic bytes: no
    software or date metadata). Reads the store, not the raw chips: ten files instead of ten thousand."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    from matplotlib.patches import Patch

    if not (store_dir / "store.json").exists():
        raise InputDataError(store_dir / "store.json", "missing", "Run `dvc repro normalize_sentinel` first")
    land_use_path = store_dir / "land_use_class.npy"
    is_land_use = land_use_path.exists()
    labels = np.load(land_use_path if is_land_use else store_dir / "worldcover_class.npy", mmap_mode="r")
    sites = pd.read_parquet(store_dir / "sites.parquet")
    timestamps = np.load(store_dir / "timestamps.npy")
    rgb_all = _physical(store_dir, "s2", ["B04", "B03", "B02"]) / 1e4          # reflectance x 10000 -> fraction
    chosen = pick_sites(labels, count)
    table = class_colours() if is_land_use else _worldcover_table()
    rows = int(np.ceil(len(chosen) / columns))
    fig, axes = plt.subplots(rows, 2 * columns, figsize=(2.0 * 2 * columns, 2.2 * rows + 1.6), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    shown: set[int] = set()
    for k, row in enumerate(chosen):
        series = rgb_all[row]                                                # (H, W, T, 3)
        valid = np.flatnonzero(np.isfinite(series).all(axis=(0, 1, 3)))
        t = int(valid[len(valid) // 2]) if len(valid) else series.shape[2] // 2  # the middle clear acquisition
        day, month, year = timestamps[row, t]
        a, b = axes[k // columns, 2 * (k % columns)], axes[k // columns, 2 * (k % columns) + 1]
        a.imshow(np.nan_to_num(np.clip(series[:, :, t] / 0.3, 0, 1) ** 0.8), interpolation="nearest")
        a.set_title(f"{sites['site_id'].iloc[row]}\n{year:04d}-{month:02d}-{day:02d}", fontsize=6)
        b.imshow(table[np.asarray(labels[row])], interpolation="nearest")
        b.set_title("land use" if is_land_use else "WorldCover", fontsize=6)
        shown |= set(np.unique(labels[row]).tolist()) if is_land_use else set()
    handles = [Patch(color=table[c], label=BY_CODE[c].name.replace("_", " ")) for c in sorted(shown)]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=6, fontsize=6, frameon=False)
    fig.suptitle("terrapipe sample world: S2 true colour (middle clear acquisition) and land-use labels", fontsize=9)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.92, bottom=0.14, wspace=0.05, hspace=0.35)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110, metadata={"Software": None})
    plt.close(fig)


def _worldcover_table() -> np.ndarray:
    table = np.ones((256, 3))
    for code, colour in WORLDCOVER_COLOURS.items():
        table[code] = colour
    return table
