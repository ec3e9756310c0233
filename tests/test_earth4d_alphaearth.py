"""The Earth4D -> AlphaEarth experiment: metrics, baselines, predictor, NaN handling, holdouts, outputs,
determinism, CLI."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO as ROOT
from conftest import tree_digest

from terrapipe.config import parse_params
from terrapipe.data.alphaearth import clean_alphaearth
from terrapipe.data.split import ASSIGNMENT_COLUMNS, observation_table, spatiotemporal_split
from terrapipe.errors import ConfigError, InputDataError
from terrapipe.evals.regression import (
    knn_geodesic_baseline,
    mean_embedding_baseline,
    per_row_mae_over_range_pct,
    r2_uniform_average,
    regression_metrics,
)
from terrapipe.sources.sample_alphaearth import fetch_alphaearth
from terrapipe.train import alphaearth as experiment

# A small encoder and predictor: the same code paths as the default run, in about a second per run.
TINY_ENCODER = {"spatial": {"levels": 8, "log2_table_size": 12, "finest_resolution": 16 * 2 ** 7},
                "temporal": {"levels": 4, "log2_table_size": 12, "finest_resolution": 8 * 2 ** 3}}
TINY = {"encoder_overrides": TINY_ENCODER, "epochs": 4, "batch_size": 64, "hidden": 64, "learning_rate": 1e-2,
        "knn_k": 5, "checkpoint_every": 3, "tracked_rows": 400}
SHORT = {"epochs": 2, "max_samples": 1000}          # enough for the determinism and CLI checks
WORLD = {"seed": 0, "sources": {"alphaearth": {"sample": {"n_points": 2400, "dirty_fraction": 0.02}}}}


def haversine_rad(lat1, lon1, lat2, lon2):
    """Great-circle angle between points given in degrees (the textbook formula, for brute force)."""
    lat1, lon1, lat2, lon2 = map(np.radians, (lat1, lon1, lat2, lon2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * np.arcsin(np.sqrt(a))


def tiny_params(**changes):

    return experiment.earth4d_params(parse_params({"earth4d": {**TINY, **changes}}))


@pytest.fixture(scope="module")
def world(study, tmp_path_factory):
    """A sample world in the pipeline's layout: raw files, processed arrays and split@alphaearth's table."""

    params = parse_params(WORLD)
    raw_dir, processed = tmp_path_factory.mktemp("world_raw"), tmp_path_factory.mktemp("world_processed")
    fetch_alphaearth(params, study, raw_dir)
    clean_alphaearth(raw_dir, processed, params.normalize.alphaearth)
    points = pd.read_parquet(processed / "points.parquet")
    result = spatiotemporal_split(points["latitude"].to_numpy(), points["longitude"].to_numpy(),
                                  points["year"].to_numpy(), params.split.alphaearth)
    frame = points.rename(columns={"point_id": "id"})[["id", "latitude", "longitude"]]
    assignments = processed / "assignments.parquet"
    observation_table(result, frame)[ASSIGNMENT_COLUMNS].to_parquet(assignments, index=False)
    return raw_dir, processed, assignments


@pytest.fixture(scope="module")
def trained(world, tmp_path_factory):
    """The tiny experiment on the processed sample world: (data, metrics, output folder)."""
    _, processed, assignments = world
    data = experiment.load_processed(processed, assignments)
    out = tmp_path_factory.mktemp("trained") / "earth4d"
    return data, experiment.run_experiment(tiny_params(), data, out), out


def test_metrics_match_hand_computation():
    pred = np.array([[0.5, -0.5], [0.0, 0.25], [1.0, 0.0]])
    target = np.array([[0.25, -0.5], [0.5, 0.0], [0.5, 0.5]])
    # |errors| 0.25, 0, 0.5, 0.25, 0.5, 0.5: sum 2.0 over 6 entries; squared: 0.0625*2 + 0.25*3 = 0.875.
    m = regression_metrics(pred.astype(np.float32), target.astype(np.float32))
    assert m["rows"] == 3
    assert m["mae"] == pytest.approx(2.0 / 6, abs=1e-12)
    assert m["mae_over_range_pct"] == pytest.approx(100 * (2.0 / 6) / 2, abs=1e-10)  # DeepEarth's "MAPE"
    assert m["mse"] == pytest.approx(0.875 / 6, abs=1e-12)
    assert m["rmse"] == pytest.approx(np.sqrt(0.875 / 6), abs=1e-12)
    cosines = [(0.125 + 0.25) / (np.hypot(0.5, 0.5) * np.hypot(0.25, 0.5)), 0.0 / (0.25 * 0.5),
               0.5 / (1.0 * np.hypot(0.5, 0.5))]
    assert m["cosine_similarity_mean"] == pytest.approx(np.mean(cosines), abs=1e-12)
    # Dimension 0: target mean 5/12, SST = (1/6)^2 + (1/12)^2 + (1/12)^2 = 1/24, SSE = 0.0625 + 0.25 + 0.25.
    # Dimension 1: target mean 0, SST = 0.5, SSE = 0.0625 + 0.25 = 0.3125. R^2 uniform = mean of the two.
    r2_dims = [1 - 0.5625 / (1 / 24), 1 - 0.3125 / 0.5]
    assert m["r2_uniform_average"] == pytest.approx(np.mean(r2_dims), abs=1e-12)
    pooled = 1 - (0.5625 + 0.3125) / (1 / 24 + 0.5)      # the variance-weighted variant: not this metric
    assert abs(m["r2_uniform_average"] - pooled) > 1


def test_r2_agrees_with_scikit_learn_and_handles_constant_dimensions():
    from sklearn.metrics import r2_score

    rng = np.random.default_rng(0)
    target = rng.normal(size=(50, 8))
    pred = target + rng.normal(scale=0.5, size=target.shape)
    assert r2_uniform_average(pred, target) == pytest.approx(r2_score(target, pred, multioutput="uniform_average"))
    target[:, 0] = 0.3
    exact = pred.copy()
    exact[:, 0] = 0.3
    assert r2_uniform_average(exact, target) == pytest.approx(r2_score(target, exact))
    assert r2_uniform_average(pred, target) == pytest.approx(r2_score(target, pred))
    assert per_row_mae_over_range_pct(pred, target) == pytest.approx(50 * np.abs(pred - target).mean(axis=1))


def test_metrics_refuse_mismatched_and_non_finite_input():
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        regression_metrics(np.zeros((3, 4)), np.zeros((3, 5)))
    bad = np.zeros((3, 4))
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="pred holds 1 non-finite values .first in row 2"):
        regression_metrics(bad, np.zeros((3, 4)))


def test_knn_baseline_matches_a_brute_force_loop():
    rng = np.random.default_rng(1)
    train = np.column_stack([rng.uniform(-80, 80, 300), rng.uniform(-180, 180, 300)])
    targets = rng.normal(size=(300, 6))
    query = np.column_stack([rng.uniform(-80, 80, 40), rng.uniform(-180, 180, 40)])
    got = knn_geodesic_baseline(train, targets, k=7)(query)
    for q, row in zip(query, got):
        nearest = np.argsort(haversine_rad(q[0], q[1], train[:, 0], train[:, 1]), kind="stable")[:7]
        np.testing.assert_allclose(row, targets[nearest].mean(axis=0), rtol=1e-12)
    mean = mean_embedding_baseline(targets)(query)
    np.testing.assert_allclose(mean, np.tile(targets.mean(axis=0), (40, 1)))


def test_knn_neighbours_cross_the_antimeridian_and_the_pole():
    train = np.array([[10.0, 179.8], [10.0, -179.8], [10.0, 175.0], [10.0, -175.0], [89.9, 0.0], [89.9, 180.0],
                      [85.0, 0.0]])
    targets = np.eye(7)
    knn = knn_geodesic_baseline(train, targets, k=2)
    # 0.4 degrees of longitude across the date line beat 4.8 degrees on the same side.
    np.testing.assert_allclose(knn(np.array([[10.0, 179.99]])), [[0.5, 0.5, 0, 0, 0, 0, 0]])
    # Over the pole: (89.9, 180) is 0.2 degrees from (89.9, 0); (85, 0) is 4.9 degrees away.
    np.testing.assert_allclose(knn(np.array([[89.95, 0.0]])), [[0, 0, 0, 0, 0.5, 0.5, 0]])
    with pytest.raises(ValueError, match="k = 8 must be between 1 and the 7"):
        knn_geodesic_baseline(train, targets, k=8)


def test_params_defaults_unknown_keys_and_cli_origin():

    params = experiment.earth4d_params(parse_params({}))
    assert (params.encoder, params.encoder_lr_factor, params.adam_eps, params.plateau_factor,
            params.plateau_patience, params.grad_clip, params.dropout, params.hidden, params.train_split,
            params.seed, params.knn_k) == ("cpu", 0.1, 1e-6, 0.5, 5, 1.0, 0.1, 256, 0.95, 42, 20)
    with pytest.raises(ConfigError, match=r"earth4d\.epochz: Extra inputs"):
        experiment.earth4d_params(parse_params({"earth4d": {"epochz": 3}}))
    with pytest.raises(ConfigError, match=r"earth4d\.learning_rate: .*write 1\.0e-3"):
        experiment.earth4d_params(parse_params(yaml.safe_load("earth4d: {learning_rate: 1e-3}")))
    with pytest.raises(ConfigError, match=r"earth4d\.roi\.lat_mn: Extra inputs"):
        experiment.earth4d_params(parse_params({"earth4d": {"roi": {"lat_mn": 3}}}))
    with pytest.raises(ConfigError, match=r"earth4d\.train_split \(set by --train-split\)"):
        experiment.earth4d_params(parse_params({}), {"train_split": 1.5, "epochs": None})
    with pytest.raises(ConfigError, match=r"encoder_overrides: spatial\.levelz"):
        experiment.earth4d_params(parse_params({"earth4d": {"encoder_overrides": {"spatial": {"levelz": 3}}}}))
    with pytest.raises(ConfigError, match="unknown Earth4D preset 'huge'"):
        experiment.earth4d_params(parse_params({"earth4d": {"encoder": "huge"}}))
    with pytest.raises(ConfigError, match="lat_min < lat_max"):
        experiment.earth4d_params(parse_params({"earth4d": {"roi": {"lat_min": 30.0, "lat_max": 29.0}}}))
    merged = tiny_params().encoder_config()
    assert (merged.spatial.levels, merged.spatial.features_per_level) == (8, 2)  # untouched keys kept


def test_predictor_shapes_and_parameter_groups():
    params = tiny_params()
    model = experiment.build_predictor(params.encoder_config(), params, seed=0)
    assert list(dict(model.named_children())) == ["encoder", "input_norm", "project", "block_1", "block_2", "head",
                                                  "squash"]
    assert model.project.in_features == model.encoder.output_dim and model.project.out_features == 64
    assert isinstance(model.block_1[1], torch.nn.ReLU) and model.block_2[3].p == 0.1
    coords = torch.tensor([[28.5, -81.3, 20.0, 0.6], [-3.1, -60.0, 40.0, 0.59], [45.0, 179.9, 0.0, 0.62]])
    out = model.eval()(coords)
    assert out.shape == (3, 64) and bool((out.abs() < 1).all())
    optimizer, scheduler = experiment._optimizer(model, params)
    encoder_group, rest = optimizer.param_groups
    assert encoder_group["lr"] == pytest.approx(1e-3) and rest["lr"] == pytest.approx(1e-2)
    assert sum(p.numel() for p in encoder_group["params"]) == model.encoder.parameter_count()
    assert optimizer.defaults["eps"] == 1e-6 and scheduler.factor == 0.5 and scheduler.patience == 5
    again = experiment.build_predictor(params.encoder_config(), params, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


class _PoisonedRows(torch.nn.Module):
    """Wraps a model: NaN output for rows at elevation -1234 m (a stand-in for a numerically broken region)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    @property
    def encoder(self):
        return self.model.encoder

    def forward(self, coords):
        out = self.model(coords)
        return torch.where((coords[:, 2] == -1234.0)[:, None], torch.nan, out)


