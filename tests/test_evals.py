"""Downstream-evaluation functions: metrics against hand counts, weighted kNN against hand-computed votes,
linear and segmentation probes on separable toys, label-fraction subsets, the ignore label, determinism."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from terrapipe.evals.knn import knn_classify, knn_multilabel
from terrapipe.evals.metrics import classification_report, confusion_matrix, multilabel_report
from terrapipe.evals.probes import (
    ProbeConfig,
    label_subset,
    pixel_logits,
    train_linear_probe,
    train_segmentation_probe,
)

# 3 classes used, a 4th never seen; rows = target, columns = prediction.
HAND_MATRIX = np.array([[2, 1, 0, 0],
                        [0, 1, 0, 0],
                        [1, 1, 3, 0],
                        [0, 0, 0, 0]])


def pairs_of(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pred, target) label vectors whose confusion matrix is ``matrix``."""
    target, pred = zip(*[(t, p) for t in range(len(matrix)) for p in range(len(matrix)) for _ in range(matrix[t, p])])
    return np.array(pred), np.array(target)


# ------------------------------------------------------------------------------------------- metrics

def test_report_matches_hand_counts_on_a_three_class_matrix():
    pred, target = pairs_of(HAND_MATRIX)
    assert (confusion_matrix(pred, target, 4) == HAND_MATRIX).all()
    report = classification_report(pred, target, 4)
    # tp = (2, 1, 3); fp = (1, 2, 0); fn = (1, 0, 2); n = 9
    assert report["n"] == 9
    assert report["accuracy"] == pytest.approx(6 / 9)
    assert report["micro_f1"] == pytest.approx(2 * 6 / (2 * 6 + 3 + 3))
    assert report["macro_f1"] == pytest.approx((4 / 6 + 2 / 4 + 6 / 8) / 3)
    assert report["miou"] == pytest.approx((2 / 4 + 1 / 3 + 3 / 5) / 3)
    per_class = report["per_class"]
    assert [c["precision"] for c in per_class[:3]] == pytest.approx([2 / 3, 1 / 3, 1.0])
    assert [c["recall"] for c in per_class[:3]] == pytest.approx([2 / 3, 1.0, 3 / 5])
    assert [c["support"] for c in per_class] == [3, 1, 5, 0]
    assert all(per_class[3][k] is None for k in ("precision", "recall", "f1", "iou"))   # absent: excluded


def test_a_class_on_one_side_only_counts_zero_in_the_means():
    pred, target = np.array([0, 0, 1]), np.array([0, 0, 0])         # class 1 predicted, never a target
    report = classification_report(pred, target, 3)
    assert report["per_class"][1]["f1"] == 0.0 and report["per_class"][1]["iou"] == 0.0
    assert report["per_class"][1]["recall"] == 0.0                  # undefined side scores 0
    assert report["miou"] == pytest.approx((2 / 3 + 0.0) / 2)       # class 2 absent from both: left out
    assert report["macro_f1"] == pytest.approx((0.8 + 0.0) / 2)


def test_ignored_pixels_change_nothing_whatever_was_predicted():
    pred, target = pairs_of(HAND_MATRIX)
    rng = np.random.default_rng(0)
    pred_masks = np.concatenate([pred, rng.integers(0, 4, 50)]).reshape(1, 59)
    target_masks = np.concatenate([target, np.full(50, -1)]).reshape(1, 59)
    assert classification_report(pred_masks, target_masks, 4, ignore_index=-1) == classification_report(pred, target, 4)
    with pytest.raises(ValueError, match="outside"):                # without ignore_index, -1 is a bad label
        classification_report(pred_masks, target_masks, 4)


def test_metrics_accept_torch_and_reject_bad_input():
    pred, target = pairs_of(HAND_MATRIX)
    assert classification_report(torch.from_numpy(pred), torch.from_numpy(target), 4) == \
        classification_report(pred, target, 4)
    with pytest.raises(ValueError, match="one shape"):
        confusion_matrix(pred[:-1], target, 4)
    with pytest.raises(ValueError, match="integer"):
        confusion_matrix(pred.astype(float), target, 4)
    with pytest.raises(ValueError, match="no labelled pixels"):
        classification_report(np.zeros(3, int), np.full(3, -1), 2, ignore_index=-1)


