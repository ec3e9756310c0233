"""Run the contracts of every validation group through Great Expectations and build the Data Docs.

One ephemeral GX context per run: a pandas data source with one dataframe asset, suite and checkpoint
per table, and a Data Docs site in ``docs_dir`` (index.html lists every table's validation, the
failed expectations marked). The outcome is also returned as a deterministic report (no run ids, no
timestamps) so that the DVC output of a validate stage changes only when the data or the contracts do.

A GX error while evaluating an expectation (the pandas-3 traps in reference/stack-facts.md) is not a
data failure: it is raised as a bug in the contract, never counted as broken data.
"""
from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

from terrapipe.data.validation.checks import SCHEMA_SUFFIX, Check, Table
from terrapipe.errors import TerrapipeError

WORST_ROWS = 5
DOCS_SITE = "terrapipe"
DATA_SOURCE = "terrapipe"


class DataContractError(TerrapipeError):
    """A data set breaks its contract: the run stops before anything trains on it."""


def _context(docs_dir: Path):
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(store_backend_defaults=InMemoryStoreBackendDefaults(), analytics_enabled=False,
                               progress_bars=ProgressBarsConfig(globally=False))
    context = gx.get_context(mode="ephemeral", project_config=config)
    context.add_data_docs_site(site_name=DOCS_SITE, site_config={
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir.absolute())},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        "site_section_builders": {"profiling": "0", "expectations": "0"}})  # validation pages show the suites
    context.data_sources.add_pandas(DATA_SOURCE)
    return context


def _expectation(check: Check, index: int):
    import great_expectations.expectations as gxe

    return getattr(gxe, check.expectation)(**check.kwargs, meta={"why": check.why, "check": index})


def run_tables(groups: dict[str, list[Table]], docs_dir: Path) -> dict:
    """Validate every table, write the Data Docs, return the report; raise DataContractError on a failure."""
    logging.getLogger("great_expectations").setLevel(logging.WARNING)  # its INFO lines would bury the stage log
    shutil.rmtree(docs_dir, ignore_errors=True)  # the index shows this run only
    docs_dir.mkdir(parents=True)
    context = _context(docs_dir)
    report = {"success": True, "data_docs": str(docs_dir / "index.html"), "groups": {}}
    failures = []
    for group, tables in groups.items():
        data_sets = report["groups"].setdefault(group, {})
        schema_broken = set()  # data sets whose schema check failed: their other checks would only raise
        for table in tables:
            if table.name in schema_broken:
                data_sets[table.name] = {"source": table.source, "rows": len(table.frame),
                                         "skipped": f"{table.name}{SCHEMA_SUFFIX} failed"}
                continue
            entries = _validate(context, table)
            data_sets[table.name] = {"source": table.source, "rows": len(table.frame), "expectations": entries}
            failures += [(table, entry) for entry in entries if not entry["success"]]
            if table.name.endswith(SCHEMA_SUFFIX) and not all(e["success"] for e in entries):
                schema_broken.add(table.name.removesuffix(SCHEMA_SUFFIX))
    context.build_data_docs(site_names=[DOCS_SITE])
    if failures:
        report["success"] = False
        raise DataContractError(_failure_message(failures, docs_dir))
    return report


def _validate(context, table: Table) -> list[dict]:
    """One table through its own suite and checkpoint (GX stores the result for the Data Docs)."""
    import great_expectations as gx

    batch = context.data_sources.get(DATA_SOURCE).add_dataframe_asset(table.name).add_batch_definition_whole_dataframe("all")
    suite = context.suites.add(gx.ExpectationSuite(name=table.name, meta={"source": table.source},
                                                   expectations=[_expectation(c, i) for i, c in enumerate(table.checks)]))
    definition = context.validation_definitions.add(gx.ValidationDefinition(name=table.name, data=batch, suite=suite))
    checkpoint = context.checkpoints.add(gx.Checkpoint(  # Data Docs built once at the end: each build is ~1 s
        name=table.name, validation_definitions=[definition],
        result_format={"result_format": "COMPLETE", "partial_unexpected_count": WORST_ROWS}))
    (validation,) = checkpoint.run(batch_parameters={"dataframe": table.frame}).run_results.values()
    results = sorted(validation.results, key=lambda r: r.expectation_config.meta["check"])  # GX reorders them
    return [_entry(table, table.checks[r.expectation_config.meta["check"]], r) for r in results]


