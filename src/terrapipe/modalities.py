"""The modality registry: the one place that names every band, its order, band sets, units and scalings.

Config validation, the sample and STAC writers, the readers and the store all take band names and
order from here, so a band list cannot drift between them. Each modality has OlmoEarth's name and
terrapipe's short key (used in file names and params):

    key         OlmoEarth name   band sets (band order = the sets concatenated, OlmoEarth's band_order)
    s2          sentinel2_l2a    [B02 B03 B04 B08] 10 m, [B05 B06 B07 B8A B11 B12] 20 m, [B01 B09] 60 m (stored at 40 m)
    s1          sentinel1        [vv vh] 10 m, dB
    landsat     landsat          [B8] 15 m (stored at 10 m), [B1..B7 B9 B10 B11] 30 m (stored at 20 m)
    era5        era5_10          one set of six variables, time-only (a 1x1 tile)
    worldcover  worldcover       one band, static, decode-only
    srtm        srtm             one band, static, decode-only

Raw values are the provider's: physical = DN * scale + offset per band (no scale: the value is physical);
the store holds that times ``Modality.unit_scale``. A selection of bands (``select``, ``subset``) always
comes back in registry order, whatever order it was asked in. Only the standard library is imported.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import MappingProxyType

BASE_RESOLUTION_M = 0.625  # OlmoEarth's base grid: a band set's resolution factor is its metres / this
ERA5_LAND_M = 9000.0       # ERA5-Land 0.1 degree cells (about 9 km)


def _unknown(kind: str, name, accepted) -> ValueError:
    return ValueError(f"unknown {kind} {name!r}; accepted: {', '.join(accepted)}")


@dataclass(frozen=True)
class Band:
    """One band as the raw files hold it; ``stac_asset`` is its Earth Search v1 asset key (None: the band name)."""
    name: str
    native_m: float
    unit: str                          # physical unit in the store
    wavelength_nm: float | None = None
    scale: float | None = None         # physical = DN * scale + offset; None: stored values are physical
    offset: float | None = None
    stac_asset: str | None = None


@dataclass(frozen=True)
class BandSet:
    """Bands tokenized together: ``resolution_m`` nominal, ``olmoearth_m`` the grid OlmoEarth stores them on."""
    bands: tuple[Band, ...]
    resolution_m: float
    olmoearth_m: float | None = None   # None: not spatial (ERA5)

    @property
    def resolution_factor(self) -> int | None:
        """OlmoEarth's ``resolution_factor`` (16 = 10 m, 32 = 20 m, 64 = 40 m)."""
        return None if self.olmoearth_m is None else round(self.olmoearth_m / BASE_RESOLUTION_M)


@dataclass(frozen=True)
class Modality:
    """One data source: its bands by band set, raw format and file tags."""
    key: str                            # terrapipe's short key: file names and params
    olmoearth_name: str
    band_sets: tuple[BandSet, ...]
    dtype: str                          # raw dtype
    nodata: float | None                # raw nodata; None: NaN marks missing (NetCDF)
    multitemporal: bool
    spatial: bool
    decode_only: bool = False
    categorical: bool = False           # class codes: resample with nearest, never interpolate
    unit_scale: float = 1.0             # store value = (DN * scale + offset) * unit_scale
    tags: MappingProxyType = field(default_factory=lambda: MappingProxyType({}), hash=False)  # file-level tags
    saturated: float | None = None      # raw value of a saturated pixel, read as missing; None: no such value
                                        # (Landsat C2 flags saturation in QA_RADSAT, S1 dB has none)

    @property
    def bands(self) -> tuple[Band, ...]:
        return tuple(b for s in self.band_sets for b in s.bands)

    @property
    def band_order(self) -> tuple[str, ...]:
        """Band names, the band sets concatenated (OlmoEarth's ``band_order``)."""
        return tuple(b.name for b in self.bands)

    @property
    def is_time_only(self) -> bool:
        """A (T, C) series per sample: multitemporal, no spatial extent (ERA5)."""
        return self.multitemporal and not self.spatial

    @property
    def units(self) -> str:
        """The store's units: one unit, or each unit with its bands."""
        by_unit: dict[str, list[str]] = {}
        for band in self.bands:
            by_unit.setdefault(band.unit, []).append(band.name)
        if len(by_unit) == 1:
            return next(iter(by_unit))
        return ", ".join(f"{unit} ({' '.join(names)})" for unit, names in by_unit.items())

    @property
    def scales(self) -> tuple[float, ...] | None:
        """Per-band scales for the raw file, or None when the raw values are physical."""
        return None if self.bands[0].scale is None else tuple(b.scale for b in self.bands)

    @property
    def offsets(self) -> tuple[float, ...] | None:
        return None if self.bands[0].offset is None else tuple(b.offset for b in self.bands)

    def band(self, name: str) -> Band:
        """The band called ``name``; ValueError naming it and listing the accepted ones."""
        for band in self.bands:
            if band.name == name:
                return band
        raise _unknown(f"{self.olmoearth_name} ({self.key}) band", name, self.band_order)

    def indices(self, names) -> list[int]:
        """Positions of ``names`` in ``band_order``, in the order given (a tokenization group)."""
        return [self.band_order.index(self.band(n).name) for n in names]

    def bandsets_as_indices(self) -> list[list[int]]:
        """Each band set as its contiguous index list into ``band_order``."""
        out, start = [], 0
        for band_set in self.band_sets:
            out.append(list(range(start, start + len(band_set.bands))))
            start += len(band_set.bands)
        return out

    def select(self, names) -> tuple[Band, ...]:
        """The bands named in ``names`` (validated) in registry order, whatever order they are listed in."""
        wanted = {self.band(n).name for n in names}
        return tuple(b for b in self.bands if b.name in wanted)

    def subset(self, names) -> Modality:
        """This modality with only ``names`` (registry order; band sets left empty are dropped)."""
        wanted = {b.name for b in self.select(names)}
        sets = tuple(replace(s, bands=tuple(b for b in s.bands if b.name in wanted)) for s in self.band_sets)
        return replace(self, band_sets=tuple(s for s in sets if s.bands))


