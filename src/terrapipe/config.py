"""Typed parameters: params.yaml is parsed into frozen pydantic models before any work starts.

Unknown keys, duplicated keys, wrong types, impossible values and contradictory combinations raise
ConfigError naming the key's full dotted path, what was given and what is accepted, so a typo never
silently falls back to a default and a contradiction never reaches a stage that would write an empty
data set over a good one.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from terrapipe.errors import ConfigError
from terrapipe.modalities import ERA5_VARIABLES, S2, SENSORS

# Band, variable and sensor names come from the modality registry (terrapipe.modalities), never listed here.
S2Band = Literal[S2.band_order]
Era5VariableName = Literal[tuple(v.cds for v in ERA5_VARIABLES)]
Sensor = Literal[SENSORS]
Probability = Annotated[float, Field(ge=0.0, lt=1.0)]
Year = Annotated[int, Field(ge=1900, le=2100)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _unique(values: list) -> list:
    duplicated = sorted({v for v in values if values.count(v) > 1})
    if duplicated:
        raise ValueError(f"duplicated entries {duplicated}; list each once")
    return values


class StudyParams(_Section):
    """How much of the study definition in data/inputs/ to use."""
    sites_per_aoi: int = Field(12, ge=1, le=1000)
    months: int = Field(12, ge=1, le=12, description="monthly timesteps from each AOI's start date (OlmoEarth: 12)")


class RetryParams(_Section):
    """Bounded exponential backoff for transient failures (5xx, resets, timeouts)."""
    attempts: int = Field(5, ge=1, le=20)
    base_delay_s: float = Field(2.0, ge=0)
    max_delay_s: float = Field(60.0, ge=0)

    @model_validator(mode="after")
    def _base_within_cap(self):
        if self.base_delay_s > self.max_delay_s:
            raise ValueError(f"base_delay_s {self.base_delay_s:g} is above max_delay_s {self.max_delay_s:g}, so "
                             "every retry would wait max_delay_s; lower base_delay_s or raise max_delay_s")
        return self


class Era5CdsParams(_Section):
    """The Climate Data Store backend. Credentials: ~/.cdsapirc or CDSAPI_URL/CDSAPI_KEY, never here."""
    retry: RetryParams = RetryParams()
    poll_max_s: float = Field(120.0, gt=0, description="longest wait between two job-status polls")


class Era5SampleParams(_Section):
    missing_month_prob: Probability = 0.0


class Era5Params(_Section):
    source: Literal["sample", "cds"] = "sample"
    dataset: Literal["reanalysis-era5-land-monthly-means",
                     "reanalysis-era5-single-levels-monthly-means"] = "reanalysis-era5-land-monthly-means"
    variables: list[Era5VariableName] = Field(default_factory=lambda: [v.cds for v in ERA5_VARIABLES], min_length=1)
    sample: Era5SampleParams = Era5SampleParams()
    cds: Era5CdsParams = Era5CdsParams()

    _unique_vars = field_validator("variables")(_unique)


class SentinelSampleParams(_Section):
    s2_gap_prob: Probability = 0.2
    s1_gap_prob: Probability = 0.05
    landsat_gap_prob: Probability = 0.35
    swath_edge_prob: Probability = 0.1


class StacCollections(_Section):
    """Collection ids on the STAC API: the three time series and the two static maps."""
    s2: str = "sentinel-2-l2a"
    s1: str = "sentinel-1-grd"
    landsat: str = "landsat-c2-l2"
    worldcover: str = "esa-worldcover"
    srtm: str = "cop-dem-glo-30"


class SentinelStacParams(_Section):
    """The STAC backend: a public STAC API with COG assets (Earth Search by default)."""
    api_url: str = "https://earth-search.aws.element84.com/v1"
    collections: StacCollections = StacCollections()
    max_cloud_cover: float = Field(30.0, ge=0, le=100)
    retry: RetryParams = RetryParams()


class SentinelParams(_Section):
    source: Literal["sample", "stac"] = "sample"
    sensors: list[Sensor] = Field(default_factory=lambda: list(SENSORS), min_length=1)
    # any subset of S2 L2A bands in any order: files and the store keep the registry's order
    s2_bands: list[S2Band] = Field(default_factory=lambda: list(S2.band_order), min_length=1)
    chip_size: int = Field(32, ge=8, le=2048, description="pixels per side on the 10 m grid")
    sample: SentinelSampleParams = SentinelSampleParams()
    stac: SentinelStacParams = SentinelStacParams()

    _unique_sensors = field_validator("sensors")(_unique)
    _unique_bands = field_validator("s2_bands")(_unique)


class AlphaEarthSampleParams(_Section):
    n_points: int = Field(20000, ge=10)
    dirty_fraction: float = Field(0.02, ge=0.0, le=0.5)


class AlphaEarthHttpParams(_Section):
    """DeepEarth's published AlphaEarth files (reference/deepearth-behaviour.md 2.1)."""
    metadata_url: str = ("https://storage.googleapis.com/deepearth/datasets/alphaearth/"
                         "20250927_172450_alphaearth_metadata.csv")
    embeddings_url: str = ("https://storage.googleapis.com/deepearth/datasets/alphaearth/"
                           "20250927_172519_alphaearth_embeddings.pt")
    metadata_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    embeddings_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    retry: RetryParams = RetryParams()


