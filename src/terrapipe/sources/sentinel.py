"""STAC backend of fetch_sentinel: search a STAC API, keep one scene per month, read its COG assets onto each
site's 10 m UTM grid, and write exactly the raw layout of terrapipe.sources.sample_imagery.

Same files, band names and order, dtypes, nodata, scale/offset and tags as the sample writer (plus the
provenance tags STAC_COLLECTION and STAC_ITEM); scenes.csv lists the chosen item ids (source ``stac``).
DVC tracks scenes.csv, so which scenes a fetch used stays on record.

- Search: one POST /search per site and product: bbox = the chip in lon/lat, datetime = the site's months,
  and for S2 and Landsat ``eo:cloud_cover < max_cloud_cover`` through the filter (CQL2) or query extension,
  whichever the API advertises (checked again here, so an API with neither gives the same result).
- One scene per month: the least cloudy; ties (and S1, which has no cloud cover) go to the earliest, then
  to the smaller item id. A month without a scene has no file, as a cloudy month in the sample source.
- Reads: each band asset through GDAL's /vsicurl/ (HTTP range requests), warped by a WarpedVRT onto the
  site grid, so only the blocks under the chip are fetched. Bilinear for reflectance, backscatter and
  elevation; nearest for the WorldCover classes. Single-band assets, band 1.
- Units: S2 and Landsat DN as delivered. S2 DN carry +1000 from processing baseline 04.00 unless the item
  says ``earthsearch:boa_offset_applied``; the file then records offset -0.1 and BOA_ADD_OFFSET -1000,
  else 0 and 0 (no baseline property: decided by the date of the change, 2022-01-25). S1 assets are taken
  as linear power and converted to dB, unless their ``raster:bands`` unit says dB.
- Maps: WorldCover and elevation come from sources.sentinel.stac.collections.worldcover / .srtm on the
  same API, every tile under the chip mosaicked, newest item first. Earth Search v1 has
  cop-dem-glo-30 but no esa-worldcover; Planetary Computer has both but signs its asset URLs (see below).
- Bands, dtypes, nodata, scale/offset and tags come from the modality registry (terrapipe.modalities).
- Asset keys: each registry band's ``stac_asset`` is its Earth Search v1 asset key, falling back to the
  band name itself (Planetary Computer's S2 band-named assets). A band an item lacks is written as nodata, with a
  warning: Landsat Collection 2 Level-2 has no B8 (pan), B9 (cirrus) or B11 (second thermal) asset.
- Failures: HTTP 5xx/429, resets, timeouts and truncated reads are retried with bounded exponential
  backoff (sources.sentinel.stac.retry) around each search and each whole scene read; GDAL's own HTTP
  retries are kept short inside. 401/403/404 stop at once with what to change. Files are written into a
  private folder and moved into ``out_dir`` only when every read succeeded: a failed fetch leaves nothing.
"""
from __future__ import annotations

import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from terrapipe.errors import TerrapipeError
from terrapipe.grid import PIXEL_M, SiteGrid, site_grid
from terrapipe.modalities import LANDSAT, MAPS, S1, S2, SRTM, WORLDCOVER, Band, modality
from terrapipe.sources.sample_imagery import write_tif
from terrapipe.sources.transfer import (
    TRANSIENT_STATUS,
    PermanentError,
    RetryPolicy,
    TransientError,
    classify_status,
    with_retries,
)

log = logging.getLogger("terrapipe.sources.sentinel")

OPTICAL = ("s2", "landsat")
S2_OFFSET_BASELINE, S2_OFFSET_SINCE = 4.0, "2022-01-25"
READ_WORKERS = 4  # concurrent searches / scene reads: the work is network latency, not CPU
# GDAL's own HTTP retries stay short: with_retries around the whole read is the budget that counts.
GDAL_HTTP_RETRIES = 2
_HTTP_STATUS = re.compile(r"HTTP response code: (\d{3})")
_NO_CREDENTIALS = re.compile(r"credential|AWS_[A-Z_]+", re.IGNORECASE)  # GDAL on s3:// without an account


@dataclass(frozen=True)
class Product:
    """How one raw-layout product is read from STAC assets and written."""
    bands: tuple[Band, ...]
    dtype: str
    nodata: float
    resampling: str
    tags: dict
    scales: tuple | None = None
    offsets: tuple | None = None


