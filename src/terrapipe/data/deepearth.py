"""DeepEarth tidy: the HF dataset's denormalised observations -> flat tables and aligned matrices.

The raw observations repeat a 7,168-float language embedding on every row and sometimes store a
row's image URLs as one ";"-joined string. The tidy layout keeps one language row per species,
proper URL lists, and vision embeddings in one float32 matrix indexed by ``vision_row``:

    observations.parquet       one row per observation, no embeddings (schema: observations_schema())
    species.parquet            species_index, taxon_id, taxon_name, n_observations
    language_embeddings.npy    float32 [n_species, language_dim], row = species_index
    vision_embeddings.npy      float32 [n_vision, vision_dim], row = observations.vision_row
    tidy_report.json           counts, including the repairs made

``has_vision`` is true exactly when an embedding exists (vision_row >= 0); rows whose raw flag
disagrees with the embedding file are counted in the report.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from terrapipe.errors import InputDataError

log = logging.getLogger("terrapipe")

OBSERVATIONS_FILE = "observations.parquet"
VISION_FILE = "vision_embeddings.parquet"
RAW_COLUMNS = ("gbif_id", "taxon_id", "taxon_name", "latitude", "longitude", "year", "month", "day",
               "hour", "minute", "second", "image_urls", "num_images", "has_vision", "language_embedding", "split")
VISION_COLUMNS = ("gbif_id", "embedding")
NULLABLE_COLUMNS = ("hour", "minute", "second", "image_urls")  # the rest must be filled on every row
_REFETCH = "Re-run `dvc repro fetch_deepearth` to fetch it again"


def fix_image_urls(urls) -> list[str]:
    """A proper URL list: ";"-joined strings split, blanks dropped, a null list made empty."""
    return [part.strip() for url in (urls or []) for part in (url or "").split(";") if part.strip()]


def list_matrix(column, path, name: str, first_row: int = 0) -> np.ndarray:
    """A list<float> arrow column of equal-length lists (nulls already refused) as float32 [rows, dim]
    (``first_row``: the column's first row in the file, for messages)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    lengths = pc.list_value_length(column).to_numpy()
    if len(lengths) and (lengths != lengths[0]).any():
        row = int(np.flatnonzero(lengths != lengths[0])[0])
        raise InputDataError(path, f"column '{name}' has {lengths[row]} values on row {first_row + row} but "
                             f"{lengths[0]} on row {first_row}", _REFETCH)
    dim = int(lengths[0]) if len(lengths) else 0
    values = column.flatten().cast(pa.float32()).to_numpy(zero_copy_only=False)
    return values.reshape(len(column), dim)


def index_species(taxon_id: np.ndarray, taxon_name: np.ndarray, path):
    """(species DataFrame sorted by taxon_id, species_index per row); one name per taxon_id required."""
    import pandas as pd

    pairs = pd.DataFrame({"taxon_id": taxon_id, "taxon_name": taxon_name})
    names = pairs.groupby("taxon_id", sort=True)["taxon_name"]
    ambiguous = names.nunique()
    if (ambiguous > 1).any():
        taxon = ambiguous.index[ambiguous > 1][0]
        raise InputDataError(path, f"column 'taxon_name' has several names for taxon_id {taxon}", _REFETCH)
    species = names.first().reset_index()
    index = np.searchsorted(species["taxon_id"].to_numpy(), taxon_id)
    species.insert(0, "species_index", np.arange(len(species), dtype=np.int64))
    species["n_observations"] = np.bincount(index, minlength=len(species)).astype(np.int64)
    return species, index


def language_per_species(chunks, species_index: np.ndarray, n_species: int, taxon_ids, path) -> np.ndarray:
    """One language embedding per species from the column's chunks (in row order); every row of a
    species must hold the bit-identical vector. Memory: one chunk at a time."""
    table, seen, start = None, np.zeros(n_species, bool), 0
    for chunk in chunks:
        matrix = list_matrix(chunk, path, "language_embedding", start)
        rows = species_index[start:start + len(matrix)]
        if table is None:
            table = np.zeros((n_species, matrix.shape[1]), np.float32)
        elif matrix.shape[1] != table.shape[1]:
            raise InputDataError(path, f"column 'language_embedding' has {matrix.shape[1]} values on row {start} but "
                                 f"{table.shape[1]} on row 0", _REFETCH)
        new, first = np.unique(rows, return_index=True)
        fresh = ~seen[new]
        table[new[fresh]], seen[new[fresh]] = matrix[first[fresh]], True
        differs = (matrix.view(np.int32) != table[rows].view(np.int32)).any(axis=1)
        if differs.any():
            row = start + int(differs.argmax())
            raise InputDataError(path, f"column 'language_embedding' on row {row} differs from the first row of taxon "
                                 f"{taxon_ids[species_index[row]]}, but must be identical for every row of a species",
                                 "The file is corrupt or mixes releases; re-run fetch_deepearth")
        start += len(matrix)
    return table if table is not None else np.zeros((n_species, 0), np.float32)


def align_vision(obs_gbif: np.ndarray, vision_gbif: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(vision_row per observation or -1, raw vision row for each tidy vision row), in observation order."""
    order = np.argsort(vision_gbif, kind="stable")
    sorted_ids = vision_gbif[order]
    pos = np.searchsorted(sorted_ids, obs_gbif)
    found = pos < len(sorted_ids)
    found[found] = sorted_ids[pos[found]] == obs_gbif[found]
    return np.where(found, np.cumsum(found) - 1, -1).astype(np.int64), order[pos[found]]


def _check_filled(table, path) -> None:
    """Refuse a null in any column that must be filled on every row."""
    for name in table.column_names:
        values = table.column(name)
        if name not in NULLABLE_COLUMNS and values.null_count:
            row = int(np.flatnonzero(values.is_null().to_numpy())[0])
            raise InputDataError(path, f"column '{name}' is null on row {row}", _REFETCH)


def _duplicated(values: np.ndarray, path, column: str) -> None:
    unique, counts = np.unique(values, return_counts=True)
    if (counts > 1).any():
        raise InputDataError(path, f"column '{column}' repeats value {unique[counts > 1][0]}", _REFETCH)


def observations_schema():
    """Arrow schema of the tidy observations.parquet (hour, minute, second are nullable)."""
    import pyarrow as pa

    int64, string = pa.int64(), pa.string()
    return pa.schema([
        ("observation_id", string), ("gbif_id", int64), ("taxon_id", string), ("taxon_name", string),
        ("species_index", int64), ("latitude", pa.float64()), ("longitude", pa.float64()),
        ("year", int64), ("month", int64), ("day", int64), ("hour", int64), ("minute", int64), ("second", int64),
        ("image_urls", pa.list_(string)), ("num_images", int64), ("has_vision", pa.bool_()),
        ("vision_row", int64), ("dataset_split", string),
    ])


def tidy_tables(observations, language_chunks, vision_gbif: np.ndarray, vision_chunks, vision_out, obs_path, vision_path):
    """Tidy the raw observations (an arrow table without the embedding column) and stream the embeddings.

    ``language_chunks`` / ``vision_chunks`` yield the raw embedding columns chunk by chunk in file order;
    ``vision_out(n, dim)`` returns an array-like with ``write_rows(first, block)`` that receives the vision
    matrix in tidy order. Returns (observations DataFrame, species DataFrame, language, report).
    """
    import pandas as pd
    import pyarrow as pa

    def column(name, kind):
        values = observations.column(name).cast(kind)
        if name in NULLABLE_COLUMNS:
            return values.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
        return values.to_numpy(zero_copy_only=False)

    _check_filled(observations, obs_path)
    gbif = column("gbif_id", pa.int64())
    _duplicated(gbif, obs_path, "gbif_id")
    _duplicated(vision_gbif, vision_path, "gbif_id")

    taxon_id, taxon_name = column("taxon_id", pa.string()), column("taxon_name", pa.string())
    species, species_index = index_species(taxon_id, taxon_name, obs_path)
    language = language_per_species(language_chunks, species_index, len(species), species["taxon_id"].to_numpy(),
                                    obs_path)
    vision_row, raw_rows = align_vision(gbif, vision_gbif)
    vision_dim = write_vision(vision_chunks, raw_rows, len(vision_gbif), vision_out, vision_path)

    raw_urls = observations.column("image_urls").to_pylist()
    urls = [fix_image_urls(u) for u in raw_urls]
    raw_flag = observations.column("has_vision").to_numpy(zero_copy_only=False).astype(bool)
    has_vision = vision_row >= 0
    tidy = pd.DataFrame({
        "observation_id": [f"{g}_1" for g in gbif], "gbif_id": gbif,
        "taxon_id": taxon_id, "taxon_name": taxon_name, "species_index": species_index.astype(np.int64),
        **{c: column(c, pa.float64()) for c in ("latitude", "longitude")},
        **{c: column(c, pa.int64()) for c in ("year", "month", "day", "hour", "minute", "second")},
        "image_urls": urls, "num_images": np.array([len(u) for u in urls], np.int64),
        "has_vision": has_vision, "vision_row": vision_row, "dataset_split": column("split", pa.string()),
    })
    report = {
        "rows": len(tidy),
        "species": len(species),
        "with_images": int((tidy["num_images"] > 0).sum()),
        "with_vision": int(has_vision.sum()),
        "fixed_image_urls_rows": int(sum(1 for raw, fixed in zip(raw_urls, urls) if (raw or []) != fixed)),
        "has_vision_flag_without_embedding": int((raw_flag & ~has_vision).sum()),
        "embedding_without_has_vision_flag": int((~raw_flag & has_vision).sum()),
        "orphan_vision_embeddings": int(len(vision_gbif) - has_vision.sum()),
        "language_dim": int(language.shape[1]),
        "vision_dim": vision_dim,
        "dataset_split": {str(k): int(v) for k, v in tidy["dataset_split"].value_counts().items()},
    }
    return tidy, species, language, report


def write_vision(chunks, raw_rows: np.ndarray, n_raw: int, vision_out, path) -> int:
    """Copy raw vision rows into tidy order (tidy row k = raw row ``raw_rows[k]``), chunk by chunk;
    contiguous runs (the usual case: both files in observation order) are written in one go."""
    tidy_of_raw = np.full(n_raw, -1, np.int64)
    tidy_of_raw[raw_rows] = np.arange(len(raw_rows))
    out, dim, start = None, 0, 0
    for chunk in chunks:
        matrix = list_matrix(chunk, path, "embedding", start)
        if out is None:
            dim = matrix.shape[1]
            out = vision_out(len(raw_rows), dim)
        elif matrix.shape[1] != dim:
            raise InputDataError(path, f"column 'embedding' has {matrix.shape[1]} values on row {start} but {dim} on "
                                 "row 0", _REFETCH)
        targets = tidy_of_raw[start:start + len(matrix)]
        keep = np.flatnonzero(targets >= 0)
        if len(keep) and (np.diff(targets[keep]) == 1).all():
            out.write_rows(int(targets[keep[0]]), matrix[keep])
        else:
            for row in keep:
                out.write_rows(int(targets[row]), matrix[row:row + 1])
        start += len(matrix)
    if out is None:
        vision_out(0, 0)
    return dim


def _batches(path: Path, column: str, batch_rows: int = 2048):
    """One column of a parquet file, batch by batch (a corrupt file -> InputDataError naming it)."""
    import pyarrow.parquet as pq

    try:
        # pre_buffer (pyarrow's default) would keep every row group's column chunk alive until the end
        source = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
        for batch in source.iter_batches(batch_size=batch_rows, columns=[column]):
            yield batch.column(0)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid / ArrowIOError derive from these
        raise InputDataError(path, f"column '{column}' is not readable ({exc})", _REFETCH) from None


def read_columns(path: Path, columns, also_required=(), fix: str = _REFETCH):
    """A parquet file's ``columns`` as an Arrow table (checking that ``also_required`` exist too, to be
    streamed later), or an InputDataError naming the file, the missing column and ``fix``."""
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except FileNotFoundError:
        raise InputDataError(path, "missing", fix) from None
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a corrupt file
        raise InputDataError(path, f"not a readable parquet file ({exc})", fix) from None
    required = [*columns, *also_required]
    missing = [c for c in required if c not in names]
    if missing:
        raise InputDataError(path, f"missing column(s) {missing}", f"The file needs columns {required}. {fix}")
    try:
        return pq.read_table(path, columns=list(columns))
    except Exception as exc:  # noqa: BLE001
        raise InputDataError(path, f"not a readable parquet file ({exc})", fix) from None


def tidy_deepearth(raw_dir: str | Path, out_dir: str | Path) -> dict:
    """Read data/raw/deepearth, tidy it, write the tidy layout into ``out_dir``; return the report."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from terrapipe.atomic import write_json
    from terrapipe.data.arrays import NpyRows

    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    obs_path, vision_path = raw_dir / OBSERVATIONS_FILE, raw_dir / VISION_FILE
    observations = read_columns(obs_path, [c for c in RAW_COLUMNS if c != "language_embedding"],
                         also_required=["language_embedding"])
    vision_ids = read_columns(vision_path, ["gbif_id"], also_required=["embedding"])
    _check_filled(vision_ids, vision_path)
    writers = []

    def vision_out(n: int, dim: int):
        writers.append(NpyRows(out_dir / "vision_embeddings.npy", np.float32, (n, dim)))
        return writers[-1]

    try:
        tidy, species, language, report = tidy_tables(
            observations, _batches(obs_path, "language_embedding"), vision_ids.column("gbif_id").to_numpy(),
            _batches(vision_path, "embedding"), vision_out, obs_path, vision_path)
    finally:
        for writer in writers:
            writer.close()
    pq.write_table(pa.Table.from_pandas(tidy, schema=observations_schema(), preserve_index=False),
                   out_dir / "observations.parquet")
    species.to_parquet(out_dir / "species.parquet", index=False)
    np.save(out_dir / "language_embeddings.npy", language)
    write_json(out_dir / "tidy_report.json", report)
    log.info("deepearth: %d observations, %d species, %d with vision, %d image_urls rows repaired",
             report["rows"], report["species"], report["with_vision"], report["fixed_image_urls_rows"])
    return report
