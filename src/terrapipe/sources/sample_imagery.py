"""Sample backend of fetch_sentinel: S2 L2A, S1 and Landsat chips plus WorldCover/SRTM maps per site.

Raw layout (the STAC backend writes exactly the same):

    scenes.csv                              site_id, sensor, date, path, scene_id, source
    <site_id>/<sensor>/<YYYY-MM-DD>.tif     one acquisition per month; a cloudy month has no file
    <site_id>/worldcover.tif, srtm.tif      static maps
    <site_id>/land_use.tif                  sample world only: the land-use label raster (ground truth)

Every raster is on the site's 10 m UTM grid (chip_size x chip_size, origin snapped to 60 m so the
20/30/60 m native grids nest), carries its CRS, transform, nodata, band descriptions, native
resolution tags and the provider's scale/offset, in the provider's units: S2 L2A DN (reflectance *
10000 + 1000 since processing baseline 04.00), S1 sigma0 in dB, Landsat Collection 2 Level-2 DN.
Band names and order (OlmoEarth's band_order), native resolutions, scalings, nodata and tags come
from the modality registry, terrapipe.modalities.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from terrapipe.grid import SiteGrid, site_grid
from terrapipe.modalities import LANDSAT, S1, S2, SRTM, WORLDCOVER, Band
from terrapipe.sources.chips import (
    SiteSurface,
    landsat_physical,
    native_resolution,
    s1_sigma0,
    s2_reflectance,
    site_surface,
)
from terrapipe.sources.landscape import LAND_USE_BAND, LAND_USE_FILE
from terrapipe.sources.streams import rng as stream
from terrapipe.sources.world import World

# The layout's definitions, all from the modality registry.
S2_SCALE, S2_OFFSET = S2.bands[0].scale, S2.bands[0].offset  # reflectance = DN * scale + offset (baseline >= 04.00)
LANDSAT_BANDS, LANDSAT_SCALES, LANDSAT_OFFSETS = list(LANDSAT.bands), LANDSAT.scales, LANDSAT.offsets
S1_BANDS, S1_NODATA, SRTM_NODATA = list(S1.bands), S1.nodata, SRTM.nodata
WORLDCOVER_BAND, SRTM_BAND = WORLDCOVER.bands[0], SRTM.bands[0]
# File-level tags of each product (every backend adds DATETIME and SITE_ID).
SENSOR_TAGS = {m.key: dict(m.tags) for m in (S2, S1, LANDSAT)}
MAP_TAGS = {m.key: dict(m.tags) for m in (WORLDCOVER, SRTM)}


def _acquisition_dates(rng, months, gap_prob: float) -> list:
    """One acquisition per month (day drawn), dropping months lost to clouds."""
    import pandas as pd
    keep = rng.random(len(months)) >= gap_prob
    days = rng.integers(1, 29, len(months))
    return [(i, (m + pd.Timedelta(days=int(d) - 1))) for i, (m, d, k) in enumerate(zip(months, days, keep)) if k]


def _swath_edge(rng, size: int, prob: float) -> np.ndarray | None:
    """A diagonal no-data wedge, as at the edge of an orbit's swath (or None)."""
    if rng.random() >= prob:
        return None
    i, j = np.mgrid[0:size, 0:size]
    return (i + j) > rng.uniform(1.2, 1.8) * size


def write_tif(path: Path, grid: SiteGrid, data: np.ndarray, bands: list[Band], nodata, *,
              scales=None, offsets=None, tags: dict | None = None) -> None:
    """One raw-layout GeoTIFF on the site grid: band names, native-resolution tags, scale/offset (all backends)."""
    import rasterio

    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {"driver": "GTiff", "height": grid.size, "width": grid.size, "count": len(bands),
               "dtype": data.dtype.name, "crs": f"EPSG:{grid.epsg}", "transform": grid.transform,
               "nodata": nodata, "compress": "deflate", "interleave": "band"}
    if data.dtype.kind in "iu":
        profile["predictor"] = 2
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i, band in enumerate(bands, start=1):
            dst.set_band_description(i, band.name)
            band_tags = {"native_resolution_m": band.native_m}
            if band.wavelength_nm:
                band_tags["center_wavelength_nm"] = band.wavelength_nm
            dst.update_tags(i, **band_tags)
        if scales is not None:
            dst.scales, dst.offsets = tuple(scales), tuple(offsets)
        dst.update_tags(**(tags or {}))


def _to_dn(values: np.ndarray, scales, offsets) -> np.ndarray:
    """Physical values (C, H, W) -> provider DN (uint16), 0 kept for nodata."""
    scales, offsets = np.asarray(scales)[:, None, None], np.asarray(offsets)[:, None, None]
    return np.clip(np.round((values - offsets) / scales), 1, 65535).astype(np.uint16)


def _render_s2(surface: SiteSurface, t: int, rng, bands: list[Band]) -> np.ndarray:
    """L2A DN (uint16) of acquisition ``t``, each band averaged over its native resolution."""
    refl = s2_reflectance(surface, t, rng)
    physical = np.stack([native_resolution(refl[b.name], b.native_m) for b in bands])
    return _to_dn(physical, [b.scale for b in bands], [b.offset for b in bands])


def _render_s1(surface: SiteSurface, t: int, rng) -> np.ndarray:
    return s1_sigma0(surface, t, rng).astype(np.float32)


def _render_landsat(surface: SiteSurface, t: int, rng) -> np.ndarray:
    """Collection 2 Level-2 DN (uint16): reflective bands from the surface, thermal from surface temperature."""
    layers = landsat_physical(surface, t, rng)
    physical = np.stack([native_resolution(layers[b.name], b.native_m) for b in LANDSAT_BANDS])
    return _to_dn(physical, LANDSAT_SCALES, LANDSAT_OFFSETS)