def test_multilabel_report_counts_each_class_as_a_binary_task():
    target = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0]])
    pred = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 1]])
    report = multilabel_report(pred, target)
    # per class tp/fp/fn: c0 2/0/0, c1 1/0/1, c2 0/1/1
    assert report["accuracy"] == pytest.approx(1 / 3)
    assert report["micro_f1"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 2))
    assert report["macro_f1"] == pytest.approx((1.0 + 2 / 3 + 0.0) / 3)
    assert report["miou"] == pytest.approx((1.0 + 1 / 2 + 0.0) / 3)


# ----------------------------------------------------------------------------------------------- kNN

def unit(degrees) -> np.ndarray:
    radians = np.radians(np.asarray(degrees, dtype=float))
    return np.stack([np.cos(radians), np.sin(radians)], axis=1)


def test_knn_two_class_toy_has_the_known_answer():
    train = unit([0, 10, 20, 170, 180, 190])
    labels = np.array([0, 0, 0, 1, 1, 1])
    pred, scores = knn_classify(train * 5.0, labels, unit([5, 175, 80]), 2, k=3, return_scores=True)
    assert pred.tolist() == [0, 1, 0]                               # 80 degrees is nearer the class-0 side
    assert scores.sum(axis=1) == pytest.approx(np.ones(3))
    assert scores[0, 0] == pytest.approx(1.0)                        # all three neighbours are class 0


def test_exp_weighting_overturns_the_majority_vote():
    # One class-0 row at cosine 1.0, two class-1 rows at cosine 0.9: majority says 1, exp(sim / 0.07) says 0.
    train = np.array([[1.0, 0.0], [0.9, math.sqrt(1 - 0.81)], [0.9, -math.sqrt(1 - 0.81)]])
    labels = np.array([0, 1, 1])
    query = np.array([[2.0, 0.0]])
    pred, scores = knn_classify(train, labels, query, 2, k=3, temperature=0.07, return_scores=True)
    share0 = math.exp(1 / 0.07) / (math.exp(1 / 0.07) + 2 * math.exp(0.9 / 0.07))
    assert pred.tolist() == [0] and scores[0, 0] == pytest.approx(share0, rel=1e-5)
    assert knn_classify(train, labels, query, 2, k=3, temperature=100.0).tolist() == [1]   # ~ plain majority
    sharp = knn_classify(train, labels, query, 2, k=3, temperature=0.001, return_scores=True)[1]
    assert np.isfinite(sharp).all() and sharp[0, 0] == pytest.approx(1.0)   # exp(1 / 0.001) would overflow


def test_k_beyond_n_uses_every_row_and_ties_go_to_the_lowest_class():
    train, labels = unit([0, 90, 180]), np.array([2, 1, 2])
    query = unit([45, 200])
    assert (knn_classify(train, labels, query, 3, k=20) == knn_classify(train, labels, query, 3, k=3)).all()
    tie = knn_classify(np.array([[1.0, 0.0], [1.0, 0.0]]), np.array([1, 0]), np.array([[1.0, 0.0]]), 2, k=2)
    assert tie.tolist() == [0]


def test_knn_chunks_never_change_the_result_and_torch_inputs_work():
    rng = np.random.default_rng(1)
    train, labels, query = rng.normal(size=(50, 6)), rng.integers(0, 4, 50), rng.normal(size=(37, 6))
    whole = knn_classify(train, labels, query, 4, k=7, return_scores=True)
    chunked = knn_classify(torch.from_numpy(train), torch.from_numpy(labels), torch.from_numpy(query), 4, k=7,
                           query_chunk=5, return_scores=True)
    assert (whole[0] == chunked[0]).all() and np.allclose(whole[1], chunked[1], rtol=1e-5, atol=1e-7)
    assert np.array_equal(whole[1], knn_classify(train, labels, query, 4, k=7, return_scores=True)[1])
    with pytest.raises(ValueError, match="lie in"):
        knn_classify(train, np.where(labels == 0, -1, labels), query, 4)
    with pytest.raises(ValueError, match="width"):
        knn_classify(train, labels, query[:, :5], 4)


