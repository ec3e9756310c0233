"""The DuckDB catalog (data/catalog.duckdb): sites, samples, splits, data versions and runs, for SQL.

    from terrapipe.catalog import open_catalog, refresh, record_run, query
    refresh()                                   # mirror the repository's files (sites, samples, splits, data_versions)
    run_id = record_run(paths.CATALOG, experiment=key, kind="evaluate", params=..., metrics=..., flow_run_id=...)
    query(paths.CATALOG, "SELECT ... FROM runs")  # a pandas DataFrame

DuckDB lets one process write a file at a time (a second writer, or a reader while a writer holds
it, fails at once), so every call opens the file, does its work in one transaction and closes it;
nothing holds a connection across a long task. A call that finds the file locked retries for
LOCK_WAIT_S seconds, then raises CatalogLockedError. Table definitions: terrapipe.catalog.schema.
"""
from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from pathlib import Path

from terrapipe import paths
from terrapipe.errors import TerrapipeError

log = logging.getLogger("terrapipe")
LOCK_WAIT_S = 10.0     # how long a call waits for another process's (short) operation to finish
_LOCK_POLL_S = 0.1


class CatalogError(TerrapipeError):
    """The catalog file or a request to it is unusable: the message says which and what to do."""


class CatalogLockedError(CatalogError):
    """Another process holds the catalog file (DuckDB allows one writer, and no reader beside it)."""


