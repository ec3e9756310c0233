"""Sample backend of fetch_tasks: the four downstream tasks drawn from the sample world, each written in the
on-disk format of the real benchmark it imitates (so one reader serves the sample task and the real one).

    eurosat  GEO-Bench  64 x 64 S2 chips (the registry's 12 L2A bands; m-eurosat has 13, L2A lacks B10), one
             EuroSAT class per chip
    so2sat   GEO-Bench  32 x 32 S2 (m-so2sat's 10 bands: no 60 m band) + S1 VV/VH dB, one local climate zone
    pastis   PASTIS     32 x 32 patches, monthly S2 (10 bands) and S1 series, a PASTIS crop class per pixel
    mados    MADOS      80 x 80 sea crops (11 bands: no B09), a MADOS sea-surface class per pixel

Places: chip centres are drawn uniformly inside the study's AOI boxes, at least ``min_site_distance_km`` from
every pretraining site of data/inputs/sites.csv (all candidates, not only the selected ones). Partitions are
blocks of space: the plane is cut into ``block_km`` blocks (in degrees of latitude and longitude), each block
is train, valid or test by a hash of (seed, task, block), and a chip that reaches within one pixel of a block
edge is dropped, so no chip of one partition touches one of another. Chips never overlap each other.

A chip's class is the class at its centre, kept only if it covers CHIP_SHARE of the chip (River and Highway,
lines 1-3 pixels wide: LINE_SHARE; Pasture and PermanentCrop, whose ~260 m parcels are a sixth of a 640 m chip:
PARCEL_SHARE).

Selection: candidates are classified by the land use at their centre (cheap, one point each), then rendered
in fixed batches of BATCH in candidate order, on a process pool, until every (partition, class) has its share
of ``n_samples`` (classes even, partitions by valid_share / test_share, PASTIS's by its folds); a rendered chip keeps its full-resolution label only if its class is still wanted. Everything is
a function of (seed, task, candidate index), so the output is the same on any machine and any core count.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from terrapipe.data.tasks import IGNORE_LABEL, PARTITIONS, TaskData, TasksParams
from terrapipe.grid import PIXEL_M, site_grid
from terrapipe.modalities import S1, S2
from terrapipe.sources import landscape as ls
from terrapipe.sources import streams as det
from terrapipe.sources.streams import rng as stream

log = logging.getLogger("terrapipe")

BATCH = 16                      # chips rendered per round (fixed: the output must not depend on the core count)
RENDERS_PER_SAMPLE = 3          # a class whose chips keep failing is given up after this many renders per sample
CANDIDATES_PER_SAMPLE = 60      # centre points drawn per wanted sample (most classes are rare somewhere)
SEA_CANDIDATES_PER_SAMPLE = 600  # MADOS: sea is ~1% of the AOIs
YEARS = (2018, 2019, 2020, 2021, 2022)
EARTH_KM_PER_DEG = 111.32
LINE_SHARE, PARCEL_SHARE, CHIP_SHARE = 0.03, 0.12, 0.3
PASTIS_MIN_CROP_SHARE, MADOS_MIN_SEA_SHARE = 0.3, 0.5

# The benchmarks' class lists (their label order).
EUROSAT_CLASSES = ("AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
                   "PermanentCrop", "Residential", "River", "SeaLake")
LCZ_CLASSES = ("Compact high-rise", "Compact mid-rise", "Compact low-rise", "Open high-rise", "Open mid-rise",
               "Open low-rise", "Lightweight low-rise", "Large low-rise", "Sparsely built", "Heavy industry",
               "Dense trees", "Scattered trees", "Bush, scrub", "Low plants", "Bare rock or paved",
               "Bare soil or sand", "Water")

S2_NO_60M = tuple(b.name for s in S2.band_sets if s.resolution_m < 60 for b in s.bands)  # m-so2sat's and PASTIS's
S2_NO_VAPOUR = tuple(b for b in S2.band_order if b != "B09")                            # MADOS's (ACOLITE rhorc)


def _lookup(mapping: dict[int, int]) -> np.ndarray:
    """land-use code -> task label index as a 256-entry table (IGNORE_LABEL where the task has no class)."""
    table = np.full(256, IGNORE_LABEL, np.int64)
    for code, label in mapping.items():
        table[code] = label
    return table


EUROSAT_OF = _lookup({c.code: EUROSAT_CLASSES.index(c.eurosat) for c in ls.CLASSES if c.eurosat})
LCZ_OF = _lookup({c.code: c.lcz - 1 for c in ls.CLASSES if c.lcz})


@dataclass(frozen=True)
class TaskKind:
    """What differs between the four sample tasks."""
    name: str
    class_names: tuple[str, ...]
    centre_class: np.ndarray          # land-use code -> class index wanted at a centre (IGNORE_LABEL: skip)
    s2_bands: tuple[str, ...]
    with_s1: bool
    segmentation: bool
    first_target: int = 0             # segmentation: labels from this index up are what a patch is about
                                      # (PASTIS: crops, not background)


@functools.cache
def _kinds() -> dict[str, TaskKind]:
    from terrapipe.data.tasks import mados, pastis

    return {
        "eurosat": TaskKind("sample-eurosat", EUROSAT_CLASSES, EUROSAT_OF, S2.band_order, False, False),
        "so2sat": TaskKind("sample-so2sat", LCZ_CLASSES, LCZ_OF, S2_NO_60M, True, False),
        "pastis": TaskKind("sample-pastis", pastis.CLASSES, pastis.LABEL_OF_LAND_USE, S2_NO_60M, True, True, 1),
        "mados": TaskKind("sample-mados", mados.CLASSES, mados.LABEL_OF_LAND_USE, S2_NO_VAPOUR, False, True),
    }


def chip_label(task: str, codes: np.ndarray, centre_class: int) -> int:
    """The class of a classification chip: its centre's class, if that covers enough of the chip (H, W) to be
    what the chip shows, IGNORE_LABEL otherwise."""
    kind = _kinds()[task]
    share = (kind.centre_class[codes] == centre_class).mean()
    name = kind.class_names[centre_class] if task == "eurosat" else ""
    least = LINE_SHARE if name in ("River", "Highway") else PARCEL_SHARE if name in ("Pasture", "PermanentCrop") else CHIP_SHARE
    return centre_class if share >= least else IGNORE_LABEL


def pixel_labels(task: str, codes: np.ndarray) -> np.ndarray | None:
    """Per-pixel labels (H, W) of a segmentation patch, None if too little of it is labelled."""
    kind = _kinds()[task]
    labels = kind.centre_class[codes]
    wanted = PASTIS_MIN_CROP_SHARE if task == "pastis" else MADOS_MIN_SEA_SHARE
    return labels if (labels >= kind.first_target).mean() >= wanted else None


# -- places -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Candidates:
    lat: np.ndarray          # (K,) chip centres
    lon: np.ndarray
    year: np.ndarray         # (K,) the year of the chip's land use and acquisitions
    month: np.ndarray        # (K,) first month of its acquisitions
    partition: np.ndarray    # (K,) index into PARTITIONS
    fold: np.ndarray         # (K,) 1..5: the PASTIS fold of the chip's block
    wanted: np.ndarray       # (K,) class index at the centre, IGNORE_LABEL where the task has none


def nearest_site_km(lat: np.ndarray, lon: np.ndarray, site_lat: np.ndarray, site_lon: np.ndarray) -> np.ndarray:
    """Great-circle distance (km) from each point to its nearest site (chunked: points x sites at once; the
    repository's bitwise-portable sin/cos, so a threshold decides the same on every machine)."""
    out = np.empty(len(lat))
    phi_s, lam_s = np.radians(site_lat), np.radians(site_lon)
    for start in range(0, len(lat), 2048):
        phi, lam = np.radians(lat[start:start + 2048])[:, None], np.radians(lon[start:start + 2048])[:, None]
        h = det.sin((phi - phi_s) / 2) ** 2 + det.cos(phi) * det.cos(phi_s) * det.sin((lam - lam_s) / 2) ** 2
        out[start:start + 2048] = (2 * 6371.0088 * np.arcsin(np.sqrt(np.clip(h, 0, 1)))).min(axis=1)
    return out


def blocks(lat: np.ndarray, lon: np.ndarray, block_km: float, half_km: float):
    """Block row and column of each point, and whether its chip (half side ``half_km``) stays inside it."""
    block_deg = block_km / EARTH_KM_PER_DEG
    fy, fx = lat / block_deg, lon / block_deg
    row, col = np.floor(fy).astype(np.int64), np.floor(fx).astype(np.int64)
    km_per_deg_lon = EARTH_KM_PER_DEG * det.cos(np.radians(lat))
    margin_y = half_km / block_km
    margin_x = half_km / (block_deg * km_per_deg_lon)
    inside = ((fy - row > margin_y) & (1 - (fy - row) > margin_y) & (fx - col > margin_x) & (1 - (fx - col) > margin_x))
    return row, col, inside


def block_partition(seed: int, task: str, row: np.ndarray, col: np.ndarray, tp: TasksParams):
    """(partition index into PARTITIONS, PASTIS fold 1..5) of each block, hashed from (seed, task, block)."""
    salt = sum(map(ord, task))
    u = ls.unit_float(ls.cell_hash(seed, salt, row, col))
    partition = np.where(u < tp.valid_share, 1, np.where(u < tp.valid_share + tp.test_share, 2, 0))
    fold = 1 + np.minimum((ls.unit_float(ls.cell_hash(seed, salt, row, col, 5)) * 5).astype(np.int64), 4)
    return partition, fold


def candidates(world, study, tp: TasksParams, seed: int, task: str, n: int) -> Candidates:
    """``n`` candidate chip centres for ``task``: in the AOIs, away from every site, inside one block."""
    source = tp.task(task)
    rng = stream(seed, "tasks", task, "candidates")
    aois = study.aois
    which = rng.integers(0, len(aois), n)
    lat = aois["south"].to_numpy()[which] + rng.random(n) * (aois["north"] - aois["south"]).to_numpy()[which]
    lon = aois["west"].to_numpy()[which] + rng.random(n) * (aois["east"] - aois["west"]).to_numpy()[which]
    year, month = np.array(YEARS)[rng.integers(0, len(YEARS), n)], rng.integers(1, 13, n)
    sites = study.sites
    far = nearest_site_km(lat, lon, sites["latitude"].to_numpy(), sites["longitude"].to_numpy()) >= tp.min_site_distance_km
    half_km = (source.chip_size / 2 + 1) * PIXEL_M / 1000
    row, col, inside = blocks(lat, lon, tp.block_km, half_km)
    partition, fold = block_partition(seed, task, row, col, tp)
    if task == "pastis":  # PASTIS's partitions are its folds
        fold_partition = {f: PARTITIONS.index(p) for p, folds in tp.pastis.folds.items() for f in folds}
        partition = np.array([fold_partition[f] for f in fold.tolist()], np.int64)
    keep = np.flatnonzero(far & inside)
    kind = _kinds()[task]
    wanted = np.full(n, IGNORE_LABEL, np.int64)
    for y in np.unique(year[keep]):  # land use is a function of the year: one call per year
        rows = keep[year[keep] == y]
        wanted[rows] = kind.centre_class[ls.land_use(world, lat[rows], lon[rows], int(y))]
    if kind.segmentation:  # one "class": a patch centred on crops / on sea
        wanted = np.where(wanted >= max(kind.first_target, 0), 0, IGNORE_LABEL)
    keep = keep[wanted[keep] >= 0]
    return Candidates(lat[keep], lon[keep], year[keep], month[keep], partition[keep], fold[keep], wanted[keep])


# -- rendering ------------------------------------------------------------------------------------------
def render_chip(job) -> dict:
    """One chip: its land use and every acquisition, S2 as reflectance x 10000 (rounded), S1 in dB.

    ``job`` = (world, seed, task, index, lat, lon, year, month, size, months, s2 band names, with S1).
    Returns codes (H, W) uint8, s2 (T, C, H, W) and s1 (T, 2, H, W) float32, s2_dates / s1_dates (T,) datetime64[D].
    """
    import pandas as pd

    from terrapipe.sources.chips import native_resolution, s1_sigma0, s2_reflectance, site_surface
    from terrapipe.study import site_months

    world, seed, task, index, lat, lon, year, month, size, months, s2_bands, with_s1 = job
    grid = site_grid(lat, lon, size)
    dates = site_months(pd.Timestamp(year=int(year), month=int(month), day=1), months)
    surface = site_surface(world, grid, lat, lon, dates)
    rng = stream(seed, "tasks", task, str(index))
    bands = S2.select(s2_bands)
    s2 = []
    for t in range(months):
        refl = s2_reflectance(surface, t, rng)
        s2.append(np.stack([native_resolution(refl[b.name], b.native_m) for b in bands]))  # [C, H, W]
    days = rng.integers(0, 28, (2, months))                                                # day of month - 1
    out = {"codes": surface.land_use,
           "s2": np.round(np.clip(np.stack(s2), 0.0, 3.2) * S2.unit_scale).astype(np.float32),  # [T, C, H, W]
           "s2_dates": np.array([d + pd.Timedelta(days=int(k)) for d, k in zip(dates, days[0])], "datetime64[D]")}
    if with_s1:
        out["s1"] = np.stack([s1_sigma0(surface, t, rng) for t in range(months)]).astype(np.float32)  # [T, 2, H, W]
        out["s1_dates"] = np.array([d + pd.Timedelta(days=int(k)) for d, k in zip(dates, days[1])], "datetime64[D]")
    return out


def _too_close(lat: float, lon: float, chosen: list[tuple[float, float]], min_km: float) -> bool:
    if not chosen:
        return False
    taken = np.array(chosen)
    return bool(nearest_site_km(np.array([lat]), np.array([lon]), taken[:, 0], taken[:, 1])[0] < min_km)


def partition_shares(tp: TasksParams, task: str) -> np.ndarray:
    """Share of the samples each partition (PARTITIONS order) gets: the params' shares, PASTIS's by folds."""
    if task == "pastis":
        counts = np.array([len(tp.pastis.folds[p]) for p in PARTITIONS], float)
        return counts / counts.sum()
    return np.array([1 - tp.valid_share - tp.test_share, tp.valid_share, tp.test_share])


def quotas(n_samples: int, n_classes: int, shares: np.ndarray) -> np.ndarray:
    """Samples wanted per (partition, class) [3, n_classes]: classes as even as possible, each class split over
    the partitions by ``shares`` (largest remainders, ties to the earlier partition)."""
    per_class = np.full(n_classes, n_samples // n_classes)
    per_class[: n_samples % n_classes] += 1
    exact = shares[:, None] * per_class[None, :]                                 # [3, n_classes]
    out = np.floor(exact).astype(np.int64)
    for c in range(n_classes):
        order = np.argsort(-(exact[:, c] - out[:, c]), kind="stable")
        out[order[: per_class[c] - out[:, c].sum()], c] += 1
    return out


def select_chips(world, study, tp: TasksParams, seed: int, task: str, pool=None) -> tuple[Candidates, list[int], list]:
    """Render candidates in batches until each (partition, class) has its quota; (candidates, chosen indices in
    candidate order, their (chip, label))."""
    from terrapipe.errors import InputDataError

    kind, source = _kinds()[task], tp.task(task)
    months = tp.pastis.months if task == "pastis" else 1
    n_classes = 1 if kind.segmentation else len(kind.class_names)
    quota = quotas(source.n_samples, n_classes, partition_shares(tp, task))      # [3, n_classes]
    cands = candidates(world, study, tp, seed, task, source.n_samples * (
        SEA_CANDIDATES_PER_SAMPLE if task == "mados" else CANDIDATES_PER_SAMPLE))
    spacing_km = source.chip_size * PIXEL_M * np.sqrt(2) / 1000                # chips never overlap
    accepted, rendered = np.zeros_like(quota), np.zeros_like(quota)
    chosen, results, where = [], [], []
    queue = list(range(len(cands.lat)))
    mapper = pool.map if pool is not None else map
    while queue:
        need = np.where(rendered < RENDERS_PER_SAMPLE * quota, quota - accepted, 0)
        if not need.any():
            break
        batch, taken = [], np.zeros_like(quota)
        while queue and len(batch) < BATCH:
            i = queue.pop(0)
            slot = cands.partition[i], cands.wanted[i]
            if taken[slot] < 2 * need[slot]:  # a slot no longer wanted (or given up) is not rendered
                batch.append(i)
                taken[slot] += 1
        rendered += taken
        jobs = [(world, seed, task, i, float(cands.lat[i]), float(cands.lon[i]), int(cands.year[i]),
                 int(cands.month[i]), source.chip_size, months, kind.s2_bands, kind.with_s1) for i in batch]
        for i, chip in zip(batch, mapper(render_chip, jobs)):
            label = (pixel_labels(task, chip["codes"]) if kind.segmentation
                     else chip_label(task, chip["codes"], int(cands.wanted[i])))
            slot = cands.partition[i], cands.wanted[i]
            if label is None or (not kind.segmentation and label == IGNORE_LABEL) or accepted[slot] >= quota[slot]:
                continue
            if _too_close(cands.lat[i], cands.lon[i], where, spacing_km):
                continue
            accepted[slot] += 1
            chosen.append(i)
            where.append((float(cands.lat[i]), float(cands.lon[i])))
            results.append((chip, label))
    if not chosen:
        raise InputDataError(f"tasks.{task}", "the sample world gave no chip of any class in the study's AOIs",
                             "Widen the AOIs in data/inputs/aois.csv or lower tasks.min_site_distance_km")
    short = {f"{PARTITIONS[p]}/{kind.class_names[c] if not kind.segmentation else 'patch'}": int(quota[p, c] - accepted[p, c])
             for p, c in zip(*np.nonzero(accepted < quota))}
    if short:
        log.warning("sample-%s: the sample world gave fewer chips than asked for: %s missing", task, short)
    log.info("sample-%s: %d chips kept of %d rendered", task, len(chosen), int(rendered.sum()))
    order = np.argsort(chosen, kind="stable")                                   # candidate order: stable output
    return cands, [chosen[k] for k in order], [results[k] for k in order]


def sample_task(world, study, tp: TasksParams, seed: int, task: str, pool=None) -> TaskData:
    """The sample task ``task`` in memory (TaskData), before it is written in its real format."""
    kind = _kinds()[task]
    cands, chosen, chips = select_chips(world, study, tp, seed, task, pool)
    series = task == "pastis"
    images = {"s2": np.stack([c["s2"] if series else c["s2"][0] for c, _ in chips])}  # [N, (T,) C, H, W]
    dates = {"s2": np.stack([c["s2_dates"] for c, _ in chips])}                     # [N, T]
    bands = {"s2": kind.s2_bands}
    if kind.with_s1:
        images["s1"] = np.stack([c["s1"] if series else c["s1"][0] for c, _ in chips])
        dates["s1"] = np.stack([c["s1_dates"] for c, _ in chips])
        bands["s1"] = S1.band_order
    return TaskData(
        name=kind.name, kind="segmentation" if kind.segmentation else "classification", class_names=kind.class_names,
        images=images, bands=bands, labels=np.stack([np.asarray(label, np.int64) for _, label in chips]),
        partition=np.array([PARTITIONS[p] for p in cands.partition[chosen]]),
        sample_ids=tuple(sample_id(task, i) for i in range(len(chosen))), dates=dates,
        centres=np.stack([cands.lat[chosen], cands.lon[chosen]], axis=1), folds=cands.fold[chosen] if series else None)


def sample_id(task: str, index: int) -> str:
    """The ``index``-th sample's name, as the task's format names samples."""
    from terrapipe.data.tasks import mados, pastis

    return {"pastis": pastis.sample_id, "mados": mados.sample_id}.get(task, lambda i: f"{task}_{i:05d}")(index)


def fetch_sample_task(params, study, task: str, out_dir: Path, pool=None) -> TaskData:
    """Generate task ``task`` from the sample world into ``out_dir`` in its real benchmark's format."""
    import importlib

    from terrapipe.data.tasks import FORMAT_OF, tasks_params
    from terrapipe.sources.world import World

    tp = tasks_params(params)
    data = sample_task(World(params.seed), study, tp, params.seed, task, pool)
    importlib.import_module(f"terrapipe.data.tasks.{FORMAT_OF[task]}").write(data, out_dir)
    return data

