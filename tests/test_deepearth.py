"""DeepEarth: the sample backend's columns and ground truth, and the tidy stage's repairs and checks."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import run_stage, tree_digest

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


# ---- the DeepEarth classifiers and the cross-modal autoencoder (terrapipe.train.deepearth) ----------
# Tiny stores from test_embedding_store.write_processed: 6 species with distinct vision prototypes, one
# (UNSEEN) only in the test split; tiny models so that every training run takes a second or two.

TINY = {"classifier": {"epochs": 3, "batch_size": 16, "hidden_dim": 16, "lr": 0.01},
        "autoencoder": {"shared_dim": 8, "epochs": 2, "batch_size": 32, "zero_shot_fraction": 0.2}}


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    from test_embedding_store import write_processed

    from terrapipe.data.embedding_store import build_store

    root = tmp_path_factory.mktemp("deepearth_store")
    build_store(*write_processed(root), root / "store")
    return root / "store"


def _tiny_params(**override):
    from terrapipe.train.deepearth import DeepEarthParams

    return DeepEarthParams.model_validate({**TINY, **override})


def test_ranking_metrics_on_a_hand_built_case():
    from terrapipe.train.deepearth import ranking_metrics

    # 3 classes; rows 0-2 temporal_test, rows 3-4 spatial_test_region_1; row 4's species is unseen (-1).
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3], [0.5, 0.4, 0.1], [0.3, 0.3, 0.4]])
    labels = np.array([0, 1, 1, 1, -1])
    groups = np.array(["temporal_test"] * 3 + ["spatial_test_region_1"] * 2)
    metrics = ranking_metrics(np.log(probs), labels, groups)
    temporal, spatial, test = metrics["temporal_test"], metrics["spatial_test_region_1"], metrics["test"]
    assert temporal["top1"] == pytest.approx(2 / 3) and temporal["top5"] == 1.0
    assert temporal["ce"] == pytest.approx(-(np.log(0.7) + np.log(0.3) + np.log(0.5)) / 3)
    assert (spatial["n"], spatial["n_seen"], spatial["n_unseen"], spatial["unseen_share"]) == (2, 1, 1, 0.5)
    assert spatial["top1"] == 0.0 and spatial["top1_all"] == 0.0 and spatial["ce"] == pytest.approx(-np.log(0.4))
    assert test["top1"] == pytest.approx(2 / 4) and test["top1_all"] == pytest.approx(2 / 5)
    assert test["top5_all"] == pytest.approx(4 / 5)                     # the unseen row counts as an error
    assert "ce" not in ranking_metrics(np.log(probs), labels, groups, with_ce=False)["test"]
    assert ranking_metrics(np.log(probs[4:]), labels[4:], groups[4:])["test"]["top1"] is None  # nothing seen


def test_majority_and_centroid_baselines():
    from terrapipe.train.deepearth import centroid_scores, majority_log_probs

    train_labels = np.array([2, 2, 2, 0, 1])
    prior = majority_log_probs(train_labels, 3, 4)
    assert prior.shape == (4, 3) and (prior.argmax(1) == 2).all()
    assert np.exp(prior[0]) == pytest.approx([0.2, 0.2, 0.6])
    train_x = np.array([[0.0, 0.0], [0.0, 2.0], [0.0, 1.0], [5.0, 5.0], [-5.0, 0.0]])
    scores = centroid_scores(train_x, train_labels, 3, np.array([[4.0, 4.0], [0.1, 0.9], [-4.0, 1.0]]))
    assert scores.argmax(1).tolist() == [0, 2, 1]


def test_unseen_species_are_reported_never_mapped_to_class_zero(tiny_store):
    from test_embedding_store import UNSEEN

    from terrapipe.data.embedding_store import EmbeddingStore
    from terrapipe.train.deepearth import species_labels, train_classifier

    store = EmbeddingStore.open(tiny_store)
    run = train_classifier(store, "vision", _tiny_params())
    assert UNSEEN not in run.species and run.species == sorted(run.species)
    assert species_labels(np.array([run.species[0], UNSEEN]), run.species).tolist() == [0, -1]
    test = (store.index["split"] == "test") & (store.vision_offset >= 0)
    n_unseen = int((test & (store.index["taxon_name"] == UNSEEN)).sum())
    assert n_unseen == 3
    metrics = run.metrics
    assert metrics["unseen_test_species"] == {"species": 1, "observations": n_unseen, "share": n_unseen / test.sum()}
    for scores in (metrics["model"], metrics["baselines"]["majority"], metrics["baselines"]["nearest_centroid"]):
        assert scores["test"]["n"] == test.sum() and scores["test"]["n_unseen"] == n_unseen
        assert sum(scores[g]["n_unseen"] for g in scores if g != "test") == n_unseen
        assert scores["test"]["top1_all"] < scores["test"]["top1"]  # unseen rows are errors, never hits
    assert set(metrics["model"]) == {"test", "temporal_test", "spatial_test_region_1", "spatial_test_region_2"}
    assert metrics["model"]["test"]["top1"] > metrics["baselines"]["majority"]["test"]["top1"]  # learnable prototypes


def test_stage_outputs_checkpoints_and_determinism(tiny_store, tmp_path):
    import torch

    from terrapipe.data.embedding_store import EmbeddingStore
    from terrapipe.models.deepearth import CLASSIFIERS
    from terrapipe.train.deepearth import LANGUAGE_NOTE, Standardizer, run_deepearth

    params = _tiny_params()
    metrics = run_deepearth(params, tiny_store, tmp_path / "a")
    run_deepearth(params, tiny_store, tmp_path / "b")
    for name in ("metrics.json", "curves.csv", "autoencoder_curves.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert metrics["classifiers"]["language"]["note"] == LANGUAGE_NOTE
    curves = pd.read_csv(tmp_path / "a" / "curves.csv")
    assert curves.columns.tolist() == ["epoch", "language_train_loss", "language_test_top1", "language_test_top1_all",
                                       "vision_train_loss", "vision_test_top1", "vision_test_top1_all"]
    assert curves["epoch"].tolist() == [1, 2, 3]

    store = EmbeddingStore.open(tiny_store)
    train = (store.index["split"] == "train") & (store.vision_offset >= 0)
    checkpoint = torch.load(tmp_path / "a" / "vision.pt", weights_only=False)
    assert checkpoint["species_to_index"] == {n: i for i, n in enumerate(sorted(set(store.index["taxon_name"][train])))}
    assert checkpoint["config"] == params.model_dump(mode="json")
    assert checkpoint["metrics"] == metrics["classifiers"]["vision"]
    model = CLASSIFIERS["vision"](checkpoint["model_config"]["num_classes"], checkpoint["model_config"]["hidden_dim"],
                                  in_dim=checkpoint["model_config"]["in_dim"])
    model.load_state_dict(checkpoint["model"])
    model.eval()
    standardize = Standardizer(*(np.array(checkpoint["standardization"][k], np.float32) for k in ("mean", "std")))
    rows = np.flatnonzero(train)
    with torch.no_grad():
        predicted = model(torch.from_numpy(standardize(store.read(rows, language=False).vision))).argmax(1).numpy()
    labels = np.array([checkpoint["species_to_index"][n] for n in store.index["taxon_name"][rows]])
    assert (predicted == labels).mean() > 0.5        # the checkpoint alone classifies: mapping and weights agree

    other_seed = run_deepearth(_tiny_params(classifier={**TINY["classifier"], "seed": 1}), tiny_store, tmp_path / "c")
    assert other_seed["classifiers"]["vision"]["model"] != metrics["classifiers"]["vision"]["model"]


def test_zero_shot_species_never_enter_autoencoder_training(tiny_store):
    from terrapipe.data.embedding_store import EmbeddingStore
    from terrapipe.train.deepearth import train_autoencoder

    store = EmbeddingStore.open(tiny_store)
    run = train_autoencoder(store, _tiny_params())
    taxon = store.index["taxon_name"]
    assigned = np.array([s is not None for s in store.index["split"]]) & (store.vision_offset >= 0)
    assert len(run.held_out) == 1                                       # round(0.2 x 6 species)
    assert not set(taxon[run.train_rows]) & set(run.held_out)
    assert (store.index["split"][run.train_rows] == "train").all()
    assert run.metrics["zero_shot_rows"] == int((assigned & np.isin(taxon, run.held_out)).sum())
    shot = run.metrics["zero_shot"]
    for reading in ("decoded", "shared"):
        everyone = shot[reading]["all_species"]
        assert everyone["candidates"] == 6 and everyone["chance_top1"] == pytest.approx(1 / 6)
        assert 0.0 <= everyone["top1"] <= everyone["top5"] <= 1.0
        assert shot[reading]["held_out_only"]["top1"] == 1.0          # one candidate: trivially right
    reconstruction = run.metrics["reconstruction"]
    assert set(reconstruction) == {"test", "temporal_test", "spatial_test_region_1", "spatial_test_region_2"}
    assert reconstruction["test"]["language_from_vision"]["mse"] > 0
    assert train_autoencoder(store, _tiny_params()).metrics == run.metrics


def test_deepearth_params_name_the_bad_key():
    from terrapipe.errors import ConfigError
    from terrapipe.train.deepearth import DeepEarthParams, deepearth_params

    class Loaded:
        deepearth = {"classifier": {"epoch": 3}}

    with pytest.raises(ConfigError, match=r"deepearth\.classifier\.epoch: Extra inputs"):
        deepearth_params(Loaded())
    Loaded.deepearth = {"autoencoder": {"zero_shot_fraction": 1.5}, "classifier": {"modes": ["vision", "vision"]}}
    with pytest.raises(ConfigError) as error:
        deepearth_params(Loaded())
    assert "deepearth.autoencoder.zero_shot_fraction: Input should be less than 1" in str(error.value)
    assert "deepearth.classifier.modes: must list each" in str(error.value)
    Loaded.deepearth = {}
    assert deepearth_params(Loaded()) == DeepEarthParams()


def test_embedding_store_and_classify_stages_end_to_end(workdir):
    from test_embedding_store import write_processed

    processed, assignments = write_processed(workdir / "tiny")
    (workdir / "data" / "processed").mkdir(parents=True, exist_ok=True)
    processed.rename(workdir / "data" / "processed" / "deepearth")
    (workdir / "data" / "processed" / "splits" / "deepearth").mkdir(parents=True)
    assignments.rename(workdir / "data" / "processed" / "splits" / "deepearth" / "assignments.parquet")
    (workdir / "params.yaml").write_text(yaml.safe_dump({"deepearth": {**TINY, "store": {"dtype": "float32"}}}))
    run_stage("embedding_store", cwd=workdir)
    assert json.loads((workdir / "data/processed/embedding_store/manifest.json").read_text())["dtype"] == "float32"
    run_stage("deepearth_classify", cwd=workdir)
    out = workdir / "models" / "deepearth"
    assert sorted(p.name for p in out.iterdir()) == ["autoencoder.pt", "autoencoder_curves.csv", "curves.csv",
                                                     "language.pt", "metrics.json", "vision.pt"]
    (workdir / "params.yaml").write_text(yaml.safe_dump({"deepearth": {"classifier": {"epochs": 0},
                                                                    "store": {"dtype": "bfloat16"}}}))
    before = tree_digest(out)
    failed = run_stage("deepearth_classify", cwd=workdir, check=False)
    assert failed.returncode == 2 and "deepearth.classifier.epochs" in failed.stderr
    failed = run_stage("embedding_store", cwd=workdir, check=False)
    assert failed.returncode == 2 and "deepearth.store.dtype" in failed.stderr
    assert tree_digest(out) == before
