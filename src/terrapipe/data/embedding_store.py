"""The DeepEarth embedding store: fixed-stride memory-mapped embeddings plus a DuckDB index.

The original (reference/deepearth-behaviour.md 5) kept 26 MB fp32 token grids per image in one raw file
and looked offsets up in SQLite per batch. This store keeps what training reads, in the layout a batch
reads fastest:

    vision.bin      [n_vision, vision_dim]      one row per observation with vision (pooled V-JEPA-2)
    language.bin    [n_species, language_dim]   one row per species: the DeepSeek-V3 vector is constant
                                                within a species, so it is never repeated per observation
    index.parquet   table ``observations``: one row per observation (row, observation_id "{gbif_id}_1",
                    gbif_id, taxon_id, species_index, taxon_name, split, split_reason, latitude, longitude,
                    year, month, vision_offset (-1: no vision), language_offset); species.parquet:
                    table ``species``. Both are written by DuckDB and queried through DuckDB views
                    (``query``); Parquet rather than a .duckdb file because DuckDB's database file
                    differs byte for byte on every build (a random header and block checksums), which
                    would change the DVC hash of every rebuild and re-run everything downstream
    manifest.json   dtype, dims, row counts, stride bytes, sha256 of every file and of the sources

Rows are raw little-endian ``dtype`` (float16 by default: half the bytes, and rounding is the only
difference from the source; float32 stores the source exactly). ``split`` / ``split_reason`` are NULL
for observations the split left out (by default those without vision).

``EmbeddingStore.open`` loads the index once into numpy arrays (a DuckDB query per batch costs about a
millisecond, the whole budget of a batch) and memory-maps the files read-only; ``read`` gathers a batch
in offset order and returns float32 in the caller's order; ``query`` runs ad-hoc SQL on the index.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from terrapipe.errors import ConfigError, InputDataError
from terrapipe.sources.transfer import file_digest as sha256

log = logging.getLogger("terrapipe")

FORMAT = 1
MANIFEST = "manifest.json"
INDEX_FILE = "index.parquet"
SPECIES_FILE = "species.parquet"
TABLES = {"observations": INDEX_FILE, "species": SPECIES_FILE}
VISION_FILE = "vision.bin"
LANGUAGE_FILE = "language.bin"
DTYPES = ("float16", "float32")
INDEX_COLUMNS = ("row", "observation_id", "gbif_id", "taxon_id", "species_index", "taxon_name", "split",
                 "split_reason", "latitude", "longitude", "year", "month", "vision_offset", "language_offset")
OBSERVATION_COLUMNS = ("observation_id", "gbif_id", "taxon_id", "taxon_name", "species_index", "latitude",
                       "longitude", "year", "month", "has_vision", "vision_row")
ASSIGNMENT_COLUMNS = ("id", "split", "split_reason")
SPLITS = ("train", "test")
MATRIX_FIELDS = ("file", "rows", "dim", "stride_bytes", "sha256")  # per matrix in manifest.json
CHUNK_ROWS = 4096  # rows converted per write: bounded memory whatever the store's size
CAST_GRAIN = 32768  # values per float32 cast in read(): at::internal::GRAIN_SIZE, below which torch stays serial
_REBUILD = "Re-run `dvc repro embedding_store` to rebuild the store"
_RETIDY = "Re-run `dvc repro normalize_deepearth`"
_RESPLIT = "Re-run `dvc repro split@deepearth`"


class StoreConfig(BaseModel):
    """params.yaml deepearth.store (the embedding_store stage reads only this part of the section)."""
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    dtype: Literal["float16", "float32"] = "float16"   # float32: the source exactly, twice the bytes


def validated(model: type[BaseModel], raw, where: str):
    """``raw`` validated as ``model``; a ConfigError lists each problem under its dotted params key
    (``where`` is the section's own key, e.g. "deepearth")."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            message = str(error["ctx"]["error"]) if error["type"] == "value_error" else error["msg"]
            lines.append(".".join([where, *(str(p) for p in error["loc"])]) + f": {message}")
        raise ConfigError(f"params.yaml: invalid {where} section:\n  " + "\n  ".join(lines)) from None


def store_config(params) -> StoreConfig:
    """The validated ``deepearth.store`` section of loaded params (terrapipe.config.Params)."""
    return validated(StoreConfig, params.deepearth.get("store", {}), "deepearth.store")


@dataclass(frozen=True)
class EmbeddingBatch:
    """One batch read from the store, float32, rows in the caller's order (None: not requested)."""
    vision: np.ndarray | None     # [B, vision_dim]
    language: np.ndarray | None   # [B, language_dim]


# ---------------------------------------------------------------------------------------------- build

def _read_parquet(path: Path, columns, fix: str):
    """``columns`` of a parquet file as a DataFrame (terrapipe.data.deepearth.read_columns' checks)."""
    from terrapipe.data.deepearth import read_columns

    return read_columns(path, columns, fix=fix).to_pandas()


def _load_matrix(path: Path, fix: str) -> np.ndarray:
    """A float32 [rows, dim] ``.npy`` memory-mapped, or an InputDataError naming it."""
    try:
        matrix = np.load(path, mmap_mode="r")
    except FileNotFoundError:
        raise InputDataError(path, "missing", fix) from None
    except (ValueError, OSError) as exc:
        raise InputDataError(path, f"not a readable .npy file ({exc})", fix) from None
    if matrix.ndim != 2 or matrix.dtype != np.float32:
        raise InputDataError(path, f"holds {matrix.dtype} {matrix.shape}, not a float32 [rows, dim] matrix", fix)
    return matrix


def _write_rows(source: np.ndarray, source_path: Path, target: Path, dtype: np.dtype) -> str:
    """Copy ``source`` into ``target`` as raw ``dtype`` rows, chunk by chunk; returns the file's sha256.

    Refuses non-finite values and values that float16 cannot hold (they would become inf silently).
    """
    digest = hashlib.sha256()
    with open(target, "wb") as handle:
        for start in range(0, len(source), CHUNK_ROWS):
            chunk = np.asarray(source[start:start + CHUNK_ROWS])
            if not np.isfinite(chunk).all():
                row = start + int(np.flatnonzero(~np.isfinite(chunk).all(axis=1))[0])
                raise InputDataError(source_path, f"row {row} holds NaN or inf", _RETIDY)
            with np.errstate(over="ignore"):  # an overflow is refused just below, with the row
                converted = np.ascontiguousarray(chunk, dtype=dtype.newbyteorder("<"))
            if not np.isfinite(converted).all():
                row = start + int(np.flatnonzero(~np.isfinite(converted).all(axis=1))[0])
                raise InputDataError(source_path, f"row {row} holds values beyond {dtype}'s range "
                                     f"(max |x| = {float(np.abs(chunk).max()):.4g})",
                                     "Set params.yaml deepearth.store.dtype: float32")
            data = converted.tobytes()
            digest.update(data)
            handle.write(data)
    return digest.hexdigest()


def index_frame(observations, assignments, n_species: int, n_vision: int, obs_path: Path, assignments_path: Path):
    """The ``observations`` index table: observations (file order) joined with their split assignment."""
    import pandas as pd

    species_index = observations["species_index"].to_numpy()
    if ((species_index < 0) | (species_index >= n_species)).any():
        row = int(np.flatnonzero((species_index < 0) | (species_index >= n_species))[0])
        raise InputDataError(obs_path, f"column 'species_index' = {species_index[row]} on row {row} is outside "
                             f"[0, {n_species}) (species.parquet)", _RETIDY)
    vision_row = observations["vision_row"].to_numpy()
    has_vision = observations["has_vision"].to_numpy().astype(bool)
    bad = (vision_row >= n_vision) | (vision_row < -1) | (has_vision != (vision_row >= 0))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputDataError(obs_path, f"row {row} has vision_row {vision_row[row]} and has_vision {has_vision[row]}, "
                             f"inconsistent with {n_vision} vision rows", _RETIDY)
    used = vision_row[vision_row >= 0]
    if len(np.unique(used)) != len(used):
        raise InputDataError(obs_path, "column 'vision_row' points two observations at one vision row", _RETIDY)
    ids = assignments["id"].astype(str)
    if ids.duplicated().any():
        raise InputDataError(assignments_path, f"column 'id' repeats {ids[ids.duplicated()].iloc[0]!r}", _RESPLIT)
    unknown = ~assignments["split"].isin(SPLITS)
    if unknown.any():
        raise InputDataError(assignments_path, f"column 'split' holds {assignments['split'][unknown].iloc[0]!r} "
                             f"(expected one of {list(SPLITS)})", _RESPLIT)
    position = pd.Index(observations["observation_id"].astype(str)).get_indexer(ids)
    if (position < 0).any():
        raise InputDataError(assignments_path, f"id {ids[position < 0].iloc[0]!r} is not an observation of "
                             f"{obs_path}", f"The split is older than the observations. {_RESPLIT}")
    split = np.full(len(observations), None, dtype=object)
    reason = np.full(len(observations), None, dtype=object)
    split[position] = assignments["split"].to_numpy(dtype=object)
    reason[position] = assignments["split_reason"].to_numpy(dtype=object)
    frame = pd.DataFrame({
        "row": np.arange(len(observations), dtype=np.int64),
        **{c: observations[c] for c in ("observation_id", "gbif_id", "taxon_id", "species_index", "taxon_name")},
        "split": pd.array(split, dtype="str"), "split_reason": pd.array(reason, dtype="str"),
        **{c: observations[c] for c in ("latitude", "longitude", "year", "month")},
        "vision_offset": vision_row.astype(np.int64), "language_offset": species_index.astype(np.int64),
    })
    return frame[list(INDEX_COLUMNS)]


def _write_index(store_dir: Path, frame, species) -> None:
    """The two index tables as Parquet files written by DuckDB (same rows -> same bytes)."""
    import duckdb

    con = duckdb.connect(config={"threads": 1})
    try:
        con.register("index_frame", frame)
        con.register("species_frame", species)
        con.execute(f"COPY (SELECT * FROM index_frame ORDER BY row) TO '{store_dir / INDEX_FILE}' (FORMAT parquet)")
        con.execute("COPY (SELECT species_index, taxon_id, taxon_name, species_index AS language_offset "
                    f"FROM species_frame ORDER BY species_index) TO '{store_dir / SPECIES_FILE}' (FORMAT parquet)")
    finally:
        con.close()


def _index_connection(store_dir: Path):
    """An in-memory DuckDB connection with views ``observations`` and ``species`` over the index files."""
    import duckdb

    con = duckdb.connect(config={"threads": 1})
    for table, file in TABLES.items():
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{store_dir / file}')")
    return con


def build_store(processed_dir: str | Path, assignments_path: str | Path, out_dir: str | Path,
                dtype: str = "float16") -> dict:
    """Build the store from the tidy DeepEarth layout and the split's assignments; returns the manifest.

    Args: processed_dir: data/processed/deepearth (terrapipe.data.deepearth's layout);
        assignments_path: data/processed/splits/deepearth/assignments.parquet; out_dir: replaced atomically;
        dtype: "float16" or "float32" (params deepearth.store.dtype).
    Returns: the manifest dict (also written as manifest.json).
    """
    from terrapipe.atomic import atomic_path, write_json

    if dtype not in DTYPES:
        raise ConfigError(f"params.yaml deepearth.store.dtype: {dtype!r} is not one of {list(DTYPES)}")
    processed_dir, assignments_path = Path(processed_dir), Path(assignments_path)
    paths_in = {"observations": processed_dir / "observations.parquet", "species": processed_dir / "species.parquet",
                "language": processed_dir / "language_embeddings.npy",
                "vision": processed_dir / "vision_embeddings.npy", "assignments": assignments_path}
    observations = _read_parquet(paths_in["observations"], OBSERVATION_COLUMNS, _RETIDY)
    species = _read_parquet(paths_in["species"], ("species_index", "taxon_id", "taxon_name"), _RETIDY)
    if not np.array_equal(species["species_index"].to_numpy(), np.arange(len(species))):
        raise InputDataError(paths_in["species"], "column 'species_index' is not 0 .. n-1 in file order", _RETIDY)
    language = _load_matrix(paths_in["language"], _RETIDY)
    vision = _load_matrix(paths_in["vision"], _RETIDY)
    if len(language) != len(species):
        raise InputDataError(paths_in["language"], f"has {len(language)} rows for {len(species)} species", _RETIDY)
    assignments = _read_parquet(assignments_path, ASSIGNMENT_COLUMNS, _RESPLIT)
    frame = index_frame(observations, assignments, len(species), len(vision), paths_in["observations"],
                        assignments_path)
    stored = np.dtype(dtype)
    out_dir = Path(out_dir)
    with atomic_path(out_dir, directory=True) as tmp:
        files = {}
        for name, matrix, file in (("vision", vision, VISION_FILE), ("language", language, LANGUAGE_FILE)):
            files[name] = {"file": file, "rows": int(matrix.shape[0]), "dim": int(matrix.shape[1]),
                           "stride_bytes": int(matrix.shape[1] * stored.itemsize),
                           "sha256": _write_rows(matrix, paths_in[name], tmp / file, stored)}
        _write_index(tmp, frame, species)
        split = frame["split"]
        manifest = {
            "format": FORMAT, "dtype": dtype, "byte_order": "little", **files,
            "index": {"file": INDEX_FILE, "table": "observations", "rows": len(frame),
                      "sha256": sha256(tmp / INDEX_FILE)},
            "sources": {name: {"path": str(path), "sha256": sha256(path)} for name, path in paths_in.items()},
            "counts": {
                "observations": len(frame), "species": len(species),
                "with_vision": int((frame["vision_offset"] >= 0).sum()),
                "unassigned": int(split.isna().sum()),
                "split": {s: int((split == s).sum()) for s in SPLITS},
                "split_reason": {str(k): int(v) for k, v in frame["split_reason"].value_counts().sort_index().items()},
                "orphan_vision_rows": int(len(vision) - (frame["vision_offset"] >= 0).sum()),
            },
        }
        write_json(tmp / MANIFEST, manifest)
    log.info("embedding store: %d observations (%d with vision, %d unassigned), %d species, %s -> %s",
             len(frame), manifest["counts"]["with_vision"], manifest["counts"]["unassigned"], len(species),
             dtype, out_dir)
    return manifest


# ----------------------------------------------------------------------------------------------- read

def _masked_to_object(values) -> np.ndarray:
    """A DuckDB column (a masked array where it has NULLs) as a plain array, NULL -> None."""
    if isinstance(values, np.ma.MaskedArray):
        out = np.ma.getdata(values).astype(object)
        out[np.ma.getmaskarray(values)] = None
        return out
    return np.asarray(values)


class EmbeddingStore:
    """A built store, opened read-only: the index as numpy arrays and both matrices memory-mapped."""

    def __init__(self, store_dir: Path, manifest: dict, index: dict[str, np.ndarray],
                 vision: np.ndarray, language: np.ndarray):
        self.store_dir, self.manifest, self.index = store_dir, manifest, index
        self.vision, self.language = vision, language     # np.memmap [rows, dim] of the stored dtype
        self.vision_offset = index["vision_offset"]
        self.language_offset = index["language_offset"]

    @classmethod
    def open(cls, store_dir: str | Path, *, verify: bool = False) -> EmbeddingStore:
        """Open ``store_dir``; ``verify`` also checks every file's sha256 against the manifest (a full read)."""
        store_dir = Path(store_dir)
        manifest = _read_manifest(store_dir)
        matrices = {}
        for name in ("vision", "language"):
            spec = manifest[name]
            path = _checked_file(store_dir, spec, spec["rows"] * spec["stride_bytes"], verify)
            dtype = np.dtype(manifest["dtype"]).newbyteorder("<")
            if spec["stride_bytes"] != spec["dim"] * dtype.itemsize:
                raise InputDataError(store_dir / MANIFEST, f"{name}: stride {spec['stride_bytes']} bytes does not "
                                     f"match {spec['dim']} x {manifest['dtype']}", _REBUILD)
            shape = (spec["rows"], spec["dim"])
            matrices[name] = (np.memmap(path, dtype=dtype, mode="r", shape=shape) if spec["rows"]
                              else np.zeros(shape, dtype))  # an empty file cannot be mapped
        index_path = _checked_file(store_dir, manifest["index"], None, verify)
        index = _load_index(index_path, manifest)
        for name, column in (("vision", "vision_offset"), ("language", "language_offset")):
            offsets = index[column]
            if len(offsets) and (offsets.max() >= manifest[name]["rows"] or offsets.min() < -1
                                 or (name == "language" and offsets.min() < 0)):
                raise InputDataError(index_path, f"column '{column}' points outside the {manifest[name]['rows']} "
                                     f"rows of {manifest[name]['file']}", _REBUILD)
        return cls(store_dir, manifest, index, matrices["vision"], matrices["language"])

    def __len__(self) -> int:
        return len(self.vision_offset)

    def read(self, rows, vision: bool = True, language: bool = True) -> EmbeddingBatch:
        """The embeddings of index ``rows`` (any order, repeats allowed) as float32, in that order.

        Args: rows [B] index rows (the ``row`` column). Returns EmbeddingBatch with vision [B, vision_dim]
        and language [B, language_dim] (None for a modality not asked for).
        """
        rows = np.asarray(rows, dtype=np.int64)
        if rows.ndim != 1 or (len(rows) and (rows.min() < 0 or rows.max() >= len(self))):
            raise IndexError(f"rows must be a 1-D array of index rows in [0, {len(self)})")
        vision_rows = None
        if vision:
            offsets = self.vision_offset[rows]
            if len(offsets) and offsets.min() < 0:
                missing = rows[offsets < 0]
                raise ValueError(f"{len(missing)} of the rows have no vision embedding (first: row {missing[0]}); "
                                 "select rows with vision_offset >= 0")
            vision_rows = _gather(self.vision, offsets)
        language_rows = _gather(self.language, self.language_offset[rows]) if language else None
        return EmbeddingBatch(vision=vision_rows, language=language_rows)

    def species_language(self) -> np.ndarray:
        """[n_species, language_dim] float32: every species' language embedding (row = species_index)."""
        return _gather(self.language, np.arange(len(self.language)))

    def query(self, sql: str):
        """Run ``sql`` on the index through DuckDB (tables ``observations`` and ``species``); returns a DataFrame.

        The index files are only read, so several readers can query at the same time.
        """
        with _index_connection(self.store_dir) as con:
            return con.execute(sql).df()

    def close(self) -> None:
        """Unmap the files (the page cache can then drop their pages)."""
        self.vision = self.language = None


def _gather(matrix: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Rows ``offsets`` of ``matrix`` as float32 [len(offsets), dim].

    Each distinct row is read once, in file order (sequential for the page cache and the disk), then put
    in the caller's order. torch casts float16 -> float32 (numpy's cast: ~0.9 ms for 64 x 7168 values here,
    most of the budget), in pieces below its parallel grain so the cast stays on the calling thread: waking
    the intra-op pool on the loaded 2-core build machine cost ~30 ms per batch.
    """
    import torch

    unique, inverse = np.unique(offsets, return_inverse=True)
    stored = np.asarray(matrix[unique])[inverse]                    # [B, dim] stored dtype, caller's order
    if stored.dtype == np.float32:
        return stored
    out = np.empty(stored.shape, np.float32)
    source, target = torch.from_numpy(stored.reshape(-1)), torch.from_numpy(out.reshape(-1))  # flat views
    for start in range(0, source.numel(), CAST_GRAIN):
        target[start:start + CAST_GRAIN].copy_(source[start:start + CAST_GRAIN])
    return out


def _read_manifest(store_dir: Path) -> dict:
    path = store_dir / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputDataError(path, "missing", _REBUILD) from None
    except (ValueError, OSError) as exc:
        raise InputDataError(path, f"not readable JSON ({exc})", _REBUILD) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InputDataError(path, f"is not a format-{FORMAT} store manifest", _REBUILD)
    required = {"vision": MATRIX_FIELDS, "language": MATRIX_FIELDS, "index": ("file", "rows", "sha256")}
    missing = [f"{section}.{key}" for section, keys in required.items() for key in keys
               if not isinstance(manifest.get(section), dict) or key not in manifest[section]]
    if missing or manifest.get("dtype") not in DTYPES:
        raise InputDataError(path, f"lacks or garbles field(s) {missing or ['dtype']}", _REBUILD)
    return manifest


def _checked_file(store_dir: Path, spec: dict, size: int | None, verify: bool) -> Path:
    """The store file ``spec`` names, checked for existence, its expected ``size`` and (``verify``) sha256."""
    path = store_dir / spec["file"]
    if not path.is_file():
        raise InputDataError(path, "missing", _REBUILD)
    actual = path.stat().st_size
    if size is not None and actual != size:
        raise InputDataError(path, f"is {actual} bytes but the manifest says {size} (truncated or replaced)", _REBUILD)
    if verify and sha256(path) != spec["sha256"]:
        raise InputDataError(path, "does not match the sha256 in manifest.json (corrupt or replaced)", _REBUILD)
    return path


def _load_index(path: Path, manifest: dict) -> dict[str, np.ndarray]:
    import duckdb

    try:
        with _index_connection(path.parent) as con:
            columns = con.execute(f"SELECT {', '.join(INDEX_COLUMNS)} FROM observations ORDER BY row").fetchnumpy()
    except duckdb.Error as exc:
        raise InputDataError(path, f"is not a readable index table with columns {list(INDEX_COLUMNS)} "
                             f"({str(exc).splitlines()[0]})", _REBUILD) from None
    index = {name: _masked_to_object(values) for name, values in columns.items()}
    if len(index["row"]) != manifest["index"]["rows"]:
        raise InputDataError(path, f"has {len(index['row'])} rows but the manifest says {manifest['index']['rows']}",
                             _REBUILD)
    return index