def test_nan_test_drops_exactly_the_offending_rows():
    params = tiny_params()
    model = _PoisonedRows(experiment.build_predictor(params.encoder_config(), params, seed=0))
    rng = np.random.default_rng(0)
    coords = np.column_stack([rng.uniform(28, 29, 50), rng.uniform(-81.9, -81, 50), rng.uniform(0, 50, 50),
                              np.full(50, 0.6)]).astype(np.float32)
    coords[[3, 17, 41], 2] = -1234.0
    coords[29, 0] = 95.0                      # outside Earth4D's domain: the encoder raises for its chunk
    keep = experiment.nan_test(model, coords, chunk=8, device=torch.device("cpu"))
    assert np.flatnonzero(~keep).tolist() == [3, 17, 29, 41]


def test_non_finite_batches_are_skipped_and_counted():
    rng = np.random.default_rng(0)
    n = 120
    coords = np.column_stack([rng.uniform(28, 29, n), rng.uniform(-81.9, -81, n), rng.uniform(0, 50, n),
                              np.full(n, 0.6)]).astype(np.float32)
    reasons = np.array(["temporal_train"] * n, dtype=object)
    data = experiment.AlphaEarthData(coords, rng.normal(scale=0.1, size=(n, 64)).astype(np.float32), reasons, {})
    params = tiny_params(epochs=2, batch_size=1000, knn_k=1)       # one batch an epoch: every fit row
    part = experiment.partition(reasons, params)
    data.coords[part.fit[0], 2] = -1234.0                           # poisons every batch
    model = _PoisonedRows(experiment.build_predictor(params.encoder_config(), params, seed=0))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    run = experiment.train(model, data, part, params, torch.device("cpu"))
    assert (run.skipped_batches, run.skipped_steps) == (2, 0)
    assert [row["skipped_batches"] for row in run.curves] == [1, 2] and np.isnan(run.curves[-1]["train_mse"])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())   # nothing was stepped


