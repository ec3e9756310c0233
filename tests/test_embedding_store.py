"""The DeepEarth embedding store: exact round trips (fp16 / fp32), batch order, index, errors naming files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from terrapipe.data.embedding_store import EmbeddingStore, build_store
from terrapipe.errors import ConfigError, InputDataError

SPECIES = ["Acer rubrum", "Pinus elliottii", "Quercus geminata", "Quercus virginiana", "Serenoa repens",
           "Typha latifolia"]
UNSEEN = "Typha latifolia"   # observed only in the test split


def write_processed(root: Path, n_observations: int = 240, vision_dim: int = 16, language_dim: int = 24,
                    seed: int = 0, scale: float = 1.0) -> tuple[Path, Path]:
    """A tiny data/processed/deepearth + assignments.parquet in the real layouts; returns (processed, assignments).

    Species have distinct vision prototypes (learnable), one species (UNSEEN) appears only in the test
    split, a quarter of the observations lack vision and are left out of the split (require_vision).
    """
    rng = np.random.default_rng(seed)
    processed = root / "processed"
    processed.mkdir(parents=True)
    n_species = len(SPECIES)
    species = rng.integers(0, n_species - 1, n_observations)            # UNSEEN placed in the test rows below
    has_vision = rng.random(n_observations) < 0.75
    vision_row = np.where(has_vision, np.cumsum(has_vision) - 1, -1)
    reason = rng.choice(["temporal_train"] * 6 + ["temporal_test", "spatial_test_region_1", "spatial_test_region_2"],
                        n_observations)
    test_rows = np.flatnonzero(has_vision & (reason != "temporal_train"))
    species[test_rows[:3]] = n_species - 1
    gbif = 1_000_000 + np.arange(n_observations) * 7
    pd.DataFrame({
        "observation_id": [f"{g}_1" for g in gbif], "gbif_id": gbif,
        "taxon_id": [f"t{s}" for s in species], "taxon_name": [SPECIES[s] for s in species],
        "species_index": species.astype(np.int64),
        "latitude": 28.0 + rng.random(n_observations), "longitude": -81.9 + rng.random(n_observations),
        "year": np.where(reason == "temporal_test", 2025, 2015 + species % 5), "month": 1 + np.arange(n_observations) % 12,
        "day": np.ones(n_observations, np.int64), "has_vision": has_vision, "vision_row": vision_row,
    }).to_parquet(processed / "observations.parquet", index=False)
    pd.DataFrame({"species_index": np.arange(n_species), "taxon_id": [f"t{i}" for i in range(n_species)],
                  "taxon_name": SPECIES, "n_observations": np.bincount(species, minlength=n_species)}
                 ).to_parquet(processed / "species.parquet", index=False)
    prototypes = rng.standard_normal((n_species, vision_dim))
    vision = prototypes[species[has_vision]] + 0.3 * rng.standard_normal((int(has_vision.sum()), vision_dim))
    np.save(processed / "vision_embeddings.npy", (scale * vision).astype(np.float32))
    np.save(processed / "language_embeddings.npy", rng.standard_normal((n_species, language_dim)).astype(np.float32))
    assigned = np.flatnonzero(has_vision)
    assignments = root / "assignments.parquet"
    pd.DataFrame({"id": [f"{g}_1" for g in gbif[assigned]],
                  "split": np.where(reason[assigned] == "temporal_train", "train", "test"),
                  "split_reason": reason[assigned], "latitude": 28.5, "longitude": -81.5}).to_parquet(assignments,
                                                                                                     index=False)
    return processed, assignments


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return write_processed(tmp_path_factory.mktemp("deepearth"))


@pytest.fixture(scope="module")
def store_dir(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("store") / "embedding_store"
    build_store(*source, out)
    return out


def _vision_rows(store: EmbeddingStore) -> np.ndarray:
    return np.flatnonzero(store.vision_offset >= 0)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_round_trip_is_exact_up_to_the_stored_dtype(source, tmp_path, dtype):
    processed, assignments = source
    build_store(processed, assignments, tmp_path / "store", dtype=dtype)
    store = EmbeddingStore.open(tmp_path / "store", verify=True)
    vision, language = np.load(processed / "vision_embeddings.npy"), np.load(processed / "language_embeddings.npy")
    observations = pd.read_parquet(processed / "observations.parquet")
    rows = np.arange(len(store))
    with_vision = _vision_rows(store)
    batch = store.read(with_vision)
    expected_vision = vision[observations["vision_row"].to_numpy()[with_vision]]
    expected_language = language[observations["species_index"].to_numpy()[with_vision]]
    assert batch.vision.dtype == batch.language.dtype == np.float32
    assert np.array_equal(batch.vision, expected_vision.astype(dtype).astype(np.float32))
    assert np.array_equal(batch.language, expected_language.astype(dtype).astype(np.float32))
    assert np.array_equal(store.read(rows, vision=False).language,
                          language[observations["species_index"]].astype(dtype).astype(np.float32))
    if dtype == "float16":
        assert not np.array_equal(batch.vision, expected_vision)   # rounding happened (and is the only change)
    assert (tmp_path / "store" / "language.bin").stat().st_size == len(language) * language.shape[1] * np.dtype(dtype).itemsize


def test_batches_keep_the_callers_order_with_repeats(store_dir, source):
    store = EmbeddingStore.open(store_dir)
    vision = np.load(source[0] / "vision_embeddings.npy").astype(np.float16).astype(np.float32)
    rows = _vision_rows(store)
    picked = np.array([rows[9], rows[2], rows[9], rows[40], rows[0], rows[2]])
    batch = store.read(picked)
    assert np.array_equal(batch.vision, vision[store.vision_offset[picked]])
    for i, row in enumerate(picked):
        assert np.array_equal(batch.language[i], store.read([row]).language[0])
    assert store.read(picked, language=False).language is None
    assert store.read([], vision=True).vision.shape == (0, 16)


def test_rows_without_vision_are_refused_not_zero_filled(store_dir):
    store = EmbeddingStore.open(store_dir)
    no_vision = np.flatnonzero(store.vision_offset < 0)[0]
    with pytest.raises(ValueError, match=rf"no vision embedding \(first: row {no_vision}\)"):
        store.read([_vision_rows(store)[0], no_vision])
    assert store.read([no_vision], vision=False).language.shape == (1, 24)
    with pytest.raises(IndexError):
        store.read([len(store)])


def test_index_holds_every_observation_with_its_split(store_dir, source):
    processed, assignments = source
    store = EmbeddingStore.open(store_dir)
    observations = pd.read_parquet(processed / "observations.parquet")
    split = pd.read_parquet(assignments).set_index("id")
    index = store.index
    assert len(store) == len(observations)
    assert list(index["observation_id"]) == [f"{g}_1" for g in observations["gbif_id"]]
    assert list(index["language_offset"]) == list(observations["species_index"])
    assigned = np.array([s is not None for s in index["split"]])
    assert np.array_equal(assigned, observations["has_vision"].to_numpy())       # the split held vision rows only
    for row in np.flatnonzero(assigned)[:20]:
        assert index["split_reason"][row] == split.loc[index["observation_id"][row], "split_reason"]
    spatial = store.query("SELECT row FROM observations WHERE split_reason LIKE 'spatial_test_region_%' ORDER BY row")
    expected = [r for r in range(len(store)) if str(index["split_reason"][r]).startswith("spatial_test_region_")]
    assert spatial["row"].tolist() == expected and expected
    manifest = json.loads((store_dir / "manifest.json").read_text())
    assert manifest["counts"]["unassigned"] == int((~assigned).sum())
    assert manifest["vision"]["stride_bytes"] == 16 * 2 and manifest["language"]["stride_bytes"] == 24 * 2
    assert set(manifest["sources"]) == {"observations", "species", "language", "vision", "assignments"}
    assert store.query("SELECT count(*) AS n FROM species")["n"][0] == len(SPECIES)


def _copy(store_dir: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(store_dir, dst)
    return dst


def test_damaged_stores_name_the_file_and_the_fix(store_dir, tmp_path):
    rebuild = r"dvc repro embedding_store"
    missing = _copy(store_dir, tmp_path / "missing")
    (missing / "manifest.json").unlink()
    with pytest.raises(InputDataError, match=rf"manifest\.json: missing.*{rebuild}"):
        EmbeddingStore.open(missing)

    truncated = _copy(store_dir, tmp_path / "truncated")
    data = (truncated / "vision.bin").read_bytes()
    (truncated / "vision.bin").write_bytes(data[:-10])
    with pytest.raises(InputDataError, match=rf"vision\.bin: is {len(data) - 10} bytes.*truncated.*{rebuild}"):
        EmbeddingStore.open(truncated)

    flipped = _copy(store_dir, tmp_path / "flipped")
    data = bytearray((flipped / "language.bin").read_bytes())
    data[100] ^= 0xFF
    (flipped / "language.bin").write_bytes(bytes(data))
    EmbeddingStore.open(flipped)                      # same size: only the checksum can tell
    with pytest.raises(InputDataError, match=rf"language\.bin: does not match the sha256.*{rebuild}"):
        EmbeddingStore.open(flipped, verify=True)

    garbage = _copy(store_dir, tmp_path / "garbage")
    (garbage / "index.parquet").write_bytes(b"not a parquet file" * 100)
    with pytest.raises(InputDataError, match=rf"index\.parquet: is not a readable index table.*{rebuild}"):
        EmbeddingStore.open(garbage)

    garbled = _copy(store_dir, tmp_path / "garbled")
    manifest = json.loads((garbled / "manifest.json").read_text())
    del manifest["vision"]["stride_bytes"]
    (garbled / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputDataError, match=r"manifest\.json: lacks or garbles field\(s\) \['vision\.stride_bytes'\]"):
        EmbeddingStore.open(garbled)


def test_bad_inputs_name_the_file_and_leave_the_old_store(source, tmp_path, store_dir):
    processed, assignments = source
    out = _copy(store_dir, tmp_path / "store")
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    stale = tmp_path / "stale.parquet"
    frame = pd.read_parquet(assignments)
    frame.loc[0, "id"] = "999_1"
    frame.to_parquet(stale, index=False)
    with pytest.raises(InputDataError, match=r"stale\.parquet: id '999_1' is not an observation.*split@deepearth"):
        build_store(processed, stale, out)

    huge = write_processed(tmp_path / "huge", scale=1e5)
    with pytest.raises(InputDataError, match=r"vision_embeddings\.npy: row \d+ holds values beyond float16.*float32"):
        build_store(*huge, out)
    build_store(*huge, tmp_path / "huge_store", dtype="float32")          # float32 holds them

    with pytest.raises(ConfigError, match=r"deepearth\.store\.dtype: 'bfloat16'"):
        build_store(processed, assignments, out, dtype="bfloat16")
    (processed / "missing").mkdir()
    with pytest.raises(InputDataError, match=r"missing/observations\.parquet: missing.*normalize_deepearth"):
        build_store(processed / "missing", assignments, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_the_store_is_rebuilt_identically(source, tmp_path):
    first = build_store(*source, tmp_path / "a")
    second = build_store(*source, tmp_path / "b")
    for name in ("vision.bin", "language.bin", "index.parquet", "species.parquet", "manifest.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()  # same DVC hash
    assert first == second