def test_multilabel_knn_is_one_weighted_binary_vote_per_class():
    train = np.array([[1.0, 0.0], [0.9, math.sqrt(1 - 0.81)], [0.9, -math.sqrt(1 - 0.81)], [-1.0, 0.0]])
    multi_hot = np.array([[1, 0, 1], [0, 1, 1], [0, 1, 0], [1, 1, 1]])
    pred, share = knn_multilabel(train, multi_hot, np.array([[1.0, 0.0]]), k=3, return_scores=True)
    w1, w9 = math.exp(1 / 0.07), math.exp(0.9 / 0.07)
    assert share[0] == pytest.approx([w1 / (w1 + 2 * w9), 2 * w9 / (w1 + 2 * w9), (w1 + w9) / (w1 + 2 * w9)],
                                     rel=1e-5)
    assert pred.tolist() == [[1, 0, 1]]                              # class 1: majority yes, weighted no
    assert knn_multilabel(train, multi_hot, np.array([[1.0, 0.0]]), k=99).tolist() == \
        knn_multilabel(train, multi_hot, np.array([[1.0, 0.0]]), k=4).tolist()


# --------------------------------------------------------------------------------------------- probes

FAST = ProbeConfig(lr=0.05, epochs=8, batch_size=32)


def clusters(n: int, seed: int, num_classes: int = 3, dim: int = 8):
    """Well separated Gaussian clusters: a linearly separable classification toy."""
    centres = np.random.default_rng(99).normal(size=(num_classes, dim)) * 4
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n)
    return (centres[labels] + rng.normal(size=(n, dim))).astype(np.float32), labels


def test_linear_probe_separates_clusters_and_repeats_bit_for_bit():
    (x, y), (xt, yt) = clusters(240, 0), clusters(90, 1)
    first = train_linear_probe(x, y, xt, yt, 3, FAST, val_emb=xt, val_labels=yt)
    again = train_linear_probe(torch.from_numpy(x), y, xt, yt, 3, FAST, val_emb=xt, val_labels=yt)
    assert first.metrics["accuracy"] == 1.0 and first.metrics["n"] == 90
    assert first.curve == again.curve and first.metrics == again.metrics
    assert len(first.curve) == FAST.epochs and first.curve[-1]["train_loss"] < first.curve[0]["train_loss"]
    assert first.curve[-1]["val_accuracy"] == 1.0
    other_seed = train_linear_probe(x, y, xt, yt, 3, FAST.model_copy(update={"seed": 1}))
    assert other_seed.curve[0]["train_loss"] != first.curve[0]["train_loss"]


def test_a_long_probe_reports_val_at_evenly_spaced_epochs_and_the_last():
    from terrapipe.evals.probes import VAL_POINTS

    (x, y), (xt, yt) = clusters(64, 0), clusters(16, 1)
    config = FAST.model_copy(update={"epochs": 2 * VAL_POINTS + 1})
    curve = train_linear_probe(x, y, xt, yt, 3, config, val_emb=xt, val_labels=yt).curve
    with_val = [p["epoch"] for p in curve if "val_accuracy" in p]
    assert len(curve) == config.epochs
    assert with_val == [*range(2, 2 * VAL_POINTS + 1, 2), config.epochs]


def test_linear_probe_schedule_warms_up_then_decays_to_final_lr():
    x, y = clusters(64, 2)
    config = ProbeConfig(lr=0.1, epochs=10, batch_size=32, warmup_fraction=0.1, final_lr=1e-3)
    lrs = [p["lr"] for p in train_linear_probe(x, y, x, y, 3, config).curve]    # lr at each epoch's first step
    assert lrs[0] == pytest.approx(0.1 * 1 / 2)                      # 20 steps, 2 of warmup: step 0 at 1/2
    assert lrs[1] == pytest.approx(0.1)                              # step 2: the peak, cosine starts
    assert all(a > b for a, b in zip(lrs[1:], lrs[2:])) and lrs[-1] > 1e-3


