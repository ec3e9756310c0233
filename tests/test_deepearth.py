"""DeepEarth: the sample backend's columns and ground truth, and the tidy stage's repairs and checks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import run_stage

from terrapipe.config import parse_params
from terrapipe.data.deepearth import fix_image_urls, tidy_deepearth
from terrapipe.errors import InputDataError
from terrapipe.sources.sample_deepearth import HABITAT_COVER, deepearth_batches, fetch_deepearth, sample_deepearth
from terrapipe.sources.world import WORLDCOVER, World

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"sources": {"deepearth": {"sample": {"n_observations": 2000, "language_dim": 64}}}}


def small_params(seed: int = 0):
    return parse_params({**SMALL, "seed": seed})


@pytest.fixture(scope="module")
def raw(study, tmp_path_factory):
    out = tmp_path_factory.mktemp("raw")
    fetch_deepearth(small_params(), study, out)
    return out


@pytest.fixture(scope="module")
def tidy(raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("tidy")
    return out, tidy_deepearth(raw, out)


def _frame(raw: Path) -> pd.DataFrame:
    return pq.read_table(raw / "observations.parquet").drop_columns(["language_embedding"]).to_pandas()


def test_sample_is_deterministic(study):
    obs_a, vis_a = sample_deepearth(small_params(0), study)
    obs_b, vis_b = sample_deepearth(small_params(0), study)
    obs_c, vis_c = sample_deepearth(small_params(1), study)
    assert obs_a.equals(obs_b) and vis_a.equals(vis_b)
    assert not obs_a.column("latitude").equals(obs_c.column("latitude"))
    assert not vis_a.column("embedding").equals(vis_c.column("embedding"))


def test_raw_schema(raw):
    schema = pq.read_schema(raw / "observations.parquet")
    expected = {"gbif_id": pa.int64(), "taxon_id": pa.string(), "taxon_name": pa.string(),
                "latitude": pa.float64(), "longitude": pa.float64(), "year": pa.int64(), "month": pa.int64(),
                "day": pa.int64(), "hour": pa.int64(), "minute": pa.int64(), "second": pa.int64(),
                "image_urls": pa.list_(pa.string()), "num_images": pa.int64(), "has_vision": pa.bool_(),
                "language_embedding": pa.list_(pa.float32()), "split": pa.string()}
    assert {f.name: f.type for f in schema} == expected
    table = pq.read_table(raw / "observations.parquet")
    assert 0 < table.column("hour").null_count < 0.2 * table.num_rows
    assert set(pa.compute.list_value_length(table.column("language_embedding")).to_pylist()) == {64}
    vision = pq.read_table(raw / "vision_embeddings.parquet")
    assert {f.name: f.type for f in vision.schema} == {"gbif_id": pa.int64(), "embedding": pa.list_(pa.float32())}
    assert set(pa.compute.list_value_length(vision.column("embedding")).to_pylist()) == {1408}


def test_raw_content_looks_like_the_real_dataset(raw, study):
    frame = _frame(raw)
    west, south, east, north = study.deepearth_bbox
    assert frame["latitude"].between(south, north).all() and frame["longitude"].between(west, east).all()
    assert frame["gbif_id"].is_unique
    per_year = frame["year"].value_counts().reindex(range(2010, 2026), fill_value=0)
    recent = per_year.loc[2020:2024].mean()
    assert per_year[2010] < 0.1 * recent and per_year[2025] < recent
    assert ((frame["split"] == "temporal_test") == (frame["year"] == 2025)).all()
    assert frame["has_vision"].sum() == 1200
    assert (frame.loc[frame["has_vision"], "num_images"] > 0).all()
    joined = frame["image_urls"].map(lambda urls: len(urls) == 1 and ";" in urls[0])
    assert 0.02 < joined.mean() < 0.08
    vision = pq.read_table(raw / "vision_embeddings.parquet")
    assert set(vision.column("gbif_id").to_pylist()) == set(frame.loc[frame["has_vision"], "gbif_id"])


def test_species_live_in_their_habitat_and_season(raw, study):
    frame = _frame(raw)
    cover = World(0).land_cover(frame["latitude"], frame["longitude"])
    habitat = frame["taxon_id"].map(study.species.set_index("taxon_id")["habitat"]).to_numpy()
    for name, covers in HABITAT_COVER.items():
        preferred = np.isin(cover[habitat == name], [WORLDCOVER[c] for c in covers])
        assert preferred.mean() > 0.8, name
    common = frame.groupby("taxon_id")["month"].filter(lambda m: len(m) >= 30).groupby(frame["taxon_id"])
    assert common.apply(lambda m: m.value_counts(normalize=True).iloc[:3].sum()).min() > 0.45
    counts = frame["taxon_id"].value_counts()
    assert counts.iloc[0] > 10 * counts.median()     # Zipf-like abundance


# Ground truth of the vision embeddings, at a moderate size (vision_dim 128 keeps the fits fast; the
# default 8,000 x 1,408 sample lands in the same ranges, see the module docstring of sample_deepearth).
GROUND_TRUTH = {"n_observations": 4000, "language_dim": 16, "vision_dim": 128}


@pytest.fixture(scope="module")
def vision_sample(study):
    """(observations with vision, embeddings, split result) under the default split.deepearth params."""
    from terrapipe.data.split import spatiotemporal_split

    params = parse_params({"sources": {"deepearth": {"sample": GROUND_TRUTH}}})
    observations, vision = sample_deepearth(params, study)
    obs = observations.drop_columns(["language_embedding"]).to_pandas()
    obs = obs[obs["has_vision"]].reset_index(drop=True)
    x = np.stack(vision.column("embedding").to_numpy(zero_copy_only=False))
    split = spatiotemporal_split(obs["latitude"], obs["longitude"], obs["year"], params.split.deepearth)
    return obs, x, split


def _logistic_top1(x, y, train, test) -> float:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(max_iter=500).fit(x[train], y[train])
    return float((model.predict(x[test]) == y[test]).mean())


def test_a_linear_classifier_is_far_from_perfect_on_the_holdout(vision_sample):
    from sklearn.neighbors import KNeighborsClassifier

    obs, x, split = vision_sample
    y, test = obs["taxon_id"].to_numpy(), split.split == "test"
    train = ~test
    logistic = _logistic_top1(x, y, train, test)
    classes = np.unique(y[train])
    centroids = np.stack([x[train & (y == c)].mean(axis=0) for c in classes])
    nearest = classes[np.argmin((centroids * centroids).sum(axis=1) - 2 * x[test] @ centroids.T, axis=1)]
    centroid = (nearest == y[test]).mean()
    knn = (KNeighborsClassifier(5).fit(x[train], y[train]).predict(x[test]) == y[test]).mean()
    majority = (y[test] == pd.Series(y[train]).value_counts().index[0]).mean()
    print(f"\nheld-out top-1 on {test.sum()} of {len(y)} observations: logistic regression {logistic:.3f}, "
          f"nearest centroid {centroid:.3f}, 5-NN {knn:.3f}, majority class {majority:.3f}")
    assert 0.4 <= logistic <= 0.85
    assert min(logistic, centroid, knn) > 3 * majority


def test_rare_species_reach_the_test_split_unseen(vision_sample):
    obs, _, split = vision_sample
    y, test = obs["taxon_id"].to_numpy(), split.split == "test"
    unseen = ~np.isin(y[test], y[~test])
    print(f"\n{len(np.unique(y))} species; test: {test.sum()} observations of {len(np.unique(y[test]))} species, "
          f"{len(np.unique(y[test][unseen]))} species ({unseen.sum()} observations) unseen in train")
    assert unseen.any()


def test_the_temporal_holdout_is_harder_than_a_random_split(vision_sample):
    """Photo style drifts year to year, so 2025 is out of distribution: a random test set of the same size
    (outside the spatial regions, as the temporal one) are easier. Scored on the species with >= 20
    training observations, so that the rare species' share of a test set does not swamp the drift."""
    obs, x, split = vision_sample
    y, outside = obs["taxon_id"].to_numpy(), split.region_of == 0
    temporal = outside & (obs["year"] == 2025).to_numpy()
    common = pd.Series(y).map(pd.Series(y[outside & ~temporal]).value_counts()).fillna(0).to_numpy() >= 20
    held = np.zeros(len(y), bool)
    held[np.random.default_rng(0).choice(np.flatnonzero(outside), temporal.sum(), replace=False)] = True
    random_accuracy = _logistic_top1(x, y, outside & ~held, held & common)
    temporal_accuracy = _logistic_top1(x, y, outside & ~temporal, temporal & common)
    print(f"\nlogistic regression top-1 on held-out observations of common species: 2025 {temporal_accuracy:.3f} "
          f"({(temporal & common).sum()}), random {random_accuracy:.3f} ({(held & common).sum()})")
    assert random_accuracy > temporal_accuracy + 0.05