def test_partition_keeps_holdouts_out_of_training(world):
    _, processed, assignments = world
    data = experiment.load_processed(processed, assignments)
    part = experiment.partition(data.reasons, tiny_params())
    assert set(data.reasons[part.fit]) == set(data.reasons[part.val]) == {"temporal_train"}
    assert set(data.reasons[part.holdouts["random"]]) == {"temporal_train"}
    assert set(data.reasons[part.holdouts["temporal"]]) == {"temporal_test"}
    spatial = [k for k in part.holdouts if k.startswith("spatial_region_")]
    assert spatial and sorted(np.concatenate([part.holdouts[k] for k in spatial])) == part.holdouts["spatial_all"].tolist()
    groups = [part.fit, part.val, part.holdouts["random"], part.holdouts["spatial_all"], part.holdouts["temporal"]]
    assert sum(map(len, groups)) == len(data.coords) == len(np.unique(np.concatenate(groups)))
    trained_rows = len(part.fit) + len(part.val)
    assert trained_rows / (trained_rows + len(part.holdouts["random"])) == pytest.approx(0.95, abs=0.01)


def test_experiment_beats_the_mean_baseline_and_writes_every_output(trained):
    data, metrics, out = trained
    holdouts = metrics["holdouts"]
    assert {"random", "spatial_all", "temporal"} <= set(holdouts)
    for scores in holdouts.values():
        assert scores["earth4d_beats_knn"] == (scores["earth4d"]["mae"] < scores["knn_geodesic"]["mae"])
        assert scores["earth4d"]["mae_over_range_pct"] == pytest.approx(50 * scores["earth4d"]["mae"])
    assert holdouts["random"]["earth4d_beats_mean_embedding"]
    assert holdouts["random"]["earth4d"]["mae"] < 0.95 * holdouts["random"]["mean_embedding"]["mae"]
    assert metrics["data"]["nan_test_dropped"] == 0 and metrics["training"]["skipped_batches"] == 0
    curves = pd.read_csv(out / "curves.csv")
    assert curves["epoch"].tolist() == [1, 2, 3, 4] and curves["train_mse"].iloc[-1] < curves["train_mse"].iloc[0]
    assert {"val_mse", "lr", "random_mae_over_range_pct", "temporal_r2_uniform_average"} <= set(curves.columns)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint_epoch_003.pt",
                                                                      "checkpoint_epoch_004.pt"]
    state = torch.load(out / "checkpoints" / "checkpoint_epoch_004.pt", weights_only=False)
    assert state["epoch"] == 4 and {"model", "optimizer", "scheduler", "val_mse"} <= set(state)
    final = torch.load(out / "final_model.pt", weights_only=False)
    model = experiment.build_predictor(tiny_params().encoder_config(), tiny_params(), seed=1)
    model.load_state_dict(final["model"])
    tracked = pd.read_csv(out / "predictions" / "test_coordinates.csv")
    truth = pd.read_csv(out / "predictions" / "ground_truth.csv")
    last = pd.read_csv(out / "predictions" / "epoch_004.csv")
    assert list(tracked.columns) == ["latitude", "longitude", "elevation_m", "time_norm", "holdout"]
    assert list(last.columns) == [f"dim_{i}" for i in range(64)] + ["mae_over_range_pct"]
    assert len(tracked) == len(truth) == len(last) <= 400
    np.testing.assert_allclose(last["mae_over_range_pct"], 50 * np.abs(last.iloc[:, :64].values - truth.values)
                               .mean(axis=1), atol=2e-4)  # CSV rounding to 5 decimals
    replay = experiment.predict(model, tracked.iloc[:, :4].to_numpy(np.float32), torch.device("cpu"))
    np.testing.assert_allclose(replay, last.iloc[:, :64].values, atol=1e-4)   # final_model.pt is the last epoch
    from PIL import Image

    for epoch in range(1, 5):
        for kind in ("rgb", "error"):
            assert Image.open(out / "visualizations" / f"roi_epoch_{epoch:03d}_{kind}.png").format == "PNG"
    for kind in ("rgb", "error"):
        gif = Image.open(out / "visualizations" / f"roi_{kind}_progression.gif")
        assert gif.format == "GIF" and gif.n_frames == 4
        assert (out / f"final_roi_{kind}.png").read_bytes() == (
            out / "visualizations" / f"roi_epoch_004_{kind}.png").read_bytes()
    assert Image.open(out / "training_curves.png").format == "PNG"
    timing = json.loads((out / "timing.json").read_text())
    assert timing["samples_per_s"] > 0 and timing["knn_fit_predict_s"] > 0