def test_rows_without_a_label_change_nothing():
    (x, y), (xt, yt) = clusters(100, 3), clusters(30, 4)
    noisy = np.concatenate([x, np.random.default_rng(5).normal(size=(20, 8)).astype(np.float32) * 50])
    plain = train_linear_probe(x, y, xt, yt, 3, FAST)
    padded = train_linear_probe(noisy, np.concatenate([y, np.full(20, -1)]), xt, yt, 3, FAST)
    assert plain.curve == padded.curve and plain.metrics == padded.metrics   # else BatchNorm would see them


def patch_toy(n: int, seed: int, h: int = 4, classes: int = 3, patch: int = 2, dim: int = 6):
    """Per-patch classes: each patch embedding is its class's one-hot (plus noise); the mask repeats it."""
    rng = np.random.default_rng(seed)
    cls = rng.integers(0, classes, (n, h, h))                                    # (N, H', W')
    emb = (np.eye(dim)[cls] * 3 + 0.1 * rng.normal(size=(n, h, h, dim))).astype(np.float32)   # (N, H', W', D)
    return emb, cls.repeat(patch, axis=1).repeat(patch, axis=2)                # masks (N, H'*ps, W'*ps)


SEG = ProbeConfig(lr=0.05, epochs=15, batch_size=8)


def test_segmentation_probe_learns_the_per_patch_toy_and_repeats():
    (x, m), (xt, mt) = patch_toy(32, 0), patch_toy(8, 1)
    mt[0, :3, :3] = -1                                                          # ignored test pixels
    result = train_segmentation_probe(x, m, xt, mt, 2, 3, SEG)
    assert result.metrics["miou"] == 1.0 and result.metrics["n"] == mt.size - 9
    assert result.curve == train_segmentation_probe(x, m, xt, mt, 2, 3, SEG).curve


def test_segmentation_probe_resizes_bilinearly_when_the_mask_is_larger():
    (x, m), (xt, mt) = patch_toy(32, 0), patch_toy(8, 1)
    big, big_test = m.repeat(2, axis=1).repeat(2, axis=2), mt.repeat(2, axis=1).repeat(2, axis=2)   # (N, 16, 16)
    linear = torch.nn.Linear(6, 3 * 2 * 2)
    assert pixel_logits(linear, torch.from_numpy(x[:2]), 2, (16, 16)).shape == (2, 3, 16, 16)
    assert pixel_logits(linear, torch.from_numpy(x[:2]), 2, (8, 8)).shape == (2, 3, 8, 8)
    result = train_segmentation_probe(x, big, xt, big_test, 2, 3, SEG)
    assert result.metrics["miou"] > 0.9                             # patch borders blur under interpolation
    with pytest.raises(ValueError, match="must match"):
        train_segmentation_probe(x, big, xt, mt, 2, 3, SEG)


def test_pixel_logits_places_each_patch_channel_at_its_pixel():
    linear = torch.nn.Linear(1, 2 * 2 * 2, bias=True)
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.copy_(torch.arange(8.0))                        # (C=2, i=2, j=2) flattened
    logits = pixel_logits(linear, torch.zeros(1, 1, 3, 1), 2, (2, 6))           # (1, 2, 2, 6)
    assert logits[0, 1, 1, 0] == 6.0 and logits[0, 1, 1, 3] == 7.0 and logits[0, 0, 0, 1] == 1.0 and logits[0, 1, 0, 5] == 5.0


def test_patch_cross_entropy_is_the_pixel_map_cross_entropy():
    from terrapipe.evals.probes import patch_cross_entropy

    generator = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(5, 3 * 4 * 4)
    x = torch.randn(2, 3, 2, 5, generator=generator)                            # (B, H', W', D), ps = 4
    masks = torch.randint(0, 3, (2, 12, 8), generator=generator)
    masks[0, :5, 2:7] = -1                                                      # ignored pixels across patches
    pixels = torch.nn.functional.cross_entropy(pixel_logits(linear, x, 4, (12, 8)), masks, ignore_index=-1)
    assert patch_cross_entropy(linear, x, masks, 4, -1).item() == pytest.approx(pixels.item(), rel=1e-6)