def _connect(db: Path, read_only: bool):
    import duckdb

    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            return duckdb.connect(str(db), read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise CatalogError(f"{db}: cannot open the catalog ({exc}). Delete the file and run "
                                   "`terrapipe catalog refresh` to rebuild it (recorded runs are lost)") from None
            if time.monotonic() >= deadline:
                holder = re.search(r"PID (\d+)", str(exc))
                raise CatalogLockedError(
                    f"{db}: another process{f' (PID {holder.group(1)})' if holder else ''} holds the catalog; "
                    f"waited {LOCK_WAIT_S:g} s. Catalog operations are short: retry when it has finished") from None
            time.sleep(_LOCK_POLL_S)


def _ensure_schema(con, db: Path) -> None:
    from terrapipe.catalog.schema import HISTORY, TABLES, column_names

    for table, columns in TABLES.items():
        con.execute(f"CREATE TABLE IF NOT EXISTS {table} ({columns})")
    for table in HISTORY:  # history cannot be rebuilt, so an old layout is refused rather than altered
        found = [row[0] for row in con.execute(f"DESCRIBE {table}").fetchall()]
        if found != column_names(table):
            raise CatalogError(f"{db}: table {table} has columns {found}, this terrapipe expects "
                               f"{column_names(table)}. Keep its rows with `terrapipe catalog query "
                               f"\"COPY {table} TO '{table}.parquet'\"` from the older version, then delete {db}")


@contextlib.contextmanager
def open_catalog(db: str | Path = paths.CATALOG, *, read_only: bool = False):
    """A DuckDB connection to the catalog for one short operation (closed on exit).

    Writing creates the file and its tables if needed; reading a catalog that does not exist is an error.
    """
    db = Path(db)
    if read_only and not db.exists():
        raise CatalogError(f"{db}: no catalog yet. Run `terrapipe catalog refresh` to create it")
    if not read_only:
        db.parent.mkdir(parents=True, exist_ok=True)
    con = _connect(db, read_only)
    try:
        if not read_only:
            _ensure_schema(con, db)
        yield con
    finally:
        con.close()


def _insert(con, table: str, frame, select: str | None = None) -> None:
    """Bulk-insert ``frame`` (pandas; ``frame`` in ``select``, default: the table's columns by name)."""
    from terrapipe.catalog.schema import column_names

    columns = ", ".join(column_names(table))
    con.register("frame", frame)
    try:
        con.execute(f"INSERT INTO {table} ({columns}) SELECT {select or columns + ' FROM frame'}")
    finally:
        con.unregister("frame")


def _replace(con, table: str, frame, select: str | None = None) -> None:
    """``frame`` as the whole content of ``table``."""
    con.execute(f"DELETE FROM {table}")
    _insert(con, table, frame, select)


def _add_data_version(con, outputs: list[dict]) -> str | None:
    """Store a data version's outputs (terrapipe.versions.data_outputs) unless it is there; its id."""
    import pandas as pd

    from terrapipe.versions import version_of

    version = version_of(outputs)
    if version is not None and not con.execute("SELECT count(*) FROM data_versions WHERE data_version = ?",
                                               [version]).fetchall()[0][0]:
        now = pd.Timestamp.now("UTC").tz_localize(None)
        _insert(con, "data_versions", pd.DataFrame(outputs).assign(data_version=version, first_seen=now))
    return version


def refresh(db: str | Path = paths.CATALOG, root: str | Path = Path(".")) -> None:
    """(Re)load sites, samples and splits from ``root``'s files and add its current data version.

    What does not exist yet is logged as missing and leaves its rows empty; a broken file raises.
    """
    from terrapipe.catalog import loaders
    from terrapipe.versions import data_outputs

    root = Path(root)
    missing: list[str] = []   # everything is read before the file is opened, so the lock is held for the writes only
    sites = loaders.load_sites(root, missing)
    splits = loaders.load_splits(root, missing)
    samples = loaders.load_samples(root, missing)
    outputs = data_outputs(root)
    with open_catalog(db) as con:
        con.execute("BEGIN TRANSACTION")
        _replace(con, "sites", sites)
        _replace(con, "splits", splits)
        _replace(con, "samples", samples, "s.dataset, s.id, s.site_id, s.aoi_id, s.latitude, s.longitude, s.year, "
                 "sp.split FROM frame s LEFT JOIN splits sp ON sp.dataset = s.split_dataset AND sp.id = s.id")
        version = _add_data_version(con, outputs)
        con.execute("COMMIT")
    for item in missing:
        log.warning("catalog: missing %s", item)
    if version is None:
        log.warning("catalog: %s has no data outputs yet (run `dvc repro`): no data version", root / "dvc.lock")
    log.info("catalog %s: %d sites, %d samples, %d split rows, data version %s", db, len(sites), len(samples),
             len(splits), version[:12] if version else None)


def _json(value, what: str) -> str:
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise CatalogError(f"record_run: {what} is not plain JSON ({exc}); pass numbers, strings, lists "
                           "and dicts (NaN and inf have no JSON form)") from None


def record_run(db: str | Path = paths.CATALOG, *, experiment: str, kind: str, params: dict, metrics: dict,
               flow_run_id: str | None, root: str | Path = Path(".")) -> str:
    """Add one row to ``runs`` (code and data version of ``root`` computed here); return its run_id."""
    import uuid
    from datetime import datetime, timezone

    from terrapipe.versions import code_version, data_outputs

    for name, value in (("experiment", experiment), ("kind", kind)):
        if not isinstance(value, str) or not value:
            raise CatalogError(f"record_run: {name} must be a non-empty string, got {value!r}")
    params_json, metrics_json = _json(params, "params"), _json(metrics, "metrics")
    root = Path(root)
    run_id = uuid.uuid4().hex
    code, outputs = code_version(root), data_outputs(root)
    with open_catalog(db) as con:
        con.execute("BEGIN TRANSACTION")
        version = _add_data_version(con, outputs)
        con.execute("INSERT INTO runs VALUES (?, ?, ?, ?::JSON, ?, ?, ?, ?::JSON, ?)",
                    [run_id, experiment, kind, params_json, code, version, flow_run_id, metrics_json,
                     datetime.now(timezone.utc).replace(tzinfo=None)])
        con.execute("COMMIT")
    log.info("catalog %s: run %s (%s %s, code %s, data %s)", db, run_id, kind, experiment, code,
             version[:12] if version else None)
    return run_id


def query(db: str | Path, sql: str):
    """Run one read-only SQL statement on the catalog; its result as a pandas DataFrame."""
    import duckdb
    import pandas as pd

    with open_catalog(db, read_only=True) as con:
        try:
            relation = con.sql(sql)
        except duckdb.Error as exc:
            raise CatalogError(f"query failed: {exc}") from None
        return relation.df() if relation is not None else pd.DataFrame()  # COPY ... TO, SET: no rows
