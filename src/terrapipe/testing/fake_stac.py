"""A fake STAC API with COG assets on 127.0.0.1, made from the sample world: the STAC backend's test bed.

``FakeSTAC(tmp_dir, params, study)`` runs the sample source for the study with chips MARGIN_PX pixels
larger on every side, then publishes each acquisition as STAC items whose single-band COG assets lie on
the band's native grid (S2 10/20/60 m, Landsat 30/20/100 m as the sample world renders them) over that
larger footprint, and the maps in EPSG:4326 as ESA WorldCover and the Copernicus DEM are (the DEM split
into a west and an east tile). A fetch must window, resample, reproject and mosaic to get back onto the
chip grid, so its output can be compared with the sample chips (``source_of``).

Catalogue rules, so that ``expected`` says which items a correct fetch picks:
- every sample acquisition is a primary item; in each S2/Landsat series, every third one from the second
  on is overcast (cloud cover above sources.sentinel.stac.max_cloud_cover, its month's only item);
- a clear S2/Landsat primary has a cloudier duplicate on a neighbouring day (the day before when there is
  one: least cloudy must beat earliest) and every primary a same-cloud duplicate a minute later (ties go
  to the earliest); duplicates share the primary's assets, as overlapping tiles of one overpass do;
- S2 items rotate through processing baseline 05.10 (DN + 1000), 03.01 (DN) and 05.10 with
  ``earthsearch:boa_offset_applied`` (DN, offset already removed);
- S1 assets are linear power, every other item in dB with ``raster:bands`` unit "dB";
- asset keys are the registry bands' ``stac_asset`` (Earth Search v1, terrapipe.modalities), else the band name.

Endpoints: ``/``, ``/conformance``, ``/collections``, ``/collections/{id}``, ``/search`` (GET and POST:
collections, bbox, datetime, ``query`` and cql2-json ``filter`` on item properties, limit capped at
``page_size`` with a ``next`` link carrying a token). Faults: ``server.faults`` (per-path queues of
FakeHTTPServer), ``fail_search(n)``, ``asset_path(item_id, band)``; ``searches`` records every search request.
"""
from __future__ import annotations

import json
import zlib
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import numpy as np

from terrapipe.modalities import modality
from terrapipe.testing.servers import FakeHTTPServer, Faults, send_json

MARGIN_PX = 6  # 60 m: the larger chips stay on the 60 m-snapped grid of the real ones
COG = "image/tiff; application=geotiff; profile=cloud-optimized"
WORLDCOVER_DEG, DEM_DEG = 1 / 12000, 1 / 3600  # ESA WorldCover and Copernicus DEM GLO-30 pixel sizes
DEM_NODATA = -32767.0
_STAC = "https://api.stacspec.org/v1.0.0"
_PLATFORM = {"s2": ("sentinel-2", "sentinel-2a"), "s1": ("sentinel-1", "sentinel-1a"),
             "landsat": ("landsat", "landsat-9")}
_COMPARE = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal, "=": np.equal,
            "<>": np.not_equal, "lt": np.less, "lte": np.less_equal, "gt": np.greater, "gte": np.greater_equal,
            "eq": np.equal, "neq": np.not_equal}