class AlphaEarthParams(_Section):
    source: Literal["sample", "http"] = "sample"
    sample: AlphaEarthSampleParams = AlphaEarthSampleParams()
    http: AlphaEarthHttpParams = AlphaEarthHttpParams()


class DeepEarthSampleParams(_Section):
    n_observations: int = Field(8000, ge=10)
    first_year: Year = 2010
    last_year: Year = 2025
    vision_fraction: float = Field(0.6, ge=0.0, le=1.0)
    language_dim: int = Field(7168, ge=1)
    vision_dim: int = Field(1408, ge=1)

    @model_validator(mode="after")
    def _years_in_order(self):
        if self.first_year > self.last_year:
            raise ValueError(f"first_year {self.first_year} is after last_year {self.last_year}; "
                             "swap them or correct one")
        return self


class DeepEarthHubParams(_Section):
    """The Hugging Face hub backend (honours HF_ENDPOINT, HF_HUB_OFFLINE; token from HF_TOKEN / login)."""
    repo_id: str = "deepearth/central-florida-native-plants"
    revision: str = "main"
    include_vision: bool = True
    retry: RetryParams = RetryParams()


class DeepEarthParams(_Section):
    source: Literal["sample", "huggingface"] = "sample"
    sample: DeepEarthSampleParams = DeepEarthSampleParams()
    huggingface: DeepEarthHubParams = DeepEarthHubParams()


class SourcesParams(_Section):
    era5: Era5Params = Era5Params()
    sentinel: SentinelParams = SentinelParams()
    alphaearth: AlphaEarthParams = AlphaEarthParams()
    deepearth: DeepEarthParams = DeepEarthParams()


class AlphaEarthCleaningParams(_Section):
    """DeepEarth's filters for the AlphaEarth points (reference/deepearth-behaviour.md 2.2)."""
    min_elevation_m: float = -500.0
    max_elevation_m: float = 9000.0
    unparseable_dates: Literal["drop", "default_2000"] = "drop"
    time_origin_year: int = 1900
    time_span_years: float = Field(200.0, gt=0)

    @model_validator(mode="after")
    def _limits_in_order(self):
        if self.min_elevation_m > self.max_elevation_m:
            raise ValueError(f"min_elevation_m {self.min_elevation_m:g} is above max_elevation_m "
                             f"{self.max_elevation_m:g}, so every point would be dropped; swap or correct them")
        return self


