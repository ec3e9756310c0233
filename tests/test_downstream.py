"""Downstream evaluation: the raw-pixel and majority baselines by hand, the task registry's params, and one
encoder with every baseline on toy tasks whose answer is known."""
from __future__ import annotations

import numpy as np
import pytest

from terrapipe.config import parse_params
from terrapipe.data.tasks import IGNORE_LABEL, TaskData
from terrapipe.errors import ConfigError
from terrapipe.evals.downstream import (
    REGISTRY,
    EvaluateParams,
    evaluate_params,
    evaluate_task,
    majority,
    raw_pixel_features,
    standardize,
    write_confusion,
)
from terrapipe.modalities import modality


def toy_task(kind: str = "classification", n: int = 24, size: int = 8, steps: int | None = None) -> TaskData:
    """Two classes told apart by brightness (class 1 is three times as bright), partitions in turn."""
    rng = np.random.default_rng(0)
    labels = (np.arange(n) // 4) % 2                      # each class in every partition
    time = () if steps is None else (steps,)
    scale = (1 + 2 * labels).reshape(n, *(1,) * (len(time) + 3))
    s2 = (rng.uniform(400, 600, (n, *time, 12, size, size)) * scale).astype(np.float32)
    if kind == "segmentation":
        labels = np.repeat(labels, size * size).reshape(n, size, size)
        labels[:, 0, 0] = IGNORE_LABEL
    partition = np.array(["train", "train", "valid", "test"] * n)[:n]
    return TaskData("toy", kind, ("dark", "bright"), {"s2": s2}, {"s2": modality("s2").band_order}, labels,
                    partition, tuple(f"s{i}" for i in range(n)),
                    {"s2": np.full((n, steps or 1), np.datetime64("2024-06-01"))})


def test_raw_pixel_features_are_per_band_mean_and_std_over_chip_and_time():
    image = np.arange(2 * 3 * 2 * 4 * 4, dtype=np.float32).reshape(2, 3, 2, 4, 4)    # N=2, T=3, C=2, 4 x 4
    image[0, 0, 1, 0, 0] = np.nan                                                    # a missing pixel is skipped
    task = TaskData("t", "classification", ("a",), {"s2": image}, {"s2": ("B02", "B03")}, np.zeros(2, np.int64),
                    np.array(["train", "test"]), ("a", "b"))
    features = raw_pixel_features(task)
    assert features.shape == (2, 4)                                                  # mean B02, B03, std B02, B03
    band = image[1, :, 0].ravel()
    np.testing.assert_allclose(features[1, [0, 2]], [band.mean(), band.std()], rtol=1e-6)
    np.testing.assert_allclose(features[0, 1], np.nanmean(image[0, :, 1]), rtol=1e-6)
    patches = raw_pixel_features(task, patch_size=2)
    assert patches.shape == (2, 2, 2, 4)
    cell = image[1, :, 0, 2:4, 0:2].ravel()                                          # token (1, 0) of sample 1
    np.testing.assert_allclose(patches[1, 1, 0, [0, 2]], [cell.mean(), cell.std()], rtol=1e-6)


def test_standardize_uses_training_statistics_only_and_zero_fills_gaps():
    train = np.array([[1.0, np.nan], [3.0, np.nan]], np.float32)
    test = np.array([[5.0, 7.0]], np.float32)
    z_train, z_test = standardize(train, test)
    np.testing.assert_allclose(z_train[:, 0], [-1.0, 1.0])
    np.testing.assert_allclose(z_test[0, 0], 3.0)                                    # (5 - 2) / 1: train stats
    assert np.isfinite(z_train).all() and z_test[0, 1] == 7.0                        # no train stats: unscaled


def test_majority_predicts_the_most_frequent_training_class():
    task = toy_task(n=8)
    labels = task.labels.copy()
    labels[task.partition == "train"] = [1, 1, 1, 0]
    scored = majority(TaskData(**{**task.__dict__, "labels": labels}))
    test = labels[task.partition == "test"]
    assert (scored.predictions == 1).all()
    assert scored.report["accuracy"] == pytest.approx((test == 1).mean())


def test_registry_names_each_metric_for_what_it_computes():
    assert {k: s.name for k, s in REGISTRY.items()} == {
        "eurosat": "knn_accuracy", "so2sat": "knn_accuracy", "pastis": "probe_miou", "mados": "probe_micro_f1"}


def test_params_name_the_key_of_a_missing_probe():
    assert evaluate_params(parse_params({})) == EvaluateParams()
    with pytest.raises(ConfigError, match="probe task"):
        evaluate_params(parse_params({"evaluate": {"probes": {"pastis": {"lr": 0.1}}}}))
    with pytest.raises(ConfigError, match="evaluate.tasks.0"):
        evaluate_params(parse_params({"evaluate": {"tasks": ["eurosatt"]}}))
    with pytest.raises(ConfigError, match="probes.eurosat"):
        evaluate_params(parse_params({"evaluate": {"probes": {"eurosat": {"lr": 0.1}, "pastis": {}, "mados": {}}}}))


class BrightnessEncoder:
    """A TokenEncoder whose every token is (mean pixel value, 1): the brightness the toy classes differ by."""

    def __init__(self):
        import torch
        self.torch = torch

    def eval(self):
        return self

    def __call__(self, batch, masks):
        from types import SimpleNamespace

        from terrapipe.train.roles import MaskValue
        torch = self.torch
        tokens, roles = {}, {}
        for key, mask in masks.items():
            image = getattr(batch, key)                                       # (B, H, W, T, C), normalized
            b, h, w, t, _ = image.shape
            grid = mask.shape[1:3]
            cells = image.reshape(b, grid[0], h // grid[0], grid[1], w // grid[1], t, -1).mean((2, 4, 6))
            value = cells[..., None].expand(*mask.shape)                      # (B, h, w, T, G)
            tokens[key] = torch.stack([value, torch.ones_like(value)], -1)
            roles[key] = torch.full(mask.shape, MaskValue.ONLINE_ENCODER.value)
        return SimpleNamespace(tokens=tokens, roles=roles)


@pytest.fixture(scope="module")
def brightness_handle(tmp_path_factory):
    """A handle with the pico experiment's config and store statistics, its model replaced."""
    from test_embeddings import stats_document

    from terrapipe.evals.embeddings import EncoderHandle
    from terrapipe.train.experiments import PretrainParams, resolve

    config = resolve(PretrainParams(base={"model": {"size": "pico", "base_patch_size": 4},
                                          "sampling": {"patch_sizes": [4], "hw_tokens": [2], "token_budget": 96},
                                          "mix": {"encode": ["s2"], "decode_only": []}},
                                    experiments={"tiny": {}}), "tiny")
    return EncoderHandle(BrightnessEncoder(), config, {"s2": modality("s2").band_order},
                         {"imagery": {"s2": stats_document("s2")}}, "brightness")


def test_one_encoder_and_every_baseline_on_a_toy_classification_task(brightness_handle, tmp_path, monkeypatch):
    import terrapipe.evals.embeddings as embeddings

    monkeypatch.setattr(embeddings, "random_encoder_like", lambda handle, seed: brightness_handle)
    params = EvaluateParams(random_encoder_seeds=[0, 1])
    result = evaluate_task(brightness_handle, "eurosat", toy_task(), params, tmp_path)
    summary = result.summary
    assert summary["metric"] == "knn_accuracy"
    assert summary["encoder"] == 1.0 and summary["raw_pixels"] == 1.0        # brightness separates the classes
    assert summary["majority"] == 0.5                                        # test: 3 dark, 3 bright
    assert summary["random_encoder_std"] == 0.0
    assert summary["gain_over_random"] == summary["encoder"] - summary["random_encoder"]
    assert set(summary["details"]["random_encoder_seeds"]) == {"0", "1"}
    geometry = summary["details"]["embedding_geometry"]
    assert geometry["encoder"]["rows"] == 12 and geometry["encoder"]["effective_rank"] == pytest.approx(1.0)
    assert geometry["random_encoder"] == geometry["encoder"]                 # the same module stands in for both
    actual, predicted = result.confusion
    assert len(actual) == summary["details"]["test_samples"] == 6 and (actual == predicted).all()
    write_confusion(tmp_path / "confusion.csv", toy_task(), actual, predicted)
    lines = (tmp_path / "confusion.csv").read_text().splitlines()
    assert lines[0] == "actual,predicted" and len(lines) == 7 and set(lines[1:]) == {"dark,dark", "bright,bright"}


def test_segmentation_probe_task_skips_ignored_pixels_in_its_confusion(brightness_handle, tmp_path, monkeypatch):
    import terrapipe.evals.embeddings as embeddings

    monkeypatch.setattr(embeddings, "random_encoder_like", lambda handle, seed: brightness_handle)
    from terrapipe.evals.probes import ProbeConfig

    params = EvaluateParams(random_encoder_seeds=[0], probes={"pastis": ProbeConfig(), "mados": ProbeConfig(lr=0.5)})
    task = toy_task("segmentation", n=12, steps=2)
    result = evaluate_task(brightness_handle, "mados", task, params, tmp_path)
    assert result.summary["metric"] == "probe_micro_f1"
    assert result.summary["encoder"] > 0.9
    assert result.summary["majority"] == pytest.approx(2 / 3)                # test chips: 2 dark, 1 bright
    actual, _ = result.confusion
    assert len(actual) == 3 * (8 * 8 - 1)                                    # 3 test chips, one ignored pixel each
    assert result.timing["extraction_s"] >= 0 and result.timing["probing_s"] > 0


def test_a_task_without_test_samples_names_the_param_to_raise(brightness_handle, tmp_path):
    from terrapipe.errors import InputDataError

    task = toy_task(n=8)
    task = TaskData(**{**task.__dict__, "partition": np.where(task.partition == "test", "valid", task.partition)})
    with pytest.raises(InputDataError, match="tasks.eurosat.n_samples"):
        evaluate_task(brightness_handle, "eurosat", task, EvaluateParams(random_encoder_seeds=[0]), tmp_path)


def test_segmentation_probe_scores_features_alike_whatever_their_scale_and_offset():
    """An encoder's embeddings vary little around large offsets; the probe z-scores them, so they train as
    well as the same information at unit scale would."""
    from terrapipe.evals.downstream import score_features
    from terrapipe.evals.probes import ProbeConfig

    task = toy_task("segmentation", n=12)
    params = EvaluateParams(random_encoder_seeds=[0], probes={"pastis": ProbeConfig(), "mados": ProbeConfig()})
    features = raw_pixel_features(task, 4)                                  # (N, 2, 2, 24)
    by_split = {s: features[task.partition == s] for s in ("train", "valid", "test")}
    squeezed = {s: 1.0 + 0.003 * f / f.std() for s, f in by_split.items()}   # spread 0.003 around 1
    plain = score_features(REGISTRY["mados"], task, by_split, params, "mados").report
    small = score_features(REGISTRY["mados"], task, squeezed, params, "mados").report
    assert plain["micro_f1"] > 0.9
    assert small["micro_f1"] == pytest.approx(plain["micro_f1"])
