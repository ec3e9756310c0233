"""Sample backend of fetch_sentinel: S2 L2A, S1 and Landsat chips plus WorldCover/SRTM maps per site.

Raw layout (the STAC backend writes exactly the same):

    scenes.csv                              site_id, sensor, date, path, scene_id, source
    <site_id>/<sensor>/<YYYY-MM-DD>.tif     one acquisition per month; a cloudy month has no file
    <site_id>/worldcover.tif, srtm.tif      static maps

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

from terrapipe.grid import PIXEL_M, SiteGrid, site_grid
from terrapipe.modalities import LANDSAT, S1, S2, SRTM, WORLDCOVER, Band
from terrapipe.sources.streams import rng as stream
from terrapipe.sources.world import World, lonlat_to_xyz

# Landsat reflective bands taken from the S2-like reflectance of the same surface.
_LANDSAT_FROM_S2 = {"B1": "B01", "B2": "B02", "B3": "B03", "B4": "B04", "B5": "B8A", "B6": "B11", "B7": "B12"}
# The layout's definitions, all from the modality registry.
S2_SCALE, S2_OFFSET = S2.bands[0].scale, S2.bands[0].offset  # reflectance = DN * scale + offset (baseline >= 04.00)
LANDSAT_BANDS, LANDSAT_SCALES, LANDSAT_OFFSETS = list(LANDSAT.bands), LANDSAT.scales, LANDSAT.offsets
S1_BANDS, S1_NODATA, SRTM_NODATA = list(S1.bands), S1.nodata, SRTM.nodata
WORLDCOVER_BAND, SRTM_BAND = WORLDCOVER.bands[0], SRTM.bands[0]
# File-level tags of each product (every backend adds DATETIME and SITE_ID).
SENSOR_TAGS = {m.key: dict(m.tags) for m in (S2, S1, LANDSAT)}
MAP_TAGS = {m.key: dict(m.tags) for m in (WORLDCOVER, SRTM)}


def native_resolution(field: np.ndarray, native_m: float) -> np.ndarray:
    """Average (..., H, W) over native-resolution cells and spread back onto the 10 m grid."""
    factor = max(1, int(round(native_m / PIXEL_M)))
    if factor == 1:
        return field
    h, w = field.shape[-2:]
    ph, pw = -h % factor, -w % factor
    padded = np.pad(field, [(0, 0)] * (field.ndim - 2) + [(0, ph), (0, pw)], mode="edge")
    blocks = padded.reshape(padded.shape[:-2] + (padded.shape[-2] // factor, factor, padded.shape[-1] // factor, factor))
    coarse = blocks.mean(axis=(-3, -1))
    return np.repeat(np.repeat(coarse, factor, axis=-2), factor, axis=-1)[..., :h, :w]


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


class _SiteSurface:
    """Land cover, elevation and monthly greenness of one site's chip: shared by all its sensors."""

    def __init__(self, world: World, grid: SiteGrid, site_lat: float, site_lon: float, months):
        lat, lon = grid.pixel_lonlat()
        self.cover = world.land_cover(lat.ravel(), lon.ravel()).reshape(lat.shape)
        self.elevation = world.elevation(lat, lon)
        years = sorted({m.year for m in months})
        climate = {}
        for year in years:  # the site's climate for exactly its months (which may span two years)
            in_year = [m.month for m in months if m.year == year]
            c = world.monthly_climate([site_lat], [site_lon], year, in_year)
            for k, v in c.items():
                climate.setdefault(k, []).append(v[0])
        self.climate = {k: np.concatenate(v) for k, v in climate.items()}
        phase = world.noise("crop-phase", lonlat_to_xyz(lat, lon), [2e3])
        self.greenness = world.greenness(self.cover, self.climate, np.round(2.5 * phase).astype(int))


def _render_s2(surface: _SiteSurface, t: int, rng, bands: list[Band]) -> np.ndarray:
    """L2A DN (uint16) of month ``t``, each band averaged over its native resolution."""
    refl = World.s2_reflectance(surface.cover, surface.greenness[t:t + 1], rng)
    dn = np.stack([native_resolution(refl[b.name][0], b.native_m) for b in bands])
    return np.clip(np.round((dn - S2_OFFSET) / S2_SCALE), 1, 65535).astype(np.uint16)


def _render_s1(surface: _SiteSurface, t: int, rng) -> np.ndarray:
    sigma = World.s1_backscatter(surface.cover, surface.greenness[t:t + 1], rng)
    return np.stack([sigma["vv"][0], sigma["vh"][0]]).astype(np.float32)