def test_appearance_changes_with_the_season(vision_sample):
    """Observations of a species a month apart look more alike than ones 4 or more months apart."""
    obs, x, _ = vision_sample
    near, far = [], []
    for _, rows in obs.groupby("taxon_id").indices.items():
        if len(rows) < 40:
            continue
        similarity = x[rows] @ x[rows].T
        gap = np.abs(obs["month"].to_numpy()[rows, None] - obs["month"].to_numpy()[None, rows])
        gap = np.minimum(gap, 12 - gap)
        off_diagonal = ~np.eye(len(rows), dtype=bool)
        if (gap >= 4).any():
            near.append(similarity[(gap <= 1) & off_diagonal].mean())
            far.append(similarity[gap >= 4].mean())
    print(f"\nmean cosine within a species over {len(near)} species: months <= 1 apart {np.mean(near):.3f}, "
          f">= 4 apart {np.mean(far):.3f}")
    assert len(near) >= 5 and np.mean(near) > np.mean(far) + 0.02


def test_vision_does_not_depend_on_the_chunking(study):
    params = parse_params({"sources": {"deepearth": {"sample": {"n_observations": 600, "language_dim": 8,
                                                                 "vision_dim": 32}}}})
    whole = [v for _, v in deepearth_batches(params, study, chunk_rows=600)]
    chunked = [v for _, v in deepearth_batches(params, study, chunk_rows=97)]
    assert pa.Table.from_batches(whole).equals(pa.Table.from_batches(chunked))


