"""What the normalize stages report about their inputs: per-file value summaries and quality.json.

The readers hold every raster and NetCDF variable in memory already, so they summarise it there
(a second pass over ~10k files would cost the whole read again) and hand the rows back with the
data. terrapipe.data.validation (Great Expectations) validates both outputs:

    raw_files.parquet   one row per (file, band or variable): where the file is and what its values are
    quality.json        per modality or variable: missing shares, saturated pixels, fully missing
                        sites and AOIs, and every warning the stage logged about them

Both are deterministic (fixed dtypes, sorted keys, no timestamps): unchanged inputs give the same bytes.
"""
from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path

import numpy as np

PERCENTILES = (1.0, 50.0, 99.0)
VALUE_COLUMNS = ("min", "max", "p01", "p50", "p99")


def value_summary(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(B, 5) float64 min, max, p01, p50, p99 of each row of ``values`` (B, N) over its ``valid`` entries.

    A row without a valid entry gets NaN. Percentiles interpolate linearly as ``numpy.percentile``
    does, but vectorised over rows with one sort (invalid entries pushed to the end): per-row
    ``nanpercentile`` costs more than decoding the GeoTIFF. Sorting float32 gives the order float64
    would; only the picked values are widened, and the interpolation runs in float64.
    """
    ordered = np.where(valid, values, np.inf)
    ordered.sort(axis=1)
    last = np.maximum(valid.sum(axis=1) - 1, 0)[:, None]
    position = last * (np.array(PERCENTILES) / 100.0)
    below = np.floor(position).astype(np.int64)
    index = np.concatenate([np.zeros_like(last), last, below, np.minimum(below + 1, last)], axis=1)
    picked = ordered[np.arange(len(ordered))[:, None], index].astype(np.float64)
    low, high, t = picked[:, 2:5], picked[:, 5:], position - below
    with np.errstate(invalid="ignore"):  # inf - inf in rows without a valid entry, NaN-ed below
        middle = np.where(t >= 0.5, high - (high - low) * (1 - t), low + (high - low) * t)  # numpy's _lerp
    summary = np.concatenate([picked[:, :2], middle], axis=1)
    summary[~valid.any(axis=1)] = np.nan
    return summary


class FileRows:
    """A per-(file, band) table gathered a file at a time: each file's own fields once, its bands' as arrays.

    Cheap to fill in a worker and to pickle back (a file's numeric band columns travel as one array,
    no Python object per row); ``write`` repeats each file's fields over its bands' rows. The schemas
    map each column to its dtype (``str``, ``int64``, ``float64``), so that the parquet types do not
    depend on what one run happened to contain.
    """

    def __init__(self, file_schema: dict[str, str], band_schema: dict[str, str]):
        self.file_schema, self.band_schema = file_schema, band_schema
        self._text = [name for name, dtype in band_schema.items() if dtype == "str"]
        self._numbers = [name for name, dtype in band_schema.items() if dtype != "str"]
        self._files: list[tuple] = []       # per file: its fields in file_schema order
        self._band_text: list[tuple] = []   # per file: its text band columns, each a sequence
        self._band_numbers: list[np.ndarray] = []  # per file: (bands, numeric band columns) float64

    def add(self, file: dict, bands: dict) -> None:
        """One file: ``file`` its scalar fields, ``bands`` one equally long sequence per band column."""
        if file.keys() != self.file_schema.keys() or bands.keys() != self.band_schema.keys():
            wrong = (set(file) ^ set(self.file_schema)) | (set(bands) ^ set(self.band_schema))
            raise ValueError(f"columns {sorted(wrong)} missing or unknown")
        self._files.append(tuple(file[name] for name in self.file_schema))
        self._band_text.append(tuple(bands[name] for name in self._text))
        self._band_numbers.append(np.column_stack([np.asarray(bands[name], np.float64) for name in self._numbers]))

    def extend(self, other: FileRows) -> None:
        self._files += other._files
        self._band_text += other._band_text
        self._band_numbers += other._band_numbers

    def write(self, path: Path) -> None:
        """The table as parquet: file fields first, then band fields, in schema order (built in Arrow: a
        pandas string column of ~100k rows costs more than the rest together)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        types = {"str": pa.string(), "int64": pa.int64(), "float64": pa.float64()}
        counts = [len(block) for block in self._band_numbers]
        of_file = pa.array(np.repeat(np.arange(len(counts)), counts))
        file_columns = zip(*self._files) if self._files else ([] for _ in self.file_schema)
        text = zip(*self._band_text) if self._band_text else ([] for _ in self._text)
        numbers = np.concatenate(self._band_numbers) if self._band_numbers else np.zeros((0, len(self._numbers)))
        band_columns = {**{name: list(itertools.chain.from_iterable(chunks)) for name, chunks in zip(self._text, text)},
                        **{name: numbers[:, k].astype(self.band_schema[name]) for k, name in enumerate(self._numbers)}}
        columns = {name: pa.array(values, types[dtype]).take(of_file)
                   for (name, dtype), values in zip(self.file_schema.items(), file_columns)}
        columns.update({name: pa.array(band_columns[name], types[dtype]) for name, dtype in self.band_schema.items()})
        pq.write_table(pa.table(columns), path)


def missing_report(label: str, span: str, missing: np.ndarray, total: int, site_ids, aoi_ids) -> dict:
    """Missing share overall and at the worst site, the sites and AOIs with no value at all, and a
    warning for each of those (a whole AOI in one line).

    ``missing`` holds each site's missing values out of ``total``; ``span`` says what a site
    has no value for (e.g. "every month").
    """
    missing = np.asarray(missing)
    sites_of: dict[str, list[str]] = {}
    empty_of: dict[str, list[str]] = {}
    for site_id, aoi_id, none in zip(site_ids, aoi_ids, missing == total):
        sites_of.setdefault(aoi_id, []).append(site_id)
        if none:
            empty_of.setdefault(aoi_id, []).append(site_id)
    every = sorted(aoi for aoi, ids in empty_of.items() if len(ids) == len(sites_of[aoi]))
    warnings = [f"{label} is missing for {span} of AOI {aoi}: sites {', '.join(ids)} have no value"
                if aoi in every else f"{label} is missing for {span} of site(s) {', '.join(ids)} in AOI {aoi}"
                for aoi, ids in sorted(empty_of.items())]
    return {"missing_share": float(missing.sum() / (total * len(missing))),
            "max_site_missing_share": float((missing / total).max()),
            "sites_fully_missing": sorted(s for ids in empty_of.values() for s in ids),
            "aois_fully_missing": every, "warnings": warnings}


def write_quality(path: Path, sections: dict[str, dict], log: logging.Logger, **extra) -> None:
    """Log every section's warnings, then write them to quality.json with the rest: one list, two readers."""
    for section in sections.values():
        for warning in section["warnings"]:
            log.warning("%s", warning)
    document = {**extra, "n_warnings": sum(len(s["warnings"]) for s in sections.values()), "sections": sections}
    Path(path).write_text(json.dumps(document, indent=2, sort_keys=True, allow_nan=False) + "\n")