class NormalizeParams(_Section):
    std_multiplier: float = Field(2.0, gt=0)
    alphaearth: AlphaEarthCleaningParams = AlphaEarthCleaningParams()


class SplitParams(_Section):
    """DeepEarth spatiotemporal split: temporal holdout years + k square regions >= d km apart."""
    test_years: list[Year] = Field(default_factory=list)
    num_regions: int = Field(5, ge=0, le=100)
    region_size_km: float = Field(10.0, gt=0)
    min_distance_km: float = Field(15.0, ge=0)
    candidates: int = Field(1000, ge=1)
    seed: int = 42

    _unique_years = field_validator("test_years")(_unique)


class DeepEarthSplitParams(SplitParams):
    require_vision: bool = True


class SplitsParams(_Section):
    sites: SplitParams = SplitParams(num_regions=3, region_size_km=10.0, min_distance_km=50.0)
    deepearth: DeepEarthSplitParams = DeepEarthSplitParams(test_years=[2025])
    alphaearth: SplitParams = SplitParams(test_years=[2024], num_regions=5, region_size_km=50.0,
                                         min_distance_km=200.0)

    @model_validator(mode="after")
    def _sites_have_no_time(self):
        """The sites are one year of imagery: a temporal holdout there would fail only at the split stage."""
        if self.sites.test_years:
            raise ValueError(f"sites.test_years is {self.sites.test_years} but the sites have no time axis; "
                             "set it to []")
        return self


Share = Annotated[float, Field(ge=0.0, le=1.0)]


class MissingShareParams(_Section):
    """Per modality, the largest share of a site's values that may be missing (pixels x timesteps)."""
    s2: Share = 0.9          # cloud-lost months are expected, a site with no S2 at all is not
    s1: Share = 0.9
    landsat: Share = 1.0     # 16-day revisit and clouds: a site may have no Landsat month in a short window
    worldcover: Share = 0.05  # static maps have no gaps
    srtm: Share = 0.05
    era5: Share = 0.5        # per site and variable, over the months


class QualityParams(_Section):
    """Data-quality gates of the validate stages (physical ranges are facts, in terrapipe.data.validation)."""
    max_missing_share: MissingShareParams = MissingShareParams()
    max_saturated_share: Share = Field(0.01, description="per raw file and band")


class ComputeParams(_Section):
    """Where the per-site work of the data stages runs; never what it computes (no stage depends on it)."""
    dask_scheduler: str | None = Field(None, description="address of a Dask scheduler (tcp://host:8786) for the "
                                       "per-site work of fetch_sentinel, normalize_sentinel and fetch_tasks; "
                                       "null: a local process pool. TERRAPIPE_DASK_SCHEDULER overrides it")