def test_language_embeddings_share_a_genus_component(tidy):
    out, _ = tidy
    species = pd.read_parquet(out / "species.parquet")
    language = np.load(out / "language_embeddings.npy")
    np.testing.assert_allclose(np.linalg.norm(language, axis=1), 1.0, rtol=1e-5)
    genus = species["taxon_name"].str.split().str[0].to_numpy()
    similarity = language @ language.T
    same = (genus[:, None] == genus[None, :]) & ~np.eye(len(genus), dtype=bool)
    different = genus[:, None] != genus[None, :]
    assert similarity[same].mean() > 0.5 and np.abs(similarity[different]).mean() < 0.2


def test_fix_image_urls():
    assert fix_image_urls(["a.jpg;b.jpg"]) == ["a.jpg", "b.jpg"]
    assert fix_image_urls(["a.jpg", "b.jpg"]) == ["a.jpg", "b.jpg"]
    assert fix_image_urls(["a.jpg; b.jpg;"]) == ["a.jpg", "b.jpg"]
    assert fix_image_urls(None) == [] and fix_image_urls([]) == []


def test_tidy_layout(raw, tidy):
    out, report = tidy
    raw_table = pq.read_table(raw / "observations.parquet")
    raw_frame = _frame(raw)
    obs = pd.read_parquet(out / "observations.parquet")
    schema = pq.read_schema(out / "observations.parquet")
    assert schema.names == ["observation_id", "gbif_id", "taxon_id", "taxon_name", "species_index", "latitude",
                            "longitude", "year", "month", "day", "hour", "minute", "second", "image_urls",
                            "num_images", "has_vision", "vision_row", "dataset_split"]
    assert schema.field("image_urls").type == pa.list_(pa.string())
    assert str(obs["hour"].dtype) == "Int64" and obs["hour"].isna().sum() == raw_table.column("hour").null_count
    assert (obs["observation_id"] == obs["gbif_id"].astype(str) + "_1").all()
    assert (obs["dataset_split"] == raw_frame["split"]).all()

    joined = raw_frame["image_urls"].map(lambda urls: len(urls) == 1 and ";" in urls[0])
    assert report["fixed_image_urls_rows"] == joined.sum() > 0
    assert not obs["image_urls"].map(lambda urls: any(";" in u for u in urls)).any()
    assert (obs["num_images"] == obs["image_urls"].map(len)).all()
    assert (obs.loc[joined, "num_images"] > 1).all()

    species = pd.read_parquet(out / "species.parquet")
    language = np.load(out / "language_embeddings.npy")
    assert language.dtype == np.float32 and language.shape == (len(species), 64) == (report["species"], 64)
    assert (species["taxon_id"].to_numpy()[obs["species_index"]] == obs["taxon_id"]).all()
    assert species["n_observations"].sum() == len(obs)
    raw_language = np.stack(raw_table.column("language_embedding").to_numpy(zero_copy_only=False))
    np.testing.assert_array_equal(language[obs["species_index"]], raw_language)

    vision = np.load(out / "vision_embeddings.npy")
    raw_vision = pq.read_table(raw / "vision_embeddings.parquet").to_pandas().set_index("gbif_id")["embedding"]
    with_vision = obs[obs["has_vision"]]
    assert vision.dtype == np.float32 and vision.shape == (len(with_vision), 1408) == (report["with_vision"], 1408)
    assert (obs["has_vision"] == (obs["vision_row"] >= 0)).all()
    np.testing.assert_array_equal(vision[with_vision["vision_row"]], np.stack(raw_vision[with_vision["gbif_id"]]))


