"""The catalog's tables, in one place (README "The catalog" documents them for people).

``sites``, ``samples`` and ``splits`` mirror the repository's files: refresh replaces them whole.
``data_versions`` and ``runs`` are history: rows are only ever added, so a run recorded months ago
still joins to the files its data version was made of.
"""
from __future__ import annotations

MIRRORED = {
    # the study's selected sites (data/inputs, params study.sites_per_aoi) and their site split
    "sites": """site_id VARCHAR, aoi_id VARCHAR, aoi_name VARCHAR, latitude DOUBLE, longitude DOUBLE,
                start_date DATE, end_date DATE, koppen VARCHAR, dominant_cover VARCHAR,
                split VARCHAR, split_reason VARCHAR""",
    # one row per training sample: imagery store sites (dataset 'sentinel'), AlphaEarth points, DeepEarth
    # observations; split from the data set's split stage (sentinel: the site split)
    "samples": """dataset VARCHAR, id VARCHAR, site_id VARCHAR, aoi_id VARCHAR, latitude DOUBLE,
                  longitude DOUBLE, year INTEGER, split VARCHAR""",
    # data/processed/splits/<dataset>/assignments.parquet (dataset: sites, deepearth, alphaearth)
    "splits": "dataset VARCHAR, id VARCHAR, split VARCHAR, split_reason VARCHAR",
}

HISTORY = {
    # for every data version seen, the dvc.lock outputs that define it (terrapipe.versions)
    "data_versions": """data_version VARCHAR, stage VARCHAR, path VARCHAR, hash_name VARCHAR, hash VARCHAR,
                        size BIGINT, nfiles BIGINT, first_seen TIMESTAMP""",
    # one row per recorded run (record_run); recorded_at in UTC
    "runs": """run_id VARCHAR PRIMARY KEY, experiment VARCHAR, kind VARCHAR, params JSON, code_version VARCHAR,
               data_version VARCHAR, flow_run_id VARCHAR, metrics JSON, recorded_at TIMESTAMP""",
}

TABLES = {**MIRRORED, **HISTORY}


def column_names(table: str) -> list[str]:
    """The column names of ``table`` in order, from its definition above."""
    return [part.split()[0] for part in TABLES[table].split(",")]
