"""DeepEarth experiments on the embedding store: the reference species classifiers and a cross-modal
masked autoencoder with a zero-shot test (the deepearth_classify stage).

What differs from the reference (reference/deepearth-behaviour.md 4): labels come from the training
species only, and a test observation of a species unseen in training is neither mapped to class 0 nor
dropped: every group reports how many there are, accuracy over the seen ones and accuracy counting them
as errors. Every metric is given per split reason (temporal_test, spatial_test_region_k) and for the
whole test split, beside baselines scored by the same code (majority class, nearest centroid). The
language classifier's input is constant per species, so its accuracy on seen species is trivially ~100%;
it is reported because it is the reference's experiment, with a note saying so.

Inputs are standardized with the training rows' per-dimension mean and std (kept in each checkpoint).
Training is deterministic on CPU: fixed seeds, deterministic algorithms, batch order from the seed.

Only pydantic and numpy are imported at module level (check_params validates the section with it).
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from terrapipe.data.embedding_store import StoreConfig, validated

log = logging.getLogger("terrapipe")

Mode = Literal["language", "vision"]
TOP_K = 5
CHECKPOINT_FORMAT = 1
METRICS = "metrics.json"                          # DVC metrics
CURVES = "curves.csv"                             # DVC plots: classifiers, one row per epoch
AUTOENCODER_CURVES = "autoencoder_curves.csv"     # DVC plots: the autoencoder, one row per epoch
LANGUAGE_NOTE = ("the language input is one DeepSeek-V3 vector per species (constant within a species), so "
                 "accuracy on seen species is trivially ~100%: a lookup, not recognition; reported because it is "
                 "the reference's experiment")
TEST_GROUP = "test"                               # the whole test split, beside each split reason


# --------------------------------------------------------------------------------------------- params

class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ClassifierConfig(_Section):
    modes: list[Mode] = ["language", "vision"]
    epochs: int = Field(5, ge=1)                 # defaults: the stage in < 60 s on the 2-core sample world
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0.0)               # Adam, as the reference
    hidden_dim: int = Field(128, ge=1)
    seed: int = 0

    @field_validator("modes")
    @classmethod
    def _modes_once(cls, modes):
        if not modes or len(set(modes)) != len(modes):
            raise ValueError(f"must list each of language, vision at most once and at least one ({modes})")
        return modes


class AutoencoderConfig(_Section):
    shared_dim: int = Field(128, ge=1)
    epochs: int = Field(4, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    mask_fraction: float = Field(0.25, ge=0.0, lt=1.0)     # input dims zeroed (= the training mean) per row
    zero_shot_fraction: float = Field(0.1, gt=0.0, lt=1.0)  # of the species, held out of training entirely
    seed: int = 0


class DeepEarthParams(_Section):
    store: StoreConfig = StoreConfig()
    classifier: ClassifierConfig = ClassifierConfig()
    autoencoder: AutoencoderConfig = AutoencoderConfig()


def deepearth_params(params) -> DeepEarthParams:
    """The validated ``deepearth`` section of loaded params (terrapipe.config.Params); ConfigError on problems."""
    return validated(DeepEarthParams, params.deepearth, "deepearth")


# -------------------------------------------------------------------------------------------- metrics

def ranking_metrics(log_probs: np.ndarray, labels: np.ndarray, groups: np.ndarray, *,
                    with_ce: bool = True) -> dict[str, dict]:
    """Top-1 / top-5 accuracy and mean cross-entropy per group and for all rows (key "test").

    Args: log_probs [N, C] class scores (log-probabilities when ``with_ce``; any scores otherwise);
        labels [N] class index, -1 for a species unseen in training; groups [N] split reason per row.
    Returns: {group: {n, n_seen, n_unseen, unseen_share, top1, top5 (over seen rows), top1_all, top5_all
        (unseen rows counted as errors), ce (seen rows; only when ``with_ce``)}}; a metric over no rows is None.
    """
    k = min(TOP_K, log_probs.shape[1])
    order = np.argsort(-log_probs, axis=1, kind="stable")[:, :k]       # [N, k] best classes first (ties: lower index)
    hit1 = order[:, 0] == labels
    hitk = (order == labels[:, None]).any(axis=1)
    seen = labels >= 0
    ce = -log_probs[np.flatnonzero(seen), labels[seen]] if with_ce else None
    out = {}
    for name in [TEST_GROUP, *sorted(set(groups.tolist()))]:
        member = np.ones(len(labels), bool) if name == TEST_GROUP else groups == name
        in_seen = member[seen] if with_ce else None
        n, n_seen = int(member.sum()), int((member & seen).sum())
        entry = {"n": n, "n_seen": n_seen, "n_unseen": n - n_seen,
                 "unseen_share": _mean(~seen[member]),
                 "top1": _mean(hit1[member & seen]), "top5": _mean(hitk[member & seen]),
                 "top1_all": _mean(hit1[member]), "top5_all": _mean(hitk[member])}
        if with_ce:
            entry["ce"] = _mean(ce[in_seen])
        out[name] = entry
    return out


def _mean(values: np.ndarray) -> float | None:
    return float(np.mean(values)) if len(values) else None


def majority_log_probs(train_labels: np.ndarray, num_classes: int, n_rows: int) -> np.ndarray:
    """[n_rows, C] the training class frequencies for every row: the majority-class baseline (its top-1 is
    the most frequent training species, its CE the training prior's)."""
    prior = np.bincount(train_labels, minlength=num_classes) / len(train_labels)
    with np.errstate(divide="ignore"):
        return np.broadcast_to(np.log(prior), (n_rows, num_classes))


def centroid_scores(train_x: np.ndarray, train_labels: np.ndarray, num_classes: int, x: np.ndarray) -> np.ndarray:
    """[N, C] minus the squared distance from each row to each training species' mean feature vector:
    the nearest-centroid baseline on the raw (standardized) features."""
    order = np.argsort(train_labels, kind="stable")
    classes, starts, counts = np.unique(train_labels[order], return_index=True, return_counts=True)
    centroids = np.zeros((num_classes, train_x.shape[1]))
    centroids[classes] = np.add.reduceat(train_x[order].astype(np.float64), starts, axis=0) / counts[:, None]
    return -(np.square(x).sum(1)[:, None] - 2 * x @ centroids.T + np.square(centroids).sum(1)[None, :])


# ----------------------------------------------------------------------------------------------- data

@dataclass(frozen=True)
class Standardizer:
    """Per-dimension (x - mean) / std with the training rows' statistics (std floored for constant dims)."""
    mean: np.ndarray   # [dim] float32
    std: np.ndarray    # [dim] float32

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardizer:
        std = x.std(axis=0, dtype=np.float64)
        return cls(x.mean(axis=0, dtype=np.float64).astype(np.float32),
                   np.where(std > 1e-8, std, 1.0).astype(np.float32))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std

    def state(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}


def read_all(store, rows: np.ndarray, mode: Mode, batch_size: int = 1024) -> np.ndarray:
    """[len(rows), dim] float32 features of one modality, read from the store batch by batch."""
    parts = [getattr(store.read(rows[i:i + batch_size], vision=mode == "vision", language=mode == "language"), mode)
             for i in range(0, len(rows), batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0, _dim(store, mode)), np.float32)


def _dim(store, mode: Mode) -> int:
    return store.manifest[mode]["dim"]


def batches(rows: np.ndarray, batch_size: int, seed: int, epoch: int):
    """Shuffled batches of ``rows``; the order depends only on (seed, epoch)."""
    order = np.random.default_rng([seed, epoch]).permutation(len(rows))
    for start in range(0, len(rows), batch_size):
        yield rows[order[start:start + batch_size]]


def split_rows(store, *, need_vision: bool) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, test rows) of the store's split; rows without vision left out when ``need_vision``."""
    split = store.index["split"]
    usable = store.vision_offset >= 0 if need_vision else np.ones(len(store), bool)
    return (np.flatnonzero(usable & (split == "train")), np.flatnonzero(usable & (split == "test")))