@dataclass(frozen=True)
class Job:
    """One output file: a scene (one item) or a map (the tiles under the chip, newest first)."""
    site_id: str
    grid: SiteGrid
    product: str
    collection: str
    items: tuple
    path: str


def products(s2_bands) -> dict[str, Product]:
    """Every product's layout from the modality registry, S2 cut to sources.sentinel.s2_bands."""
    return {m.key: Product(m.bands, m.dtype, m.nodata, "nearest" if m.categorical else "bilinear", dict(m.tags),
                           m.scales, m.offsets)
            for m in (S2.subset(s2_bands), S1, LANDSAT, WORLDCOVER, SRTM)}


def collection_settings(sentinel) -> dict[str, tuple[str, str]]:
    """product -> (collection id, where the user sets it) for the configured sensors and the maps."""
    return {p: (getattr(sentinel.stac.collections, p), f"sources.sentinel.stac.collections.{p}")
            for p in (*sentinel.sensors, *MAPS)}


# -- choosing scenes (pure) -----------------------------------------------------------------------
def asset_key_of(product: str, band: str) -> str:
    """The Earth Search v1 asset key of ``band`` (the registry's ``Band.stac_asset``), else the band name."""
    return modality(product).band(band).stac_asset or band


def asset_key(item: dict, product: str, band: str) -> str | None:
    """The item's asset holding ``band``: the Earth Search v1 key, else the band name, else None."""
    for key in (asset_key_of(product, band), band):
        if key in item["assets"]:
            return key
    return None


def _when(item: dict):
    import pandas as pd
    props = item["properties"]
    return pd.Timestamp(props.get("datetime") or props.get("end_datetime") or props.get("start_datetime"))


def pick_monthly(items: list[dict], months, max_cloud: float | None) -> list[dict]:
    """One item per month of ``months``: least cloudy below ``max_cloud`` (None: no cloud cover, e.g. radar),
    ties to the earliest, then the smaller id; sorted by time. Months without a candidate are left out."""
    wanted = {(m.year, m.month) for m in months}
    best = {}
    for item in items:
        when = _when(item)
        cloud = item["properties"].get("eo:cloud_cover")
        if (when.year, when.month) not in wanted or (max_cloud is not None and (cloud is None or cloud >= max_cloud)):
            continue
        key = (cloud if max_cloud is not None else 0.0, when, item["id"])
        month = (when.year, when.month)
        if month not in best or key < best[month][0]:
            best[month] = (key, item)
    return [best[m][1] for m in sorted(best)]


def scene_metadata(job: Job, product: Product) -> tuple[dict, tuple | None, tuple | None]:
    """File tags, scales and offsets of one output, from the layout and the item's properties."""
    item = job.items[0] if job.items else None
    tags, offsets = dict(product.tags), product.offsets
    if job.product == "s2":
        props = item["properties"]
        baseline = props.get("s2:processing_baseline")
        modern = (float(baseline) >= S2_OFFSET_BASELINE if baseline is not None
                  else f"{_when(item):%Y-%m-%d}" >= S2_OFFSET_SINCE)
        in_dn = modern and not props.get("earthsearch:boa_offset_applied", False)
        tags.update(PROCESSING_BASELINE=baseline or "unknown", BOA_ADD_OFFSET=-1000 if in_dn else 0)
        offsets = product.offsets if in_dn else (0.0,) * len(product.bands)
    if job.product == "s1" and item["properties"].get("sar:instrument_mode"):
        tags["MODE"] = item["properties"]["sar:instrument_mode"]
    if job.product not in MAPS:
        tags["DATETIME"] = f"{_when(item):%Y-%m-%dT%H:%M:%S}Z"
    tags.update(SITE_ID=job.site_id, STAC_COLLECTION=job.collection,
                STAC_ITEM=",".join(i["id"] for i in job.items))
    return tags, product.scales, offsets


