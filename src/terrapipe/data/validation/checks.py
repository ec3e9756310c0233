"""Data contracts as plain data: a ``Table`` to check and the ``Check`` expectations it must meet.

Nothing here imports Great Expectations: building the tables and stating the contracts is pure and
cheap to test; terrapipe.data.validation.gx turns each Check into a GX expectation and runs them.
A contract that holds for some rows only is a derived column (e.g. ``train_in_test_region``), not a GX
row condition: those are deprecated and cost a pandas query each.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd


@dataclass(frozen=True)
class Check:
    """One expectation: the GX class name, its keyword arguments and why the contract holds."""
    expectation: str            # e.g. "ExpectColumnValuesToBeBetween"
    kwargs: dict
    why: str

    @property
    def column(self) -> str | None:
        return self.kwargs.get("column") or self.kwargs.get("column_A")

    def describe(self) -> str:
        """A one-line statement of the contract, for error messages."""
        return f"{self.expectation}({', '.join(f'{k}={v!r}' for k, v in self.kwargs.items())})"


@dataclass(frozen=True)
class Table:
    """A data set (or a per-file / per-site summary of one) with the contracts it must meet."""
    name: str                   # its name in Data Docs and error messages, e.g. "sentinel_raw_files"
    source: str                 # the file(s) it was built from
    frame: pd.DataFrame = field(repr=False)
    key_columns: tuple[str, ...]  # the columns that identify a row in a failure report
    checks: tuple[Check, ...]


def between(column: str, low: float | None, high: float | None, why: str, *, mostly: float = 1.0) -> Check:
    kwargs = {"column": column, "min_value": low, "max_value": high}
    if mostly < 1.0:
        kwargs["mostly"] = mostly
    return Check("ExpectColumnValuesToBeBetween", kwargs, why)


def in_set(column: str, values, why: str, *, mostly: float = 1.0) -> Check:
    kwargs = {"column": column, "value_set": sorted(values)}
    if mostly < 1.0:
        kwargs["mostly"] = mostly
    return Check("ExpectColumnValuesToBeInSet", kwargs, why)


def equal_pair(column_a: str, column_b: str, why: str) -> Check:
    return Check("ExpectColumnPairValuesToBeEqual", {"column_A": column_a, "column_B": column_b}, why)


def a_at_least_b(column_a: str, column_b: str, why: str) -> Check:
    """A >= B on every row where both are present (a missing value is another contract's business)."""
    return Check("ExpectColumnPairValuesAToBeGreaterThanB",
                 {"column_A": column_a, "column_B": column_b, "or_equal": True,
                  "ignore_row_if": "either_value_is_missing"}, why)


def unique(column: str, why: str) -> Check:
    return Check("ExpectColumnValuesToBeUnique", {"column": column}, why)


def rows_at_least(n: int, why: str) -> Check:
    return Check("ExpectTableRowCountToBeBetween", {"min_value": n, "max_value": None}, why)


def kind_of(series: pd.Series) -> str:
    """The dtype family readers rely on (GX's type-list check cannot tell pandas 3 string dtypes apart)."""
    api = pd.api.types
    for kind, test in (("boolean", api.is_bool_dtype), ("integer", api.is_integer_dtype), ("float", api.is_float_dtype),
                       ("datetime", api.is_datetime64_any_dtype), ("string", api.is_string_dtype)):
        if test(series):
            return kind
    return str(series.dtype)


def schema_table(name: str, source: str, frame: pd.DataFrame, expected: dict[str, str]) -> Table:
    """One row per expected column: the dtype family it has ("missing" if absent) beside the one it must have."""
    rows = [(column, kind_of(frame[column]) if column in frame else "missing", want) for column, want in expected.items()]
    table = pd.DataFrame(rows, columns=["column", "kind", "expected_kind"])
    return Table(f"{name}{SCHEMA_SUFFIX}", source, table, ("column",),
                 (equal_pair("kind", "expected_kind", "the columns and dtypes downstream readers rely on"),))


INT, FLOAT, TEXT, BOOL, TIME = "integer", "float", "string", "boolean", "datetime"
SCHEMA_SUFFIX = "_schema"  # a data set's schema table precedes it; when it fails the data set's checks are skipped