def test_experiment_is_deterministic(world, tmp_path):
    _, processed, assignments = world
    data = experiment.load_processed(processed, assignments)
    out_a, out_b = tmp_path / "a", tmp_path / "b"
    first = experiment.run_experiment(tiny_params(**SHORT), data, out_a)
    assert experiment.run_experiment(tiny_params(**SHORT), data, out_b) == first
    a, b = tree_digest(out_a), tree_digest(out_b)
    assert a.keys() == b.keys()
    differ = sorted(name for name in a if a[name] != b[name] and not name.endswith(".pt"))
    assert differ == ["timing.json"]          # machine speed only; metrics, curves, CSVs and images repeat
    for name in ("final_model.pt", "checkpoints/checkpoint_epoch_002.pt"):
        sa, sb = (torch.load(out / name, weights_only=False)["model"] for out in (out_a, out_b))
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    other = experiment.run_experiment(tiny_params(**SHORT, seed=43), data, tmp_path / "c")
    assert other["holdouts"]["random"]["earth4d"] != first["holdouts"]["random"]["earth4d"]   # the seed matters


def test_roi_without_points_and_foreign_output_folder_are_refused(world, tmp_path):
    _, processed, assignments = world
    data = experiment.load_processed(processed, assignments)
    params = tiny_params(epochs=1, roi={"lat_min": -60.0, "lat_max": -59.0, "lon_min": 0.0, "lon_max": 1.0})
    with pytest.raises(ConfigError, match=r"earth4d\.roi .* holds none of the"):
        experiment.run_experiment(params, data, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="holds files this experiment did not write .notes.txt"):
        experiment.run_experiment(tiny_params(), data, tmp_path / "mine")