# -- the STAC API -------------------------------------------------------------------------------------
def _api_error(exc, where: str) -> TerrapipeError:
    """A pystac-client APIError as transient (no status: reset, timeout; 5xx) or permanent, with a fix."""
    status = getattr(exc, "status_code", None)
    if status is None or status in TRANSIENT_STATUS:  # with_retries names ``where``
        return TransientError(str(exc) if status is None else f"HTTP {status} (server busy or failing)")
    if status in (401, 403):
        return PermanentError(f"{where}: HTTP {status}, access refused. terrapipe sends no credentials to STAC "
                              "APIs: set sources.sentinel.stac.api_url to a public one (Earth Search v1: "
                              "https://earth-search.aws.element84.com/v1)")
    return classify_status(status, where, str(exc)) or PermanentError(f"{where}: HTTP {status}")


def _call(action, where: str, policy: RetryPolicy):
    """``action()`` against the API, retried on transient failures."""
    from pystac_client.exceptions import APIError

    def attempt():
        try:
            return action()
        except APIError as exc:
            raise _api_error(exc, where) from None
    return with_retries(attempt, where, policy)


def open_client(api_url: str, policy: RetryPolicy):
    """The pystac-client Client of ``api_url`` (its own urllib3 retries off: one retry policy, ours)."""
    import pystac
    from pystac_client import Client
    from pystac_client.stac_api_io import StacApiIO

    where = f"STAC API {api_url} (sources.sentinel.stac.api_url)"
    try:
        return _call(lambda: Client.open(api_url, stac_io=StacApiIO(max_retries=None), timeout=(20, 120)),
                     where, policy)
    except (ValueError, pystac.STACTypeError) as exc:
        raise PermanentError(f"{where}: not a STAC API ({exc}). Check the URL") from None


def require_collections(client, settings: dict[str, tuple[str, str]], policy: RetryPolicy) -> None:
    """Fail before any read if a collection is missing, listing the ones the API has."""
    for collection, setting in dict(settings.values()).items():
        where = f"STAC collection {collection!r} ({setting})"
        if _call(lambda c=collection: client.get_collection(c), where, policy) is None:
            available = _call(lambda: sorted(c.id for c in client.get_collections()), "list collections", policy)
            raise PermanentError(f"{where}: not found at {client.self_href}. Set {setting} to one of: "
                                 f"{', '.join(available) or '(the API lists none)'}")


def search(client, collection: str, bbox, months, max_cloud: float | None, policy: RetryPolicy) -> list[dict]:
    """Every item of ``collection`` over ``bbox`` (in ``months`` if given; cloud-filtered if ``max_cloud``)."""
    from pystac_client.conformance import ConformanceClasses

    kwargs = {"collections": [collection], "bbox": list(bbox), "limit": 100}
    if months:
        kwargs["datetime"] = f"{months[0]:%Y-%m}/{months[-1]:%Y-%m}"
    if max_cloud is not None and client.conforms_to(ConformanceClasses.FILTER):
        kwargs["filter"] = {"op": "<", "args": [{"property": "eo:cloud_cover"}, max_cloud]}
    elif max_cloud is not None and client.conforms_to(ConformanceClasses.QUERY):
        kwargs["query"] = {"eo:cloud_cover": {"lt": max_cloud}}
    where = f"search {collection} over {[round(v, 4) for v in bbox]}"
    try:
        return _call(lambda: list(client.search(**kwargs).items_as_dicts()), where, policy)
    except NotImplementedError as exc:
        raise PermanentError(f"{where}: {client.self_href} has no item search ({exc}). Set "
                             "sources.sentinel.stac.api_url to a STAC API, not a static catalog") from None


def lonlat_bounds(grid: SiteGrid) -> tuple[float, float, float, float]:
    """The chip's west, south, east, north in degrees (the search bbox)."""
    from rasterio.warp import transform_bounds
    extent = grid.size * PIXEL_M
    return transform_bounds(f"EPSG:{grid.epsg}", "EPSG:4326", grid.x0, grid.y0 - extent, grid.x0 + extent, grid.y0)


