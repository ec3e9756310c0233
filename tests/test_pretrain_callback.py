"""The in-training kNN callback: its points at the configured steps, on the valid partition, equal to an
evaluation of the saved encoder; it changes no trained weight; its curve survives a resume."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from test_embeddings import stats_document
from test_pretrain import tiny_config, tiny_store

from terrapipe import paths
from terrapipe.data.tasks import TaskData, geobench
from terrapipe.modalities import modality


def land_use_task(n: int = 30, size: int = 16) -> TaskData:
    """Three brightness classes in a GEO-Bench-shaped classification task (train / valid / test in turn)."""
    rng = np.random.default_rng(1)
    labels = np.arange(n) % 3
    s2 = (rng.uniform(300, 500, (n, 12, size, size)) * (1 + labels)[:, None, None, None]).astype(np.float32)
    partition = np.array(["train", "train", "train", "valid", "valid", "test"] * n)[:n]
    return TaskData("sample-eurosat", "classification", ("a", "b", "c"), {"s2": s2},
                    {"s2": modality("s2").band_order}, labels, partition, tuple(f"chip{i:03d}" for i in range(n)),
                    {"s2": np.full((n, 1), np.datetime64("2024-05-01"))},
                    np.column_stack([np.linspace(10, 11, n), np.linspace(20, 21, n)]))


@pytest.fixture
def task_dir(tmp_path, monkeypatch):
    """A repository-shaped folder: data/raw/tasks/eurosat in GEO-Bench's layout (the callback's path)."""
    monkeypatch.chdir(tmp_path)
    paths.task_dir("eurosat").mkdir(parents=True)
    geobench.write(land_use_task(), paths.task_dir("eurosat"))
    return paths.task_dir("eurosat")


def extra_state(config) -> dict:
    return {"band_order": {m: list(modality(m).band_order) for m in config.token_modalities},
            "normalization": {"imagery": {m: stats_document(m) for m in config.token_modalities}, "era5": {}}}


def _train(config, out, **kwargs):
    from terrapipe.train.loop import train

    store = tiny_store()
    return train(config, {"config": config.model_dump(mode="json")}, store, np.arange(len(store["s2"])), out,
                 extra_state=extra_state(config), progress=False, **kwargs)


def test_callback_points_match_an_evaluation_of_the_checkpoint_and_change_no_weight(task_dir, tmp_path):
    from terrapipe.evals.embeddings import load_encoder
    from terrapipe.train.callbacks import knn_callback, metric_name

    key = "single_bandset_cross_random_masked_neg"
    short = {"steps": 4, "checkpoint_every": 2}
    on = tiny_config(key, downstream={"every": 3}, train=short)     # points at 3 and 4 (the end)
    off = tiny_config(key, train=short)
    with_callback = _train(on, tmp_path / "on")
    without = _train(off, tmp_path / "off")
    name = metric_name("eurosat")
    assert name == "knn_eurosat_valid_accuracy"
    assert [p["step"] for p in with_callback.evaluations] == [3, 4] and without.evaluations == []
    assert with_callback.history == without.history                   # the same steps, metric for metric
    a = torch.load(tmp_path / "on/checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "off/checkpoint.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    # the last point is the kNN accuracy of the final encoder, computed again from the checkpoint
    handle = load_encoder(tmp_path / "on/checkpoint.pt")
    again = knn_callback(on, extra_state(on), task_dir)(handle.model, 4)
    assert again[name] == with_callback.evaluations[-1][name]
    assert 0.0 <= again[name] <= 1.0


def test_callback_curve_survives_a_resume(task_dir, tmp_path):
    config = tiny_config("single_bandset_cross_random_masked_neg", downstream={"every": 1},
                         train={"steps": 3, "checkpoint_every": 2})
    full = _train(config, tmp_path / "full")
    _train(config, tmp_path / "cut", stop_at=2)
    resumed = _train(config, tmp_path / "cut")
    assert [p["step"] for p in full.evaluations] == [1, 2, 3]
    assert resumed.evaluations == full.evaluations


def test_a_missing_task_names_the_stage_that_makes_it(tmp_path, monkeypatch):
    from terrapipe.errors import InputDataError
    from terrapipe.train.callbacks import knn_callback

    monkeypatch.chdir(tmp_path)
    config = tiny_config("single_bandset_cross_random_masked_neg", downstream={"every": 2})
    with pytest.raises(InputDataError, match="fetch_tasks@eurosat"):
        knn_callback(config, extra_state(config), paths.task_dir("eurosat"))