# -------------------------------------------------------------------------------------- label fraction

def test_label_subset_is_stratified_seeded_and_keeps_every_class():
    labels = np.repeat([0, 1, 2], [100, 50, 3])
    subset = label_subset(labels, 3, 0.1, seed=0)
    assert np.bincount(labels[subset], minlength=3).tolist() == [10, 5, 1]
    assert subset.tolist() == label_subset(labels, 3, 0.1, seed=0).tolist()
    assert subset.tolist() != label_subset(labels, 3, 0.1, seed=1).tolist()
    assert np.bincount(labels[label_subset(labels, 3, 0.01, seed=0)], minlength=3).tolist() == [1, 1, 1]
    assert label_subset(labels, 3, 1.0, seed=0).tolist() == list(range(len(labels)))


def test_label_subset_of_masks_keeps_minority_classes_and_drops_unlabelled_rows():
    masks = np.zeros((40, 4, 4), dtype=np.int64)
    masks[7, 0, 0] = 2                                              # class 2: one pixel, never a majority
    masks[9] = -1                                                   # no labelled pixel
    subset = label_subset(masks, 3, 0.1, seed=0)
    assert 7 in subset and 9 not in subset and len(subset) == 5     # 4 of 39 class-0 rows, then row 7
    assert 9 not in label_subset(masks, 3, 1.0, seed=0)


def test_probe_config_rejects_impossible_values():
    for bad in ({"label_fraction": 0.0}, {"label_fraction": 1.5}, {"final_lr": 1.0}, {"epochs": 0},
                {"unknown": 1}, {"batch_size": 1}):
        with pytest.raises(ValidationError):
            ProbeConfig(**bad)
    labels = np.repeat([0, 1], [1, 200])
    assert np.bincount(labels[label_subset(labels, 2, 0.001, seed=0)]).tolist() == [1, 1]
    x = np.random.default_rng(0).normal(size=(201, 4)).astype(np.float32)
    result = train_linear_probe(x, labels, x, labels, 2, ProbeConfig(label_fraction=0.001, epochs=1))
    assert result.train_rows.tolist()[0] == 0 and len(result.train_rows) == 2
    with pytest.raises(ValueError, match="integer class indices"):
        train_linear_probe(x, labels.astype(float), x, labels, 2, ProbeConfig(epochs=1))
    with pytest.raises(ValueError, match="test labels must lie in"):
        train_linear_probe(x, labels, x, labels + 1, 2, ProbeConfig(epochs=1))
    with pytest.raises(ValueError, match="raise label_fraction"):
        train_linear_probe(x, np.zeros(201, int), x, labels, 2, ProbeConfig(label_fraction=0.001, epochs=1))


def test_embedding_geometry_against_hand_cases():
    from terrapipe.evals.metrics import embedding_geometry

    line = np.outer(np.arange(1.0, 7.0), [3.0, 4.0, 0.0])                  # 6 rows on one ray
    one = embedding_geometry(line)
    assert one["effective_rank"] == pytest.approx(1.0) and one["top_direction_share"] == pytest.approx(1.0)
    assert one["mean_cosine"] == pytest.approx(1.0) and one["rows"] == 6
    square = np.array([[1.0, 0], [-1, 0], [0, 1], [0, -1]])                 # isotropic in 2-D
    two = embedding_geometry(square)
    assert two["effective_rank"] == pytest.approx(2.0) and two["top_direction_share"] == pytest.approx(0.5)
    assert two["mean_cosine"] == pytest.approx(-1 / 3)                      # 12 ordered pairs: 4 at -1, 8 at 0
    grid = embedding_geometry(np.tile(square, (3, 1)).reshape(3, 2, 2, 2), max_rows=5)
    assert grid["rows"] == 5
    with pytest.raises(ValueError, match="at least 2 rows"):
        embedding_geometry(np.ones((1, 4)))