def plan_site(client, site, params, settings, policy: RetryPolicy) -> list[Job]:
    """Search one site's products; return the files to write (maps first, then scenes by sensor and date)."""
    from terrapipe.study import site_months

    sp = params.sources.sentinel
    grid = site_grid(site.latitude, site.longitude, sp.chip_size)
    months = site_months(site.start_date, params.study.months)
    bbox = lonlat_bounds(grid)
    jobs = []
    for product in MAPS:
        collection = settings[product][0]
        tiles = sorted(search(client, collection, bbox, None, None, policy), key=lambda i: i["id"])
        tiles = sorted(tiles, key=_when, reverse=True)  # newest first; equal times by id
        if not tiles:
            log.warning("site %s: no %s item covers the chip; %s.tif is all nodata", site.site_id, collection, product)
        jobs.append(Job(site.site_id, grid, product, collection, tuple(tiles), f"{site.site_id}/{product}.tif"))
    for sensor in sp.sensors:
        collection = settings[sensor][0]
        max_cloud = sp.stac.max_cloud_cover if sensor in OPTICAL else None
        chosen = pick_monthly(search(client, collection, bbox, months, max_cloud, policy), months, max_cloud)
        if not chosen:
            log.info("site %s: no %s scene in %s..%s", site.site_id, collection, f"{months[0]:%Y-%m}",
                     f"{months[-1]:%Y-%m}")
        jobs += [Job(site.site_id, grid, sensor, collection, (item,),
                     f"{site.site_id}/{sensor}/{_when(item):%Y-%m-%d}.tif") for item in chosen]
    return jobs


# -- reading assets -----------------------------------------------------------------------------------
def _public(href: str) -> str:
    return href.split("?", 1)[0]  # a signed URL's query string holds its token


def _read_error(exc, href: str, key: str, item_id: str, setting: str) -> TerrapipeError:
    """A failed GDAL read as transient (5xx, dropped or short body) or permanent, with what to change."""
    match = _HTTP_STATUS.search(str(exc))
    status = int(match.group(1)) if match else None
    where = f"asset {key!r} of STAC item {item_id} ({_public(href)})"
    if status in (401, 403) or (status is None and _NO_CREDENTIALS.search(str(exc))):
        http = f"HTTP {status}, " if status else ""
        return PermanentError(f"{where}: {http}access refused. This API's assets need signed URLs or "
                              "credentials (requester-pays S3, SAS tokens) that terrapipe does not add: set "
                              "sources.sentinel.stac.api_url to an API with public COG assets (Earth Search v1), or "
                              "give GDAL credentials through its environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY "
                              "and AWS_REQUEST_PAYER=requester, or GDAL_HTTP_HEADERS)")
    if status == 404:
        return PermanentError(f"{where}: HTTP 404, the API lists an asset its storage does not have. Re-run later, "
                              f"or choose another collection ({setting})")
    if status is not None and status not in TRANSIENT_STATUS:
        return classify_status(status, _public(href))
    return TransientError(f"asset {key!r}: {exc}")  # with_retries names the file and the item


def warp(href: str, grid: SiteGrid, resampling: str, policy: RetryPolicy) -> np.ma.MaskedArray:
    """Band 1 of a (remote) raster on the site grid, float64, masked where the source has no data."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    env = {"GDAL_HTTP_MAX_RETRY": GDAL_HTTP_RETRIES, "GDAL_HTTP_RETRY_DELAY": policy.base_delay,
           "GDAL_HTTP_TIMEOUT": 120, "GDAL_HTTP_CONNECTTIMEOUT": 20, "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
           # keep neither blocks nor a failure of this file in GDAL's cache: a retry must really re-read
           "CPL_VSIL_CURL_NON_CACHED": f"/vsicurl/{href}"}
    with rasterio.Env(**env), rasterio.open(href) as src, \
            WarpedVRT(src, crs=f"EPSG:{grid.epsg}", transform=grid.transform, width=grid.size, height=grid.size,
                      resampling=Resampling[resampling], add_alpha=True) as vrt:
        # the alpha band marks what the source covers with data, whether or not it declares a nodata value
        values, alpha = vrt.read([1, vrt.count])
    return np.ma.masked_array(values.astype(np.float64), alpha == 0)


def read_job(job: Job, product: Product, setting: str, policy: RetryPolicy) -> np.ndarray:
    """The (bands, H, W) array of one output in the layout's dtype, nodata where no asset has data."""
    from rasterio.errors import RasterioIOError

    out = np.empty((len(product.bands), job.grid.size, job.grid.size), product.dtype)
    for b, band in enumerate(product.bands):
        values = np.ma.masked_all((job.grid.size, job.grid.size), np.float64)
        for item in job.items:
            key = asset_key(item, job.product, band.name)
            if key is None:
                continue
            asset = item["assets"][key]
            try:
                layer = warp(asset["href"], job.grid, product.resampling, policy)
            except RasterioIOError as exc:
                raise _read_error(exc, asset["href"], key, item["id"], setting) from None
            if job.product == "s1" and not _is_db(asset):
                layer = 10.0 * np.ma.log10(np.ma.masked_less_equal(layer, 0.0))
            fill = np.ma.getmaskarray(values) & ~np.ma.getmaskarray(layer)
            values[fill] = layer[fill]
            if not np.ma.getmaskarray(values).any():
                break
        out[b] = _to_dtype(values, product)
    return out


