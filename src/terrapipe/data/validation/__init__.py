"""Data-quality gates: Great Expectations suites over every processed data set and the raw files' summaries.

One DVC stage (validate) checks two groups of data sets in one Great Expectations run (GX takes about
6 s to import: once, not once per group):

    imagery   the raw GeoTIFF and NetCDF summaries (CRS, grid, ranges, saturation), the imagery store,
              the ERA5 site series and the site split
    points    the AlphaEarth points, the DeepEarth observations and their splits

A broken contract stops the stage (exit 2) with the data set, expectation, column and worst rows, and
leaves GX Data Docs in data/quality/docs/ that show it. Training and evaluation stages depend on
data/quality/report.json, so unvalidated data can never be trained on.
"""
from __future__ import annotations

from pathlib import Path


def build_tables(group: str, params, study) -> list:
    """The tables (with their contracts) of one validation group, read from the processed outputs."""
    if group == "imagery":
        from terrapipe.data.validation.imagery import tables
    elif group == "points":
        from terrapipe.data.validation.points import tables
    else:
        raise ValueError(f"unknown validation group {group!r}")
    return tables(params, study)


def validate_all(params, study, docs_dir: Path) -> dict:
    """Check every table of every group; write the Data Docs to ``docs_dir``; return the report."""
    from terrapipe.data.validation.gx import run_tables
    from terrapipe.paths import VALIDATION_GROUPS

    return run_tables({group: build_tables(group, params, study) for group in VALIDATION_GROUPS}, docs_dir)