def test_processed_inputs_are_checked(world, tmp_path):
    _, processed, assignments = world
    with pytest.raises(InputDataError, match=r"points\.parquet: missing\. Regenerate"):
        experiment.load_processed(tmp_path, assignments)
    partial = tmp_path / "assignments.parquet"
    pd.read_parquet(assignments).iloc[5:].to_parquet(partial)
    with pytest.raises(InputDataError, match="has no row for 5 of the"):
        experiment.load_processed(processed, partial)


def test_cli_options_override_params_and_read_user_files(world, workdir):
    raw_dir, _, _ = world
    config = yaml.safe_load((workdir / "params.yaml").read_text())
    config["earth4d"] = {**TINY, "epochs": 3, "hidden": 24, "seed": 5, "max_samples": 2000}
    (workdir / "params.yaml").write_text(yaml.safe_dump(config))
    csv_path, pt_path = raw_dir / "alphaearth_metadata.csv", raw_dir / "alphaearth_embeddings.pt"
    from terrapipe.stage import run_stage as run_in_process

    stage = _stage_module()          # in this process: the same argv handling as `python stages/...`, no re-import
    run_in_process(stage.main, "earth4d_alphaearth", stage.add_args,
                   argv=["--metadata", str(csv_path), "--embeddings", str(pt_path), "--epochs", "2", "--seed", "7",
                         "--max-samples", "1000", "--skip-nan-test", "--output-dir", "out"])
    metrics = json.loads((workdir / "out" / "metrics.json").read_text())
    used = metrics["params"]
    assert (used["epochs"], used["seed"], used["max_samples"], used["skip_nan_test"]) == (2, 7, 1000, True)  # CLI
    assert (used["hidden"], used["batch_size"]) == (24, 64)                                               # params
    assert metrics["data"]["rows"] == 1000 and metrics["data"]["nan_test"] == "skipped"
    assert metrics["data"]["source"]["metadata"] == str(csv_path)
    assert (workdir / "out" / "predictions" / "epoch_002.csv").exists()
    assert not (workdir / "out" / "predictions" / "epoch_003.csv").exists()



def _stage_module():
    """stages/earth4d_alphaearth.py imported in this process (its errors are checked without a subprocess)."""
    import importlib.util
    import sys

    sys.path.insert(0, str(ROOT / "stages"))
    try:
        spec = importlib.util.spec_from_file_location("earth4d_alphaearth_stage", ROOT / "stages" / "earth4d_alphaearth.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "stages"))
    return module


@pytest.mark.parametrize("argv, message", [
    (["--metadata", "meta.csv"], "--metadata and --embeddings go together"),
    (["--metadata", "{raw}/alphaearth_metadata.csv", "--embeddings", "nope.pt"],
     "nope.pt: missing. Check the file given to --embeddings"),
    (["--train-split", "1.5"], "earth4d.train_split (set by --train-split): Input should be less than 1"),
])
def test_stage_errors_name_the_option(world, workdir, capsys, argv, message):
    from terrapipe.stage import run_stage as run_in_process

    stage = _stage_module()
    with pytest.raises(SystemExit) as exit_info:
        run_in_process(stage.main, "earth4d_alphaearth", stage.add_args,
                       argv=[a.format(raw=world[0]) for a in argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
