"""Run the contracts of one validation group through Great Expectations and build its Data Docs.

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


class DataContractError(TerrapipeError):
    """A data set breaks its contract: the run stops before anything trains on it."""


def _context(group: str, docs_dir: Path):
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(store_backend_defaults=InMemoryStoreBackendDefaults(), analytics_enabled=False,
                               progress_bars=ProgressBarsConfig(globally=False))
    context = gx.get_context(mode="ephemeral", project_config=config)
    context.add_data_docs_site(site_name=group, site_config={
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir.absolute())},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        "site_section_builders": {"profiling": "0", "expectations": "0"}})  # validation pages show the suites
    return context


def _expectation(check: Check, index: int):
    import great_expectations.expectations as gxe

    return getattr(gxe, check.expectation)(**check.kwargs, meta={"why": check.why, "check": index})


def run_tables(group: str, tables: list[Table], docs_dir: Path) -> dict:
    """Validate every table, write the Data Docs, return the report; raise DataContractError on a failure."""
    logging.getLogger("great_expectations").setLevel(logging.WARNING)  # its INFO lines would bury the stage log
    import great_expectations as gx

    shutil.rmtree(docs_dir, ignore_errors=True)  # the index shows this run only
    docs_dir.mkdir(parents=True)
    context = _context(group, docs_dir)
    source = context.data_sources.add_pandas(f"terrapipe-{group}")
    report = {"group": group, "success": True, "data_docs": str(docs_dir / "index.html"), "data_sets": {}}
    failures = []
    schema_broken = set()  # data sets whose schema check failed: their other checks would only raise
    for table in tables:
        if table.name in schema_broken:
            report["data_sets"][table.name] = {"source": table.source, "rows": len(table.frame),
                                               "skipped": f"{table.name}{SCHEMA_SUFFIX} failed"}
            continue
        batch = source.add_dataframe_asset(table.name).add_batch_definition_whole_dataframe("all")
        suite = context.suites.add(gx.ExpectationSuite(name=table.name, expectations=[_expectation(c, i) for i, c in enumerate(table.checks)],
                                                       meta={"source": table.source}))
        definition = context.validation_definitions.add(gx.ValidationDefinition(name=table.name, data=batch, suite=suite))
        checkpoint = context.checkpoints.add(gx.Checkpoint(  # Data Docs built once at the end: each build is ~1 s
            name=f"{group}-{table.name}", validation_definitions=[definition],
            result_format={"result_format": "COMPLETE", "partial_unexpected_count": WORST_ROWS}))
        outcome = checkpoint.run(batch_parameters={"dataframe": table.frame})
        (validation,) = outcome.run_results.values()
        results = sorted(validation.results, key=lambda r: r.expectation_config.meta["check"])  # GX reorders them
        entries = [_entry(table, table.checks[r.expectation_config.meta["check"]], r) for r in results]
        report["data_sets"][table.name] = {"source": table.source, "rows": len(table.frame), "expectations": entries}
        failures += [(table, entry) for entry in entries if not entry["success"]]
        if table.name.endswith(SCHEMA_SUFFIX) and not all(e["success"] for e in entries):
            schema_broken.add(table.name.removesuffix(SCHEMA_SUFFIX))
    context.build_data_docs(site_names=[group])
    if failures:
        report["success"] = False
        raise DataContractError(_failure_message(group, failures, docs_dir))
    return report


def _entry(table: Table, check: Check, result) -> dict:
    """One expectation's outcome as plain JSON (observed value, counts, worst rows)."""
    _raise_on_gx_error(table, check, result)
    detail = result.result or {}
    entry = {"expectation": check.expectation, "column": check.column, "where": check.where, "why": check.why,
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


def _failure_message(group: str, failures: list, docs_dir: Path) -> str:
    lines = [f"validate_{group}: {len(failures)} expectation(s) failed, so nothing may train on this data."]
    for table, entry in failures:
        where = f" where {entry['where']}" if entry["where"] else ""
        counts = (f"{entry['unexpected_count']} of {entry['element_count']} rows" if "unexpected_count" in entry
                  else f"observed {entry.get('observed_value')!r}")
        lines.append(f"  - data set {table.name} ({table.source}): {entry['expectation']} on column "
                     f"{entry['column']}{where} failed ({counts}); contract: {entry['why']}")
        for row in entry.get("worst_rows", []):
            lines.append(f"      {row}")
    lines.append(f"Data Docs: {docs_dir / 'index.html'} (open it in a browser). Fix the stage that wrote the data "
                 "set (re-run it with `dvc repro -f <stage>`) or, if the contract is wrong, its suite in "
                 "terrapipe.data.validation")
    return "\n".join(lines)