def _write_series(out: Path, grid: SiteGrid, site_id: str, sensor: str, dates, render, bands: list[Band],
                  nodata, rng, edge_prob: float, overpass: str, tags: dict, scales=None, offsets=None) -> list[tuple]:
    """One GeoTIFF per acquisition: render the month, cut a swath edge sometimes, write, list it."""
    rows = []
    for t, date in dates:
        data = render(t, rng)
        edge = _swath_edge(rng, grid.size, edge_prob)
        if edge is not None:
            data[:, edge] = nodata
        path = out / site_id / sensor / f"{date:%Y-%m-%d}.tif"
        write_tif(path, grid, data, bands, nodata, scales=scales, offsets=offsets,
                  tags={**tags, "DATETIME": f"{date:%Y-%m-%d}T{overpass}Z", "SITE_ID": site_id})
        rows.append((path, sensor, date))
    return rows


def write_site(out: Path, world: World, site, params) -> list[tuple]:
    """Write every raster of one site; return (path, sensor, date) rows for scenes.csv."""
    from terrapipe.study import site_months

    sp = params.sources.sentinel
    grid = site_grid(site.latitude, site.longitude, sp.chip_size)
    months = site_months(site.start_date, params.study.months)
    surface = site_surface(world, grid, site.latitude, site.longitude, months)
    write_tif(out / site.site_id / "worldcover.tif", grid, surface.worldcover[None], [WORLDCOVER_BAND], 0,
              tags={**MAP_TAGS["worldcover"], "SITE_ID": site.site_id})
    write_tif(out / site.site_id / LAND_USE_FILE, grid, surface.land_use[None], [LAND_USE_BAND], 0,
              tags={"PRODUCT": "terrapipe sample-world land use (ground truth)", "YEAR": months[0].year,
                    "SITE_ID": site.site_id})
    srtm = np.round(native_resolution(surface.elevation, SRTM_BAND.native_m)).astype(np.int16)[None]
    write_tif(out / site.site_id / "srtm.tif", grid, srtm, [SRTM_BAND], SRTM_NODATA,
              tags={**MAP_TAGS["srtm"], "SITE_ID": site.site_id})
    s2_bands = list(S2.select(sp.s2_bands))  # registry order, whatever order params.yaml lists
    formats = {  # sensor -> (gap probability, renderer, bands, nodata, overpass time, tags, scale/offset)
        "s2": (sp.sample.s2_gap_prob, lambda t, rng: _render_s2(surface, t, rng, s2_bands), s2_bands,
               0, "10:30:00",
               SENSOR_TAGS["s2"], {"scales": [S2_SCALE] * len(s2_bands), "offsets": [S2_OFFSET] * len(s2_bands)}),
        "s1": (sp.sample.s1_gap_prob, lambda t, rng: _render_s1(surface, t, rng), S1_BANDS, S1_NODATA, "06:00:00",
               SENSOR_TAGS["s1"], {}),
        "landsat": (sp.sample.landsat_gap_prob, lambda t, rng: _render_landsat(surface, t, rng),
                    LANDSAT_BANDS, 0,
                    "10:00:00", SENSOR_TAGS["landsat"], {"scales": LANDSAT_SCALES, "offsets": LANDSAT_OFFSETS}),
    }
    rows = []
    for sensor in sp.sensors:
        gap_prob, render, bands, nodata, overpass, tags, scaling = formats[sensor]
        rng = stream(params.seed, site.site_id, sensor)
        dates = _acquisition_dates(rng, months, gap_prob)
        rows += _write_series(out, grid, site.site_id, sensor, dates, render, bands, nodata, rng,
                              sp.sample.swath_edge_prob, overpass, tags, **scaling)
    return rows


def _write_site_in_env(args) -> list[tuple]:
    """One site in a worker process, inside one GDAL environment (opening each file in its own costs ~5 ms)."""
    import rasterio

    out_dir, world, site, params = args
    with rasterio.Env():
        return write_site(out_dir, world, site, params)


SCENE_COLUMNS = ("site_id", "sensor", "date", "path", "scene_id", "source")


def fetch_sentinel(params, study, out_dir: Path) -> None:
    """Generate every selected site's chips into ``out_dir`` and list them in scenes.csv.

    Sites are independent (each has its own named random streams), so they are written by a pool of
    processes, one per core: the work is many small numpy operations that would hold the GIL in threads.
    scenes.csv is written as sites finish, in site order, so memory does not grow with the study.
    """
    import csv
    from types import SimpleNamespace

    from tqdm import tqdm

    from terrapipe.parallel import ordered_map, process_pool

    world = World(params.seed)
    sites = [SimpleNamespace(**row) for row in study.sites.to_dict("records")]
    with process_pool(params.compute) as pool, open(out_dir / "scenes.csv", "w", newline="") as listing:
        writer = csv.writer(listing, lineterminator="\n")
        writer.writerow(SCENE_COLUMNS)
        jobs = ordered_map(pool, _write_site_in_env, ((out_dir, world, site, params) for site in sites))
        for site, site_rows in zip(sites, tqdm(jobs, total=len(sites), desc="fetch_sentinel[sample]", unit="site",
                                               mininterval=2)):
            writer.writerows((site.site_id, sensor, f"{date:%Y-%m-%d}", str(path.relative_to(out_dir)),
                              f"sample:{sensor}:{site.site_id}:{date:%Y%m%d}", "sample")
                             for path, sensor, date in site_rows)