def _render_landsat(surface: _SiteSurface, t: int, rng) -> np.ndarray:
    """Collection 2 Level-2 DN (uint16): reflective bands from the surface, thermal from air temperature."""
    refl = World.s2_reflectance(surface.cover, surface.greenness[t:t + 1], rng)
    layers = {ls: refl[s2][0] for ls, s2 in _LANDSAT_FROM_S2.items()}
    layers["B8"] = (refl["B02"][0] + refl["B03"][0] + refl["B04"][0]) / 3
    layers["B9"] = np.full(surface.cover.shape, 0.005) * rng.lognormal(0, 0.2, surface.cover.shape)
    bare = np.isin(surface.cover, [50, 60]).astype(float)
    water = (surface.cover == 80).astype(float)
    surface_t = (surface.climate["t2m"][t] + 4.0 * bare * (1 - surface.greenness[t]) - 2.0 * water
                 + rng.normal(0, 0.5, surface.cover.shape))
    layers["B10"], layers["B11"] = surface_t, surface_t - 0.8
    dn = [np.round((native_resolution(layers[b.name], b.native_m) - offset) / scale)
          for b, scale, offset in zip(LANDSAT_BANDS, LANDSAT_SCALES, LANDSAT_OFFSETS)]
    return np.clip(np.stack(dn), 1, 65535).astype(np.uint16)


def _write_series(out: Path, grid: SiteGrid, site_id: str, sensor: str, dates, render, bands: list[Band],
                  nodata, rng, edge_prob: float, overpass: str, tags: dict, scales=None, offsets=None) -> list[tuple]:
    """One GeoTIFF per acquisition: render the month, cut a swath edge sometimes, write, list it."""
    rows = []
    for t, date in dates:
        data = render(t)
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
    surface = _SiteSurface(world, grid, site.latitude, site.longitude, months)
    write_tif(out / site.site_id / "worldcover.tif", grid, surface.cover[None], [WORLDCOVER_BAND], 0,
              tags={**MAP_TAGS["worldcover"], "SITE_ID": site.site_id})
    srtm = np.round(native_resolution(surface.elevation, SRTM_BAND.native_m)).astype(np.int16)[None]
    write_tif(out / site.site_id / "srtm.tif", grid, srtm, [SRTM_BAND], SRTM_NODATA,
              tags={**MAP_TAGS["srtm"], "SITE_ID": site.site_id})
    s2_bands = list(S2.select(sp.s2_bands))  # registry order, whatever order params.yaml lists
    formats = {  # sensor -> (gap probability, renderer, bands, nodata, overpass time, tags, scale/offset)
        "s2": (sp.sample.s2_gap_prob, lambda t, rng: _render_s2(surface, t, rng, s2_bands), s2_bands, 0, "10:30:00",
               SENSOR_TAGS["s2"], {"scales": [S2_SCALE] * len(s2_bands), "offsets": [S2_OFFSET] * len(s2_bands)}),
        "s1": (sp.sample.s1_gap_prob, lambda t, rng: _render_s1(surface, t, rng), S1_BANDS, S1_NODATA, "06:00:00",
               SENSOR_TAGS["s1"], {}),
        "landsat": (sp.sample.landsat_gap_prob, lambda t, rng: _render_landsat(surface, t, rng), LANDSAT_BANDS, 0,
                    "10:00:00", SENSOR_TAGS["landsat"], {"scales": LANDSAT_SCALES, "offsets": LANDSAT_OFFSETS}),
    }
    rows = []
    for sensor in sp.sensors:
        gap_prob, render, bands, nodata, overpass, tags, scaling = formats[sensor]
        rng = stream(params.seed, site.site_id, sensor)
        dates = _acquisition_dates(rng, months, gap_prob)
        rows += _write_series(out, grid, site.site_id, sensor, dates, lambda t, render=render, rng=rng: render(t, rng), bands, nodata, rng,
                              sp.sample.swath_edge_prob, overpass, tags, **scaling)
    return rows


def fetch_sentinel(params, study, out_dir: Path) -> None:
    """Generate every selected site's chips into ``out_dir`` and list them in scenes.csv."""
    from concurrent.futures import ThreadPoolExecutor

    import pandas as pd
    from tqdm import tqdm

    world = World(params.seed)
    sites = list(study.sites.itertuples(index=False))
    with ThreadPoolExecutor(max_workers=2) as pool:  # numpy and GDAL release the GIL
        per_site = list(tqdm(pool.map(lambda s: write_site(out_dir, world, s, params), sites),
                             total=len(sites), desc="fetch_sentinel[sample]", unit="site", mininterval=2))
    rows = [{"site_id": site.site_id, "sensor": sensor, "date": f"{date:%Y-%m-%d}",
             "path": str(path.relative_to(out_dir)), "scene_id": f"sample:{sensor}:{site.site_id}:{date:%Y%m%d}",
             "source": "sample"}
            for site, site_rows in zip(sites, per_site) for path, sensor, date in site_rows]
    pd.DataFrame(rows, columns=["site_id", "sensor", "date", "path", "scene_id", "source"]).to_csv(
        out_dir / "scenes.csv", index=False)