class FakeSTAC:
    """Context manager: build the catalogue under ``tmp_dir`` and serve it; ``url`` is the API root."""

    def __init__(self, tmp_dir, params, study, *, extensions=("query", "filter"), page_size: int = 5):
        self.root = Path(tmp_dir)
        self.params, self.study = params, study
        self.extensions, self.page_size = tuple(extensions), page_size
        self.server = FakeHTTPServer(self.root / "www")
        self.collections: dict[str, dict] = {}
        self.items: dict[str, dict] = {}                        # id -> item, hrefs relative to the server
        self.expected: dict[tuple[str, str], list[str]] = {}    # (site, sensor) -> ids a correct fetch picks
        self.overcast: list[str] = []                           # primaries above the cloud threshold
        self.source_of: dict[str, Path] = {}                    # primary id -> the sample chip it was cut from
        self.searches: list[dict] = []                          # every search request, GET ones parsed
        stac = params.sources.sentinel.stac
        self._collection_of = {p: getattr(stac.collections, p) for p in ("s2", "s1", "landsat", "worldcover", "srtm")}

    @property
    def url(self) -> str:
        return self.server.url

    def __enter__(self):
        self._build()
        self._routes()
        self.server.__enter__()
        return self

    def __exit__(self, *exc):
        self.server.__exit__(*exc)

    # -- fault knobs ----------------------------------------------------------------------------------
    def fail_search(self, times: int, status: int = 503) -> None:
        """The next ``times`` requests to /search answer ``status``."""
        self.server.faults.add("/search", *[f"status:{status}"] * times)

    def asset_path(self, item_id: str, band: str) -> str:
        """The server path of ``band``'s asset of an item (for ``server.faults.add``)."""
        from terrapipe.sources.sentinel import asset_key
        item = self.items[item_id]
        product = next(p for p, c in self._collection_of.items() if c == item["collection"])
        return item["assets"][asset_key(item, product, band)]["href"]

    def reset_faults(self) -> None:
        self.server.faults = Faults()

    # -- building the catalogue -----------------------------------------------------------------------
    def _build(self) -> None:
        import pandas as pd

        from terrapipe.config import parse_params
        from terrapipe.sources.sample_imagery import fetch_sentinel

        raw = self.params.model_dump()
        raw["sources"]["sentinel"]["chip_size"] += 2 * MARGIN_PX
        world = self.root / "world"
        world.mkdir(parents=True)
        fetch_sentinel(parse_params(raw), self.study, world)
        for collection in self._collection_of.values():
            self.collections[collection] = {
                "type": "Collection", "stac_version": "1.0.0", "id": collection, "license": "proprietary",
                "description": f"fake {collection} made from the terrapipe sample world",
                "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]}, "temporal": {"interval": [[None, None]]}},
                "links": []}
        scenes = pd.read_csv(world / "scenes.csv", parse_dates=["date"])
        counters = {"s2": 0, "s1": 0}
        for (site_id, sensor), series in scenes.groupby(["site_id", "sensor"], sort=False):
            self.expected[(site_id, sensor)] = []
            for k, row in enumerate(series.itertuples()):
                self._publish_scene(world / row.path, site_id, sensor, k, counters)
        for site_id in self.study.sites["site_id"]:
            self._publish_maps(world / site_id, site_id)

    def _cloud(self, item_id: str, low: float, high: float) -> float:
        rng = np.random.default_rng([self.params.seed, zlib.crc32(item_id.encode())])
        return round(float(rng.uniform(low, high)), 2)

    def _publish_scene(self, chip: Path, site_id: str, sensor: str, k: int, counters: dict) -> None:
        import pandas as pd
        import rasterio

        with rasterio.open(chip) as src:
            data, tags, profile = src.read(), src.tags(), src.profile
            native = [float(src.tags(b)["native_resolution_m"]) for b in src.indexes]
            names = list(src.descriptions)
        when = pd.Timestamp(tags["DATETIME"])
        item_id = _scene_id(sensor, site_id, when, 0)
        props = {"proj:epsg": profile["crs"].to_epsg(), "constellation": _PLATFORM[sensor][0],
                 "platform": _PLATFORM[sensor][1]}
        band_meta = [{"nodata": profile["nodata"], "data_type": profile["dtype"]} for _ in names]
        max_cloud = self.params.sources.sentinel.stac.max_cloud_cover
        overcast = sensor != "s1" and k % 3 == 1
        if sensor == "s2":
            variant = counters["s2"] % 3 if not overcast else 0
            counters["s2"] += not overcast
            props["s2:processing_baseline"] = "03.01" if variant == 1 else "05.10"
            props["earthsearch:boa_offset_applied"] = variant == 2
            if variant:  # the DN without the +1000 offset
                data = np.where(data > 0, np.clip(data.astype(np.int32) - 1000, 1, None), 0).astype(data.dtype)
            band_meta = [{**m, "scale": 1e-4, "offset": 0.0 if variant else -0.1} for m in band_meta]
        if sensor == "s1":
            if counters["s1"] % 2:
                band_meta = [{**m, "unit": "dB"} for m in band_meta]
            else:
                data = np.where(data == profile["nodata"], data, 10 ** (data / 10)).astype(np.float32)
            counters["s1"] += 1
            props.update({"sar:instrument_mode": "IW", "sar:polarizations": ["VV", "VH"]})
        cloud = None
        if sensor != "s1":
            cloud = self._cloud(item_id, max_cloud + 0.2 * (100 - max_cloud), 100) if overcast \
                else self._cloud(item_id, 0, 0.4 * max_cloud)
            props["eo:cloud_cover"] = cloud
        assets = {}
        for band, values, native_m, meta in zip(names, data, native, band_meta):
            key = self._asset_key(sensor, band)
            factor = max(1, int(round(native_m / 10)))
            transform = profile["transform"] * profile["transform"].scale(factor)
            href = f"/cogs/{sensor}/{item_id}/{key}.tif"
            self._write_cog(href, values[::factor, ::factor], profile["crs"], transform, profile["nodata"])
            assets[key] = self._asset(href, values[::factor, ::factor].shape, transform,
                                      {**meta, "spatial_resolution": 10 * factor})
        geometry = self._footprint(profile["crs"], profile["transform"], data.shape[-2:])
        self._add(item_id, sensor, when, props, assets, geometry)
        if overcast:
            self.overcast.append(item_id)
            return
        self.expected[(site_id, sensor)].append(item_id)
        self.source_of[item_id] = chip
        later = when + pd.Timedelta(minutes=1)
        self._add(_scene_id(sensor, site_id, later, 1), sensor, later, props, assets, geometry)
        if sensor != "s1":
            other = when - pd.Timedelta(days=1) if when.day > 1 else when + pd.Timedelta(days=1)
            cloudier = self._cloud(item_id + "+", cloud + 0.1 * (max_cloud - cloud), max_cloud)
            self._add(_scene_id(sensor, site_id, other, 0), sensor, other, {**props, "eo:cloud_cover": cloudier},
                      assets, geometry)

    def _publish_maps(self, site_dir: Path, site_id: str) -> None:
        """WorldCover (one tile, nearest) and the DEM (west and east tiles, bilinear, float32) in EPSG:4326."""
        import pandas as pd
        import rasterio

        for product, degrees, resampling, nodata, dtype in [("worldcover", WORLDCOVER_DEG, "nearest", 0, "uint8"),
                                                           ("srtm", DEM_DEG, "bilinear", DEM_NODATA, "float32")]:
            with rasterio.open(site_dir / f"{product}.tif") as src:
                values, transform = self._to_lonlat(src, degrees, resampling, nodata, dtype)
            key = self._asset_key(product, modality(product).bands[0].name)
            half = values.shape[1] // 2
            tiles = {"": (values, transform)} if product == "worldcover" else {
                "_W": (values[:, :half], transform),
                "_E": (values[:, half:], transform * transform.translation(half, 0))}
            for suffix, (tile, tile_transform) in tiles.items():
                item_id = (f"ESA_WorldCover_10m_2021_v200_{site_id}{suffix}" if product == "worldcover"
                           else f"Copernicus_DSM_COG_10_{site_id}{suffix}_DEM")
                href = f"/cogs/{product}/{item_id}/{key}.tif"
                self._write_cog(href, tile, "EPSG:4326", tile_transform, nodata)
                asset = self._asset(href, tile.shape, tile_transform, {"nodata": nodata, "data_type": dtype})
                self._add(item_id, product, pd.Timestamp("2021-01-01T00:00:00Z"), {"proj:epsg": 4326}, {key: asset},
                          self._footprint("EPSG:4326", tile_transform, tile.shape))

    @staticmethod
    def _to_lonlat(src, degrees: float, resampling: str, nodata, dtype):
        from rasterio.enums import Resampling
        from rasterio.transform import from_origin
        from rasterio.warp import reproject, transform_bounds

        west, south, east, north = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
        transform = from_origin(west, north, degrees, degrees)
        out = np.full((int(np.ceil((north - south) / degrees)), int(np.ceil((east - west) / degrees))), nodata, dtype)
        reproject(src.read(1), out, src_transform=src.transform, src_crs=src.crs, src_nodata=src.nodata,
                  dst_transform=transform, dst_crs="EPSG:4326", dst_nodata=nodata, resampling=Resampling[resampling])
        return out, transform

    def _asset_key(self, product: str, band: str) -> str:
        from terrapipe.sources.sentinel import asset_key_of
        return asset_key_of(product, band)

    def _write_cog(self, href: str, values: np.ndarray, crs, transform, nodata) -> None:
        import rasterio

        path = self.server.root / href.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(path, "w", driver="COG", width=values.shape[1], height=values.shape[0], count=1,
                           dtype=values.dtype.name, crs=crs, transform=transform, nodata=nodata,
                           compress="deflate") as dst:
            dst.write(values, 1)

    @staticmethod
    def _asset(href: str, shape, transform, band_meta: dict) -> dict:
        return {"href": href, "type": COG, "roles": ["data"], "proj:shape": list(shape),
                "proj:transform": list(transform)[:6], "raster:bands": [band_meta]}

    @staticmethod
    def _footprint(crs, transform, shape) -> dict:
        from rasterio.transform import array_bounds
        from rasterio.warp import transform_bounds

        west, south, east, north = array_bounds(*shape, transform)
        w, s, e, n = transform_bounds(crs, "EPSG:4326", west, south, east, north)
        return {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}

    def _add(self, item_id, product, when, props, assets, geometry) -> None:
        ring = geometry["coordinates"][0]
        self.items[item_id] = {
            "type": "Feature", "stac_version": "1.0.0", "id": item_id, "collection": self._collection_of[product],
            "stac_extensions": ["https://stac-extensions.github.io/eo/v1.1.0/schema.json",
                                "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
                                "https://stac-extensions.github.io/raster/v1.1.0/schema.json"],
            "geometry": geometry, "bbox": [ring[0][0], ring[0][1], ring[2][0], ring[2][1]],
            "properties": {"datetime": f"{when:%Y-%m-%dT%H:%M:%S}Z", **props}, "links": [], "assets": assets}

    # -- the API --------------------------------------------------------------------------------------
    def _absolute(self, item: dict) -> dict:
        assets = {k: {**a, "href": self.url + a["href"]} for k, a in item["assets"].items()}
        return {**item, "assets": assets}

    def conformance(self) -> list[str]:
        classes = [f"{_STAC}/core", f"{_STAC}/item-search", f"{_STAC}/collections", f"{_STAC}/ogcapi-features",
                   "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core"]
        if "query" in self.extensions:
            classes.append(f"{_STAC}/item-search#query")
        if "filter" in self.extensions:
            classes += [f"{_STAC}/item-search#filter", "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json"]
        return classes

    def _routes(self) -> None:
        server = self.server

        @server.route("GET", "/")
        def landing(handler, match):
            links = [{"rel": "self", "href": f"{self.url}/", "type": "application/json"},
                     {"rel": "root", "href": f"{self.url}/", "type": "application/json"},
                     {"rel": "conformance", "href": f"{self.url}/conformance", "type": "application/json"},
                     {"rel": "data", "href": f"{self.url}/collections", "type": "application/json"},
                     {"rel": "search", "href": f"{self.url}/search", "type": "application/geo+json", "method": "GET"},
                     {"rel": "search", "href": f"{self.url}/search", "type": "application/geo+json", "method": "POST"}]
            send_json(handler, 200, {"type": "Catalog", "stac_version": "1.0.0", "id": "fake-stac",
                                     "description": "terrapipe's fake STAC API", "conformsTo": self.conformance(),
                                     "links": links})

        @server.route("GET", "/conformance")
        def conformance(handler, match):
            send_json(handler, 200, {"conformsTo": self.conformance()})

        @server.route("GET", "/collections")
        def collections(handler, match):
            send_json(handler, 200, {"collections": list(self.collections.values()), "links": []})

        @server.route("GET", "/collections/([^/]+)")
        def collection(handler, match):
            found = self.collections.get(match.group(1))
            missing = {"code": "NotFound", "description": f"collection {match.group(1)} not found"}
            send_json(handler, 200 if found else 404, found or missing)

        @server.route("GET", "/search")
        def search_get(handler, match):
            query = {k: v[0] for k, v in parse_qs(urlsplit(handler.path).query).items()}
            for key in ("query", "filter"):
                if key in query:
                    query[key] = json.loads(query[key])
            for key in ("collections", "bbox"):
                if key in query:
                    query[key] = [v if key == "collections" else float(v) for v in query[key].split(",")]
            self._search(handler, query, "GET")

        @server.route("POST", "/search")
        def search_post(handler, match):
            self._search(handler, json.loads(handler.request_body or b"{}"), "POST")

    def _search(self, handler, request: dict, method: str) -> None:
        self.searches.append(request)
        unknown = [c for c in request.get("collections", []) if c not in self.collections]
        if unknown:
            return send_json(handler, 404, {"code": "NotFound", "description": f"collections {unknown} not found"})
        if request.get("filter-lang", "cql2-json") != "cql2-json":
            return send_json(handler, 400, {"code": "BadRequest", "description": "only cql2-json filters"})
        matches = sorted((i for i in self.items.values() if self._matches(i, request)), key=lambda i: i["id"])
        matches.sort(key=lambda i: i["properties"]["datetime"], reverse=True)
        start = int(request.get("token", 0))
        page = matches[start:start + min(int(request.get("limit", self.page_size)), self.page_size)]
        links = []
        if start + len(page) < len(matches):
            following = {**request, "token": str(start + len(page))}
            links.append({"rel": "next", "type": "application/geo+json", "method": method, "merge": False,
                          **({"href": f"{self.url}/search", "body": following} if method == "POST" else
                             {"href": f"{self.url}/search?" + urlencode(_query_string(following))})})
        send_json(handler, 200, {"type": "FeatureCollection", "features": [self._absolute(i) for i in page],
                                 "links": links, "numberMatched": len(matches), "numberReturned": len(page)},
                  headers={"Content-Type": "application/geo+json"})

    @staticmethod
    def _matches(item: dict, request: dict) -> bool:
        import pandas as pd

        if request.get("collections") and item["collection"] not in request["collections"]:
            return False
        if request.get("bbox"):
            w, s, e, n = request["bbox"]
            iw, is_, ie, in_ = item["bbox"]
            if iw > e or ie < w or is_ > n or in_ < s:
                return False
        if request.get("datetime"):
            when = pd.Timestamp(item["properties"]["datetime"])
            start, _, end = request["datetime"].partition("/")
            end = end or start
            if ((start not in ("", "..") and when < pd.Timestamp(start))
                    or (end not in ("", "..") and when > pd.Timestamp(end))):
                return False
        props = item["properties"]
        for name, ops in (request.get("query") or {}).items():
            if name not in props or not all(_COMPARE[op](props[name], v) for op, v in ops.items()):
                return False
        return not request.get("filter") or _cql2(request["filter"], props)