@contextlib.contextmanager
def deterministic(seed: int):
    """Seeded torch, deterministic algorithms and one thread for the block (previous settings restored).

    One thread because a float sum's result depends on how it is split over threads: results then do
    not depend on the machine's core count; and these small models gain nothing from a second thread
    that another process may hold (2 threads ran 5x slower than 1 on the loaded 2-core build machine).
    """
    import torch

    before, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)
        torch.set_num_threads(threads)


# -------------------------------------------------------------------------------------------- classify

@dataclass
class ClassifierRun:
    mode: Mode
    model: object
    species: list[str]                 # class index -> taxon_name (sorted training species)
    standardizer: Standardizer
    metrics: dict
    curve: list[dict] = field(default_factory=list)   # per epoch: train_loss, test_top1, test_top1_all


def species_labels(taxon_name: np.ndarray, species: list[str]) -> np.ndarray:
    """Class index per row, -1 where the species is not a training species (never class 0)."""
    lookup = {name: i for i, name in enumerate(species)}
    return np.array([lookup.get(name, -1) for name in taxon_name], dtype=np.int64)


def _log_probs(model, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    import torch

    model.eval()
    with torch.no_grad():
        parts = [torch.log_softmax(model(torch.from_numpy(x[i:i + batch_size])), dim=1).numpy()
                 for i in range(0, len(x), batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def train_classifier(store, mode: Mode, params: DeepEarthParams) -> ClassifierRun:
    """Train the reference classifier of ``mode`` on the store's training split; score it on the test split."""
    import torch
    import torch.nn.functional as F

    from terrapipe.errors import InputDataError
    from terrapipe.models.deepearth import CLASSIFIERS

    cfg = params.classifier
    train_rows, test_rows = split_rows(store, need_vision=mode == "vision")
    if not len(train_rows):
        raise InputDataError(store.store_dir, f"has no training rows for the {mode} classifier",
                             "Check the split (data/processed/splits/deepearth) and re-run `dvc repro embedding_store`")
    taxon = store.index["taxon_name"]
    species = sorted(set(taxon[train_rows].tolist()))
    train_labels, test_labels = species_labels(taxon[train_rows], species), species_labels(taxon[test_rows], species)
    reasons = store.index["split_reason"][test_rows].astype(str)
    train_x = read_all(store, train_rows, mode)
    standardizer = Standardizer.fit(train_x)
    train_x, test_x = standardizer(train_x), standardizer(read_all(store, test_rows, mode))
    label_of_row = np.full(len(store), -1, dtype=np.int64)
    label_of_row[train_rows] = train_labels

    with deterministic(cfg.seed):
        model = CLASSIFIERS[mode](len(species), cfg.hidden_dim, in_dim=_dim(store, mode))
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=True)  # fused: ~2x on CPU
        curve = []
        for epoch in range(cfg.epochs):
            model.train()
            losses, sizes = [], []
            for rows in batches(train_rows, cfg.batch_size, cfg.seed, epoch):
                x = standardizer(getattr(store.read(rows, vision=mode == "vision", language=mode == "language"), mode))
                y = torch.from_numpy(label_of_row[rows])
                loss = F.cross_entropy(model(torch.from_numpy(x)), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
                sizes.append(len(rows))
            scores = ranking_metrics(_log_probs(model, test_x), test_labels, reasons)[TEST_GROUP]
            curve.append({"epoch": epoch + 1, "train_loss": float(np.average(losses, weights=sizes)),
                          "test_top1": scores["top1"], "test_top1_all": scores["top1_all"]})
            log.info("deepearth %s classifier epoch %d: train loss %.4f, test top-1 %s", mode, epoch + 1,
                     curve[-1]["train_loss"], scores["top1"])

    unseen = sorted(set(taxon[test_rows][test_labels < 0].tolist()))
    metrics = {
        "train_rows": len(train_rows), "test_rows": len(test_rows), "species_trained": len(species),
        "unseen_test_species": {"species": len(unseen), "observations": int((test_labels < 0).sum()),
                                "share": _mean(test_labels < 0)},
        "model": ranking_metrics(_log_probs(model, test_x), test_labels, reasons),
        "baselines": {
            "majority": ranking_metrics(majority_log_probs(train_labels, len(species), len(test_rows)),
                                        test_labels, reasons),
            "nearest_centroid": ranking_metrics(centroid_scores(train_x, train_labels, len(species), test_x),
                                                test_labels, reasons, with_ce=False),
        },
    }
    if mode == "language":
        metrics["note"] = LANGUAGE_NOTE
    return ClassifierRun(mode, model, species, standardizer, metrics, curve)


def classifier_checkpoint(run: ClassifierRun, params: DeepEarthParams, store) -> dict:
    """One dict: model state and shape, the species mapping, input standardization, config and metrics."""
    first = run.model.layers[0]
    return {"format": CHECKPOINT_FORMAT, "kind": "classifier", "mode": run.mode, "model": run.model.state_dict(),
            "model_config": {"in_dim": first.in_features, "hidden_dim": first.out_features,
                             "num_classes": len(run.species)},
            "species_to_index": {name: i for i, name in enumerate(run.species)},
            "standardization": run.standardizer.state(), "config": params.model_dump(mode="json"),
            "store": {"dtype": store.manifest["dtype"], "sources": store.manifest["sources"]},
            "metrics": run.metrics}


# ----------------------------------------------------------------------------------------- autoencoder

@dataclass
class AutoencoderRun:
    model: object
    standardizers: dict[str, Standardizer]
    held_out: list[str]                # taxon names never trained on (the zero-shot species)
    train_rows: np.ndarray             # the store rows trained on
    metrics: dict
    curve: list[dict] = field(default_factory=list)


def held_out_species(species_index: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted species indices held out of autoencoder training: round(fraction x species present), at least
    one and never all, drawn with ``seed`` (deterministic)."""
    present = np.unique(species_index)
    count = min(max(1, round(fraction * len(present))), len(present) - 1)
    return np.sort(np.random.default_rng(seed).choice(present, size=count, replace=False))


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of [N, d] arrays."""
    norm = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.einsum("nd,nd->n", a, b) / np.where(norm > 0, norm, 1.0)


def _normalize_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def identification(scores: np.ndarray, truth: np.ndarray, candidates: np.ndarray) -> dict:
    """Top-1 / top-5 of picking each row's species among ``candidates`` by ``scores`` [N, n_candidates],
    beside chance (k / n_candidates)."""
    k = min(TOP_K, len(candidates))
    best = candidates[np.argsort(-scores, axis=1, kind="stable")[:, :k]]   # [N, k] species indices
    return {"n": int(len(truth)), "candidates": int(len(candidates)),
            "top1": _mean(best[:, 0] == truth), "top5": _mean((best == truth[:, None]).any(axis=1)),
            "chance_top1": 1.0 / len(candidates), "chance_top5": k / len(candidates)}


def train_autoencoder(store, params: DeepEarthParams) -> AutoencoderRun:
    """Train the cross-modal masked autoencoder on training rows of all but the held-out species; score
    reconstructions per split reason and zero-shot identification of the held-out species."""
    import torch

    from terrapipe.errors import InputDataError
    from terrapipe.models.deepearth import CrossModalAutoencoder

    cfg = params.autoencoder
    train_rows, test_rows = split_rows(store, need_vision=True)
    split_all = np.sort(np.concatenate([train_rows, test_rows]))
    species_index = store.index["species_index"]
    if len(np.unique(species_index[split_all])) < 2:
        raise InputDataError(store.store_dir, "has fewer than 2 species with vision in the split",
                             "The zero-shot test needs species to hold out and species to train on")
    held = held_out_species(species_index[split_all], cfg.zero_shot_fraction, cfg.seed)
    is_held = np.isin(species_index, held)
    fit_rows, eval_rows = train_rows[~is_held[train_rows]], test_rows[~is_held[test_rows]]
    zero_shot_rows = split_all[is_held[split_all]]              # train and test rows: none was trained on
    if not len(fit_rows):
        raise InputDataError(store.store_dir, "has no training rows left after holding out the zero-shot species",
                             "Lower params.yaml deepearth.autoencoder.zero_shot_fraction")
    standardizers = {mode: Standardizer.fit(read_all(store, fit_rows, mode)) for mode in ("vision", "language")}

    def features(rows):
        batch = store.read(rows)
        return standardizers["vision"](batch.vision), standardizers["language"](batch.language)

    eval_vision, eval_language = features(eval_rows)
    reasons = store.index["split_reason"][eval_rows].astype(str)
    with deterministic(cfg.seed):
        model = CrossModalAutoencoder(_dim(store, "vision"), _dim(store, "language"), cfg.shared_dim)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=True)  # fused: ~2x on CPU
        masks = torch.Generator().manual_seed(cfg.seed)
        curve = []
        for epoch in range(cfg.epochs):
            model.train()
            losses, sizes = [], []
            for rows in batches(fit_rows, cfg.batch_size, cfg.seed, epoch):
                vision, language = (torch.from_numpy(x) for x in features(rows))
                out = model(_mask(vision, cfg.mask_fraction, masks), _mask(language, cfg.mask_fraction, masks))
                loss = reconstruction_loss(out, vision, language)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
                sizes.append(len(rows))
            recon = reconstruction_metrics(model, eval_vision, eval_language, reasons)[TEST_GROUP]
            curve.append({"epoch": epoch + 1, "train_loss": float(np.average(losses, weights=sizes)),
                          "test_cosine_language_from_vision": recon["language_from_vision"]["cosine"],
                          "test_cosine_vision_from_language": recon["vision_from_language"]["cosine"]})
            log.info("deepearth autoencoder epoch %d: train loss %.4f", epoch + 1, curve[-1]["train_loss"])

    all_language = standardizers["language"](store.species_language())
    zero_vision, _ = features(zero_shot_rows)
    names = species_names(store)
    metrics = {
        "train_rows": len(fit_rows), "test_rows": len(eval_rows),
        "held_out_species": len(held), "zero_shot_rows": len(zero_shot_rows),
        "reconstruction": reconstruction_metrics(model, eval_vision, eval_language, reasons),
        "zero_shot": zero_shot_metrics(model, zero_vision, species_index[zero_shot_rows], all_language, held),
        "note": ("reconstructions scored in standardized units (training mean 0, std 1 per dimension); "
                 "mse_mean_baseline predicts the training mean; zero-shot species (all their rows, train and "
                 "test) never entered training"),
    }
    return AutoencoderRun(model, standardizers, [names[i] for i in held], fit_rows, metrics, curve)


def _mask(x, fraction: float, generator):
    """``x`` with a random ``fraction`` of its entries zeroed (= the training mean after standardization)."""
    import torch

    if fraction == 0:
        return x
    return x * (torch.rand(x.shape, generator=generator) >= fraction)


def reconstruction_loss(out: dict, vision, language):
    """Mean of the four MSEs: each modality reconstructed from the other and from its (masked) self."""
    import torch.nn.functional as F

    return (F.mse_loss(out["vision_from_language"], vision) + F.mse_loss(out["language_from_vision"], language)
            + F.mse_loss(out["vision_from_vision"], vision) + F.mse_loss(out["language_from_language"], language)) / 4


def reconstruction_metrics(model, vision: np.ndarray, language: np.ndarray, reasons: np.ndarray) -> dict:
    """Per group ("test" and each split reason): cosine and MSE of vision->language and language->vision,
    beside the MSE of predicting the training mean."""
    import torch

    model.eval()
    with torch.no_grad():
        out = model(torch.from_numpy(vision), torch.from_numpy(language))
    predicted = {"language_from_vision": (out["language_from_vision"].numpy(), language),
                 "vision_from_language": (out["vision_from_language"].numpy(), vision)}
    result = {}
    for name in [TEST_GROUP, *sorted(set(reasons.tolist()))]:
        member = np.ones(len(reasons), bool) if name == TEST_GROUP else reasons == name
        result[name] = {"n": int(member.sum())}
        for key, (guess, target) in predicted.items():
            result[name][key] = {"cosine": _mean(_cosine(guess[member], target[member])),
                                 "mse": _mean(np.square(guess[member] - target[member]).mean(axis=1)),
                                 "mse_mean_baseline": _mean(np.square(target[member]).mean(axis=1))}
    return result


def zero_shot_metrics(model, vision: np.ndarray, truth: np.ndarray, all_language: np.ndarray,
                      held: np.ndarray) -> dict:
    """Identify held-out species from their vision embeddings through the shared space.

    Args: vision [N, V] standardized rows of held-out species; truth [N] their species index;
        all_language [n_species, L] standardized language embedding of every species; held [H] indices.
    Returns: for two readings of the shared space ("decoded": the language decoded from the vision code,
        nearest by cosine; "shared": the vision code nearest to each species' language code), identification
        among all species and among the held-out species only, each beside chance.
    """
    import torch

    model.eval()
    with torch.no_grad():
        vision_t = torch.from_numpy(vision)
        code = model.encode_vision(vision_t).numpy()                              # [N, D]
        decoded = model.language_decoder(model.encode_vision(vision_t)).numpy()   # [N, L]
        species_code = model.encode_language(torch.from_numpy(all_language)).numpy()  # [n_species, D]
    everyone = np.arange(len(all_language))
    result = {}
    for name, query, keys in (("decoded", decoded, all_language), ("shared", code, species_code)):
        scores = _normalize_rows(query) @ _normalize_rows(keys).T                # [N, n_species] cosine
        result[name] = {"all_species": identification(scores, truth, everyone),
                        "held_out_only": identification(scores[:, held], truth, held)}
    return result


def species_names(store) -> dict[int, str]:
    """species_index -> taxon_name, from the index."""
    return dict(zip(store.index["species_index"].tolist(), store.index["taxon_name"].tolist()))


def autoencoder_checkpoint(run: AutoencoderRun, params: DeepEarthParams, store) -> dict:
    model = run.model
    return {"format": CHECKPOINT_FORMAT, "kind": "cross_modal_autoencoder", "model": model.state_dict(),
            "model_config": {"vision_dim": model.vision_decoder.out_features,
                             "language_dim": model.language_decoder.out_features,
                             "shared_dim": model.vision_decoder.in_features},
            "standardization": {mode: s.state() for mode, s in run.standardizers.items()},
            "held_out_species": run.held_out, "config": params.model_dump(mode="json"),
            "store": {"dtype": store.manifest["dtype"], "sources": store.manifest["sources"]},
            "metrics": run.metrics}


# ------------------------------------------------------------------------------------------------ run

def _write_csv(path: Path, rows: list[dict]) -> None:
    """DVC plots: one row per epoch, 6 significant digits (same bytes on a rerun)."""
    import pandas as pd

    from terrapipe.atomic import atomic_path

    with atomic_path(path) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False, float_format="%.6g")


def _save(path: Path, state: dict) -> None:
    import torch

    from terrapipe.atomic import atomic_path

    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def run_deepearth(params: DeepEarthParams, store_dir: str | Path, out_dir: str | Path) -> dict:
    """Train the configured classifiers and the autoencoder on the store; write checkpoints (<mode>.pt,
    autoencoder.pt), metrics.json, curves.csv and autoencoder_curves.csv into ``out_dir``; return the metrics."""
    from terrapipe.atomic import write_json
    from terrapipe.data.embedding_store import EmbeddingStore

    store = EmbeddingStore.open(store_dir, verify=True)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = {"store": {"dtype": store.manifest["dtype"], "counts": store.manifest["counts"]}, "classifiers": {}}
    curves: dict[int, dict] = {}
    for mode in params.classifier.modes:
        run = train_classifier(store, mode, params)
        metrics["classifiers"][mode] = run.metrics
        for row in run.curve:
            curves.setdefault(row["epoch"], {"epoch": row["epoch"]}).update(
                {f"{mode}_{k}": v for k, v in row.items() if k != "epoch"})
        _save(out_dir / f"{mode}.pt", classifier_checkpoint(run, params, store))
    autoencoder = train_autoencoder(store, params)
    metrics["autoencoder"] = autoencoder.metrics
    _save(out_dir / "autoencoder.pt", autoencoder_checkpoint(autoencoder, params, store))
    _write_csv(out_dir / CURVES, list(curves.values()))
    _write_csv(out_dir / AUTOENCODER_CURVES, autoencoder.curve)
    write_json(out_dir / METRICS, metrics)
    return metrics