@dataclass(frozen=True)
class Era5Variable:
    """One ERA5 monthly-means variable under each of its names."""
    cds: str             # the CDS request name, e.g. 2m_temperature
    short: str           # the NetCDF variable name, e.g. t2m
    units: str           # ERA5 units as written in the files
    long_name: str
    standard_name: str   # CF standard name
    grib_short: str      # GRIB shortName, e.g. 2t
    param_id: int        # ECMWF parameter id

    @property
    def band(self) -> str:
        """OlmoEarth's band name for the variable (era5_10 modality)."""
        return self.cds.replace("_", "-")


def _tags(**tags) -> MappingProxyType:
    return MappingProxyType(tags)


_S2 = {"scale": 1e-4, "offset": -0.1, "unit": "reflectance x 10000"}  # L2A DN = reflectance * 10000 + 1000
_LS_SR = {"scale": 2.75e-5, "offset": -0.2, "unit": "reflectance"}    # Collection 2 Level-2
_LS_ST = {"scale": 0.00341802, "offset": 149.0, "unit": "K"}          # surface temperature

S2 = Modality(
    "s2", "sentinel2_l2a", (
        BandSet((Band("B02", 10, wavelength_nm=490, stac_asset="blue", **_S2),
                 Band("B03", 10, wavelength_nm=560, stac_asset="green", **_S2),
                 Band("B04", 10, wavelength_nm=665, stac_asset="red", **_S2),
                 Band("B08", 10, wavelength_nm=842, stac_asset="nir", **_S2)), 10, 10),
        BandSet((Band("B05", 20, wavelength_nm=705, stac_asset="rededge1", **_S2),
                 Band("B06", 20, wavelength_nm=740, stac_asset="rededge2", **_S2),
                 Band("B07", 20, wavelength_nm=783, stac_asset="rededge3", **_S2),
                 Band("B8A", 20, wavelength_nm=865, stac_asset="nir08", **_S2),
                 Band("B11", 20, wavelength_nm=1610, stac_asset="swir16", **_S2),
                 Band("B12", 20, wavelength_nm=2190, stac_asset="swir22", **_S2)), 20, 20),
        BandSet((Band("B01", 60, wavelength_nm=443, stac_asset="coastal", **_S2),
                 Band("B09", 60, wavelength_nm=945, stac_asset="nir09", **_S2)), 60, 40)),
    dtype="uint16", nodata=0, multitemporal=True, spatial=True, unit_scale=1e4, saturated=65535,  # L2A's SATURATED
    tags=_tags(SENSOR="sentinel-2-l2a", PROCESSING_BASELINE="05.10", BOA_ADD_OFFSET=-1000))
S1 = Modality(
    "s1", "sentinel1", (BandSet((Band("vv", 10, "dB"), Band("vh", 10, "dB")), 10, 10),),
    dtype="float32", nodata=-32768.0, multitemporal=True, spatial=True,
    tags=_tags(SENSOR="sentinel-1-grd", MODE="IW", UNITS="dB", QUANTITY="sigma0"))