def _scene_id(sensor: str, site_id: str, when, n: int) -> str:
    """An id shaped like the provider's (Earth Search S2, S1 GRD product, Landsat C2 L2), with the site in it."""
    return {"s2": f"S2A_{site_id}_{when:%Y%m%d}_{n}_L2A", "s1": f"S1A_IW_GRDH_1SDV_{when:%Y%m%dT%H%M%S}_{site_id}",
            "landsat": f"LC09_L2SP_{site_id}_{when:%Y%m%d}_{n:02d}_T1"}[sensor]


def _cql2(expr: dict, props: dict) -> bool:
    """Evaluate a cql2-json expression of and/or/not and comparisons of a property with a literal."""
    op, args = expr["op"], expr["args"]
    if op in ("and", "or"):
        return (all if op == "and" else any)(_cql2(a, props) for a in args)
    if op == "not":
        return not _cql2(args[0], props)
    name, value = args[0]["property"], args[1]
    return name in props and bool(_COMPARE[op](props[name], value))


def _query_string(request: dict) -> dict:
    """A search request as GET parameters."""
    encode = {"collections": ",".join, "bbox": lambda b: ",".join(map(str, b)), "query": json.dumps,
              "filter": json.dumps}
    return {k: encode.get(k, str)(v) for k, v in request.items()}