def _rewrite(raw: Path, dst: Path, edit) -> Path:
    """A copy of the raw folder whose observations table went through ``edit``."""
    dst.mkdir()
    pq.write_table(edit(pq.read_table(raw / "observations.parquet")), dst / "observations.parquet")
    (dst / "vision_embeddings.parquet").write_bytes((raw / "vision_embeddings.parquet").read_bytes())
    return dst


def test_missing_column_names_file_and_column(raw, tmp_path):
    bad = _rewrite(raw, tmp_path / "raw", lambda t: t.drop_columns(["taxon_name"]))
    with pytest.raises(InputDataError, match=r"observations\.parquet.*taxon_name"):
        tidy_deepearth(bad, tmp_path)


def test_language_embedding_must_be_constant_within_a_species(raw, tmp_path):
    def perturb(table):
        values = np.stack(table.column("language_embedding").to_numpy(zero_copy_only=False))
        values[5, 0] += 0.5
        column = pa.array(list(values), pa.list_(pa.float32()))
        return table.set_column(table.schema.get_field_index("language_embedding"), "language_embedding", column)

    bad = _rewrite(raw, tmp_path / "raw", perturb)
    taxon = pq.read_table(raw / "observations.parquet").column("taxon_id")[5].as_py()
    with pytest.raises(InputDataError, match=rf"observations\.parquet.*language_embedding.*{taxon}"):
        tidy_deepearth(bad, tmp_path)


def test_stages_end_to_end(workdir):
    small = {"sources": {"deepearth": {"sample": {"n_observations": 200, "language_dim": 16, "vision_dim": 32}}}}
    (workdir / "params.yaml").write_text(yaml.safe_dump(small))
    for stage in ("fetch_deepearth", "normalize_deepearth"):
        run_stage(stage, cwd=workdir)
    processed = workdir / "data" / "processed" / "deepearth"
    assert sorted(p.name for p in processed.iterdir()) == [
        "language_embeddings.npy", "observations.parquet", "species.parquet", "tidy_report.json",
        "vision_embeddings.npy"]
    assert np.load(processed / "vision_embeddings.npy").shape == (120, 32)


def test_species_without_habitat_are_refused(study):
    from dataclasses import replace

    with pytest.raises(InputDataError, match=r"species\.csv.*habitat"):
        sample_deepearth(small_params(), replace(study, species=study.species.drop(columns="habitat")))