def _entry(table: Table, check: Check, result) -> dict:
    """One expectation's outcome as plain JSON (observed value, counts, worst rows)."""
    _raise_on_gx_error(table, check, result)
    detail = result.result or {}
    entry = {"expectation": check.expectation, "column": check.column, "why": check.why,
             "success": bool(result.success)}
    if "observed_value" in detail:
        entry["observed_value"] = _plain(detail["observed_value"])
    if "unexpected_count" in detail:
        entry["unexpected_count"] = int(detail["unexpected_count"])
        entry["element_count"] = int(detail.get("element_count", len(table.frame)))
    if not result.success and detail.get("unexpected_index_list") is not None:
        entry["worst_rows"] = _worst_rows(table, check, detail["unexpected_index_list"])
    return entry


def _raise_on_gx_error(table: Table, check: Check, result) -> None:
    info = result.exception_info or {}
    infos = info.values() if all(isinstance(v, dict) for v in info.values()) and info else [info]
    for item in infos:
        if item.get("raised_exception") or item.get("exception_message"):
            raise TerrapipeError(f"Great Expectations could not evaluate {check.describe()} on {table.name} "
                                 f"({table.source}): {item.get('exception_message')}. This is a bug in the contract "
                                 "(terrapipe.data.validation), not in the data")


def _worst_rows(table: Table, check: Check, index: list) -> list[dict]:
    """The failing rows furthest from the accepted range (else the first ones), key columns + the column."""
    rows = table.frame.loc[[i for i in index if i in table.frame.index]]
    column = check.column
    low, high = check.kwargs.get("min_value"), check.kwargs.get("max_value")
    if column in rows and (low is not None or high is not None):
        values = rows[column].astype(float)
        distance = (values - high).clip(lower=0) if high is not None else 0 * values
        if low is not None:
            distance = distance + (low - values).clip(lower=0)
        rows = rows.loc[distance.fillna(math.inf).sort_values(ascending=False, kind="stable").index]
    shown = [c for c in (*table.key_columns, column, check.kwargs.get("column_B")) if c and c in rows]
    return [{c: _plain(v) for c, v in row.items()} for row in rows[list(dict.fromkeys(shown))].head(WORST_ROWS).to_dict("records")]


def _plain(value):
    """JSON-safe, stable: numpy scalars to Python, floats rounded to 6 significant digits, NaN to None."""
    if hasattr(value, "item") and not isinstance(value, (list, dict)):
        value = value.item()
    if isinstance(value, float):
        return None if not math.isfinite(value) else float(f"{value:.6g}")
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value if isinstance(value, (int, str, bool)) or value is None else str(value)


def _failure_message(failures: list, docs_dir: Path) -> str:
    lines = [f"validate: {len(failures)} expectation(s) failed, so nothing may train on this data."]
    for table, entry in failures:
        counts = (f"{entry['unexpected_count']} of {entry['element_count']} rows" if "unexpected_count" in entry
                  else f"observed {entry.get('observed_value')!r}")
        lines.append(f"  - data set {table.name} ({table.source}): {entry['expectation']} on column "
                     f"{entry['column']} failed ({counts}); contract: {entry['why']}")
        for row in entry.get("worst_rows", []):
            lines.append(f"      {row}")
    lines.append(f"Data Docs: {docs_dir / 'index.html'} (open it in a browser). Fix the stage that wrote the data "
                 "set (re-run it with `dvc repro -f <stage>`) or, if the contract is wrong, its suite in "
                 "terrapipe.data.validation")
    return "\n".join(lines)