LANDSAT = Modality(
    "landsat", "landsat", (
        BandSet((Band("B8", 15, wavelength_nm=590, **_LS_SR),), 15, 10),
        BandSet((Band("B1", 30, wavelength_nm=443, stac_asset="coastal", **_LS_SR),
                 Band("B2", 30, wavelength_nm=482, stac_asset="blue", **_LS_SR),
                 Band("B3", 30, wavelength_nm=561, stac_asset="green", **_LS_SR),
                 Band("B4", 30, wavelength_nm=655, stac_asset="red", **_LS_SR),
                 Band("B5", 30, wavelength_nm=865, stac_asset="nir08", **_LS_SR),
                 Band("B6", 30, wavelength_nm=1609, stac_asset="swir16", **_LS_SR),
                 Band("B7", 30, wavelength_nm=2201, stac_asset="swir22", **_LS_SR),
                 Band("B9", 30, wavelength_nm=1373, **_LS_SR),
                 Band("B10", 100, wavelength_nm=10900, stac_asset="lwir11", **_LS_ST),  # 100 m, delivered at 30 m
                 Band("B11", 100, wavelength_nm=12000, **_LS_ST)), 30, 20)),
    dtype="uint16", nodata=0, multitemporal=True, spatial=True, tags=_tags(SENSOR="landsat-c2-l2"))

# The six OlmoEarth era5_10 variables, in OlmoEarth's band order.
ERA5_VARIABLES = (
    Era5Variable("2m_temperature", "t2m", "K", "2 metre temperature", "air_temperature", "2t", 167),
    Era5Variable("2m_dewpoint_temperature", "d2m", "K", "2 metre dewpoint temperature", "dew_point_temperature", "2d", 168),
    Era5Variable("surface_pressure", "sp", "Pa", "Surface pressure", "surface_air_pressure", "sp", 134),
    Era5Variable("10m_u_component_of_wind", "u10", "m s**-1", "10 metre U wind component", "eastward_wind", "10u", 165),
    Era5Variable("10m_v_component_of_wind", "v10", "m s**-1", "10 metre V wind component", "northward_wind", "10v", 166),
    Era5Variable("total_precipitation", "tp", "m", "Total precipitation", "lwe_thickness_of_precipitation_amount", "tp", 228),
)
ERA5 = Modality(
    "era5", "era5_10", (BandSet(tuple(Band(v.band, ERA5_LAND_M, v.units) for v in ERA5_VARIABLES), ERA5_LAND_M),),
    dtype="float32", nodata=None, multitemporal=True, spatial=False)
WORLDCOVER = Modality(
    "worldcover", "worldcover", (BandSet((Band("worldcover", 10, "ESA WorldCover code", stac_asset="map"),), 10, 10),),
    dtype="uint8", nodata=0, multitemporal=False, spatial=True, decode_only=True, categorical=True,
    tags=_tags(PRODUCT="ESA WorldCover"))
# ESA WorldCover v200 classes: tree, shrub, grass, crop, built-up, bare, snow/ice, water, wetland, mangroves, moss
WORLDCOVER_CODES = (10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100)
SRTM = Modality(
    "srtm", "srtm", (BandSet((Band("elevation", 30, "m", stac_asset="data"),), 30, 10),),
    dtype="int16", nodata=-32768, multitemporal=False, spatial=True, decode_only=True,
    tags=_tags(PRODUCT="SRTM", UNITS="m"))

MODALITIES = (S2, S1, LANDSAT, ERA5, WORLDCOVER, SRTM)
SENSORS = tuple(m.key for m in MODALITIES if m.multitemporal and m.spatial)  # the image time series
MAPS = tuple(m.key for m in MODALITIES if not m.multitemporal)              # static maps, always fetched


def modality(name: str) -> Modality:
    """The modality with terrapipe key or OlmoEarth name ``name``; ValueError listing the accepted ones."""
    for mod in MODALITIES:
        if name in (mod.key, mod.olmoearth_name):
            return mod
    raise _unknown("modality", name, [n for m in MODALITIES for n in dict.fromkeys((m.key, m.olmoearth_name))])


def store_modalities(sensors, s2_bands) -> tuple[Modality, ...]:
    """What the imagery store holds: the configured sensors (S2 cut to ``s2_bands``), then the maps."""
    mods = tuple(modality(s) for s in sensors) + tuple(modality(m) for m in MAPS)
    return tuple(m.subset(s2_bands) if m is S2 else m for m in mods)


def era5_variable(cds_name: str) -> Era5Variable:
    """The ERA5 variable with CDS name ``cds_name``; ValueError listing the accepted ones."""
    for var in ERA5_VARIABLES:
        if var.cds == cds_name:
            return var
    raise _unknown("ERA5 variable", cds_name, [v.cds for v in ERA5_VARIABLES])


def era5_selected(cds_names) -> tuple[Era5Variable, ...]:
    """The named variables (validated) in OlmoEarth's order, whatever order they are listed in."""
    wanted = {era5_variable(n).cds for n in cds_names}
    return tuple(v for v in ERA5_VARIABLES if v.cds in wanted)