def _is_db(asset: dict) -> bool:
    return any(str(b.get("unit", "")).lower() == "db" for b in asset.get("raster:bands", []))


def _to_dtype(values: np.ma.MaskedArray, product: Product) -> np.ndarray:
    dtype = np.dtype(product.dtype)
    data = values.filled(np.nan)
    if dtype.kind in "iu":
        data = np.clip(np.round(data), np.iinfo(dtype).min, np.iinfo(dtype).max)
    return np.where(np.ma.getmaskarray(values), product.nodata, data).astype(dtype)


def warn_missing_assets(jobs: list[Job], layouts: dict[str, Product]) -> None:
    """One warning per collection naming the bands its items lack (written as nodata)."""
    missing: dict[str, dict[str, list[str]]] = {}
    for job in jobs:
        for item in job.items:
            for band in layouts[job.product].bands:
                if asset_key(item, job.product, band.name) is None:
                    missing.setdefault(job.collection, {}).setdefault(band.name, []).append(item["id"])
    for collection, bands in missing.items():
        log.warning("%s: %s; written as nodata", collection, "; ".join(
            f"{len(ids)} item(s) have no {band} asset (e.g. {ids[0]})" for band, ids in bands.items()))


def write_job(job: Job, product: Product, setting: str, policy: RetryPolicy, work: Path) -> None:
    """Read one output (the whole read retried as one unit) and write it under ``work``."""
    data = with_retries(lambda: read_job(job, product, setting, policy),
                        f"read {job.path} from {job.collection} {','.join(i['id'] for i in job.items)}", policy)
    tags, scales, offsets = scene_metadata(job, product)
    write_tif(work / job.path, job.grid, data, list(product.bands), product.nodata, scales=scales,
              offsets=offsets, tags=tags)


def _parallel(fn, inputs: list, desc: str) -> list:
    """``[fn(x) for x in inputs]`` on READ_WORKERS threads, in order; the first error cancels what has not started."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    with ThreadPoolExecutor(max_workers=READ_WORKERS) as pool:
        futures = [pool.submit(fn, x) for x in inputs]
        try:
            return [f.result() for f in tqdm(futures, desc=desc, mininterval=2)]
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def fetch_stac(params, study, out_dir: Path) -> None:
    """Search, choose and read every selected site's scenes and maps into ``out_dir`` (the sample layout)."""
    import pandas as pd

    from terrapipe.atomic import atomic_path

    sp = params.sources.sentinel
    policy = RetryPolicy.from_params(sp.stac.retry)
    settings = collection_settings(sp)
    client = open_client(sp.stac.api_url, policy)
    require_collections(client, settings, policy)
    layouts = products(sp.s2_bands)
    sites = list(study.sites.itertuples(index=False))
    jobs = [job for site_jobs in _parallel(lambda s: plan_site(client, s, params, settings, policy), sites,
                                           "fetch_sentinel[stac] search") for job in site_jobs]
    warn_missing_assets(jobs, layouts)
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix=".stac-", dir=out_dir) as work:
        _parallel(lambda j: write_job(j, layouts[j.product], settings[j.product][1], policy, Path(work)), jobs,
                  "fetch_sentinel[stac] read")
        for path in sorted(Path(work).rglob("*.tif")):
            target = out_dir / path.relative_to(work)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
    rows = [{"site_id": j.site_id, "sensor": j.product, "date": f"{_when(j.items[0]):%Y-%m-%d}", "path": j.path,
             "scene_id": j.items[0]["id"], "source": "stac"} for j in jobs if j.product in sp.sensors]
    with atomic_path(out_dir / "scenes.csv") as tmp:
        pd.DataFrame(rows, columns=["site_id", "sensor", "date", "path", "scene_id", "source"]).to_csv(tmp, index=False)
