"""Data sources. Each fetch stage has a ``source`` param choosing one backend; every backend writes
the same raw layout under data/raw/<dataset>/, so everything downstream is source-independent.

A backend is a function ``fetch(params, study, out_dir)`` that fills ``out_dir`` (a temporary folder
that the stage renames into place when the function returns).
"""
from __future__ import annotations

import importlib
from pathlib import Path

from terrapipe.errors import ConfigError

# dataset -> source -> (module:function, one-line description)
BACKENDS: dict[str, dict[str, tuple[str, str]]] = {
    "era5": {
        "sample": ("terrapipe.sources.sample_era5:fetch_era5", "offline sample world, CDS-style monthly-means NetCDF"),
        "cds": ("terrapipe.sources.era5:fetch_cds", "Copernicus Climate Data Store through cdsapi"),
    },
    "sentinel": {
        "sample": ("terrapipe.sources.sample_imagery:fetch_sentinel", "offline sample world, S2 L2A / S1 / Landsat GeoTIFF chips"),
        "stac": ("terrapipe.sources.sentinel:fetch_stac", "STAC API search (pystac-client) + windowed COG reads warped to the site grid"),
    },
    "alphaearth": {
        "sample": ("terrapipe.sources.sample_alphaearth:fetch_alphaearth", "offline sample world, metadata CSV + [N,64] tensor"),
        "http": ("terrapipe.sources.alphaearth:fetch_http", "DeepEarth's published AlphaEarth files over HTTP"),
    },
    "deepearth": {
        "sample": ("terrapipe.sources.sample_deepearth:fetch_deepearth", "offline sample world, observations parquet"),
        "huggingface": ("terrapipe.sources.deepearth:fetch_hf", "deepearth/central-florida-native-plants on the HF hub"),
    },
}


def backend(dataset: str, source: str):
    """Import and return the fetch function for ``dataset`` from ``source``."""
    try:
        target, _ = BACKENDS[dataset][source]
    except KeyError:
        accepted = ", ".join(BACKENDS.get(dataset, {}))
        raise ConfigError(f"sources.{dataset}.source: unknown source {source!r}; accepted: {accepted}") from None
    module_name, function = target.split(":")
    return getattr(importlib.import_module(module_name), function)


def fetch(dataset: str, params, study, out_dir: str | Path) -> None:
    """Run the configured backend of ``dataset`` into ``out_dir``."""
    source = getattr(params.sources, dataset).source
    backend(dataset, source)(params, study, Path(out_dir))