class Params(_Section):
    seed: int = 0
    study: StudyParams = StudyParams()
    sources: SourcesParams = SourcesParams()
    normalize: NormalizeParams = NormalizeParams()
    split: SplitsParams = SplitsParams()
    quality: QualityParams = QualityParams()
    compute: ComputeParams = ComputeParams()
    pretrain: dict = Field({}, description="validated by terrapipe.train.experiments.pretrain_params (check_params, "
                                        "the pretrain stages and `terrapipe experiments`), so that the data stages "
                                        "do not depend on the model code")
    earth4d: dict = Field({}, description="validated by terrapipe.train.alphaearth.earth4d_params (the Earth4D -> "
                                       "AlphaEarth experiment; check_params and its stage)")
    tasks: dict = Field({}, description="validated by terrapipe.data.tasks.tasks_params (the downstream task data "
                                     "sets of the fetch_tasks stages; check_params too)")
    evaluate: dict = Field({}, description="validated by terrapipe.evals.downstream.evaluate_params (the "
                                        "evaluate@<experiment> stages; check_params too)")
    deepearth: dict = Field({}, description="validated by terrapipe.train.deepearth.deepearth_params (the DeepEarth "
                                         "classifiers and the cross-modal autoencoder; check_params and their stages)")

    @model_validator(mode="after")
    def _deepearth_test_years_in_sample(self):
        """The sample draws its years from first_year..last_year: test years outside hold out nothing, and
        all of them leave nothing to train on, which the split stage would find only after every fetch."""
        source, split = self.sources.deepearth, self.split.deepearth
        if source.source == "sample":
            first, last = source.sample.first_year, source.sample.last_year
            outside = [y for y in split.test_years if not first <= y <= last]
            if outside:
                raise ValueError(f"split.deepearth.test_years {outside} lie outside sources.deepearth.sample."
                                 f"first_year..last_year ({first}..{last}), so they hold out nothing; "
                                 "choose test years in that range or widen it")
            if set(split.test_years) >= set(range(first, last + 1)):
                raise ValueError(f"split.deepearth.test_years {split.test_years} hold out every year of "
                                 f"sources.deepearth.sample.first_year..last_year ({first}..{last}), leaving "
                                 "nothing to train on; hold out fewer years or widen the range")
        return self


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The model class that owns the key at ``loc`` (for listing accepted keys)."""
    model: type[BaseModel] | None = Params
    for key in loc[:-1]:
        field = model.model_fields.get(key) if model else None
        annotation = field.annotation if field else None
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return model


def _describe(error: dict) -> str:
    path = ".".join(str(part) for part in error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        owner = _model_at(error["loc"])
        accepted = ", ".join(owner.model_fields) if owner else "see params.yaml"
        return f"{path}: unknown key. Accepted keys here: {accepted}"
    if kind == "value_error":  # a rule of ours: its message names the keys, the values and the fix
        message = str(error["ctx"]["error"])
        return f"{path}: {message}" if path else message
    got = error.get("input")
    message = error["msg"]
    if kind == "literal_error":
        message = "must be one of " + error["ctx"]["expected"]
    return f"{path}: {message} (got {got!r})"


def parse_params(raw: dict, origin: str = "params.yaml") -> Params:
    """Validate a params mapping; raise ConfigError listing every problem with its full key path."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: the top level must be a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        lines = [_describe(err) for err in exc.errors()]
        raise ConfigError(f"{origin}: {len(lines)} invalid parameter(s):\n  " + "\n  ".join(lines)
                          + "\nFix these keys in the file (see README 'Parameters').") from None


def _reject_duplicate_keys(node, origin: str, path: tuple = ()) -> None:
    """yaml.safe_load silently keeps the last of two equal keys, so an edited copy of a key would
    override the original unnoticed; walk the composed node tree and refuse any repeat, at any depth."""
    import yaml

    if isinstance(node, yaml.MappingNode):
        lines: dict[str, int] = {}
        for key, value in node.value:
            name = str(key.value)
            if name in lines:
                raise ConfigError(f"{origin}: key {'.'.join((*path, name))} appears twice (lines {lines[name]} "
                                  f"and {key.start_mark.line + 1}); keep one")
            lines[name] = key.start_mark.line + 1
            _reject_duplicate_keys(value, origin, (*path, name))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _reject_duplicate_keys(item, origin, (*path, str(index)))


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
        _reject_duplicate_keys(yaml.compose(text, Loader=yaml.SafeLoader), str(path))
        raw = yaml.safe_load(text)
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found. Run from the repository root or pass --params.") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc}). Fix the syntax at the position shown.") from None
    return parse_params(raw or {}, str(path))


def check_params_file(path: str | Path = "params.yaml") -> dict:
    """Validate the whole file as load_params does and return the resolved parameters as plain JSON
    data, so the check_params DVC stage can record exactly what every later stage will run with."""
    return load_params(path).model_dump(mode="json")


def accepted_values(literal) -> tuple:
    """The values a Literal type admits (used by `terrapipe sources`)."""
    return get_args(literal)
