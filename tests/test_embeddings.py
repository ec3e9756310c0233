"""Embedding extraction: a pico checkpoint trained for two steps on a tiny in-memory store, tasks built in
memory in raw units, and a fake encoder whose tokens are band-group pixel means (pooling by hand)."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from terrapipe.data.normalize import stats_to_json
from terrapipe.data.tasks import TaskData
from terrapipe.errors import ConfigError, InputDataError
from terrapipe.evals.embeddings import (
    EncoderHandle,
    cached_embeddings,
    extract,
    load_encoder,
    random_encoder_like,
)
from terrapipe.modalities import modality
from terrapipe.models.latent_mim import Encoded, LatentMIM
from terrapipe.train.experiments import ExperimentConfig, PretrainParams, resolve, resolved_document

TINY = {"model": {"size": "pico", "base_patch_size": 4}, "sampling": {"patch_sizes": [4], "hw_tokens": [2], "token_budget": 96},
        "train": {"steps": 2, "global_batch": 2, "microbatch": 2, "checkpoint_every": 2, "seed": 5},
        "optim": {"warmup_steps": 1}, "tracking": {"wandb": "disabled"},
        "masking": {"kind": "random"}, "losses": {"patch": {"kind": "patch_discrimination"}}}
# raw-unit statistics per band (S2 reflectance x 10000, S1 dB); B09 has none (never valid in pretraining)
MEANS = {"s2": 1500.0, "s1": -15.0, "landsat": 0.2, "worldcover": 40.0, "srtm": 100.0}
STDS = {"s2": 600.0, "s1": 4.0, "landsat": 0.1, "worldcover": 20.0, "srtm": 50.0}


def stats_document(key: str, no_stats: tuple[str, ...] = ()) -> dict:
    order = modality(key).band_order
    mean = np.array([np.nan if b in no_stats else MEANS[key] + 10 * i for i, b in enumerate(order)])
    std = np.array([np.nan if b in no_stats else STDS[key] * (1 + 0.1 * i) for i, b in enumerate(order)])
    return stats_to_json(order, {"mean": mean, "std": std, "count": np.full(len(order), 100)}, std_multiplier=2.0)


def tiny_store(n: int = 4, chip: int = 8, months: int = 3) -> dict:
    """Normalized store arrays (N, H, W, T, C) for two training steps."""
    rng = np.random.default_rng(0)

    def series(channels: int) -> np.ndarray:
        return rng.normal(0.5, 0.15, (n, chip, chip, months, channels)).astype(np.float32)
    return {"s2": series(12), "s1": series(2), "landsat": series(11),
            "worldcover": rng.normal(0.5, 0.2, (n, chip, chip, 1, 1)).astype(np.float32),
            "srtm": rng.normal(0.4, 0.01, (n, chip, chip, 1, 1)).astype(np.float32),
            "timestamps": np.stack(np.broadcast_arrays(15, np.arange(1, months + 1), 2024), -1)[None]
            .repeat(n, 0).astype(np.int32)}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A real pretrain checkpoint (the training loop's format, resolved_document config) after 2 steps."""
    from terrapipe.train.loop import train

    params = PretrainParams(base=TINY, experiments={"tiny": {}})
    config = resolve(params, "tiny")
    out = tmp_path_factory.mktemp("pretrain")
    store = tiny_store()
    extra = {"band_order": {m: list(modality(m).band_order) for m in config.token_modalities},
             "normalization": {"imagery": {m: stats_document(m, ("B09",) if m == "s2" else ())
                                           for m in config.token_modalities}, "era5": {}}}
    train(config, resolved_document(params, "tiny"), store, np.arange(len(store["s2"])), out, extra_state=extra,
          progress=False)
    return out / "checkpoint.pt"


@pytest.fixture(scope="module")
def handle(checkpoint):
    return load_encoder(checkpoint)


def make_task(n: int = 6, size: int = 16, steps: int | None = None, with_s1: bool = True, seed: int = 0,
              kind: str = "classification") -> TaskData:
    """Raw-unit images: S2 reflectance x 10000, S1 dB; [N, C, H, W], or [N, T, C, H, W] with ``steps``."""
    rng = np.random.default_rng(seed)
    time = () if steps is None else (steps,)
    images = {"s2": rng.uniform(200, 3000, (n, *time, 12, size, size)).astype(np.float32)}
    bands = {"s2": modality("s2").band_order}
    dates = {"s2": np.datetime64("2024-01-10") + 30 * np.arange(steps or 1)[None].repeat(n, 0)}
    if with_s1:
        images["s1"] = rng.uniform(-25, -5, (n, *time, 2, size, size)).astype(np.float32)
        bands["s1"] = modality("s1").band_order
        dates["s1"] = dates["s2"] + 2
    labels = np.zeros(n, np.int64) if kind == "classification" else np.zeros((n, size, size), np.int64)
    return TaskData("toy", kind, ("a", "b"), images, bands, labels,
                    np.array(["train", "valid", "test"] * n)[:n], tuple(f"s{i}" for i in range(n)), dates)


def replace_images(task: TaskData, **images) -> TaskData:
    kept = {k: v for k, v in {**task.images, **images}.items() if v is not None}
    return dataclasses.replace(task, images=kept, bands={k: task.bands[k] for k in kept},
                               dates={k: v for k, v in task.dates.items() if k in kept})


def test_checkpoint_loads_as_frozen_encoder_with_identity(checkpoint, handle):
    import hashlib

    assert handle.identity == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert not handle.model.training and not any(p.requires_grad for p in handle.model.parameters())
    state = torch.load(checkpoint, weights_only=True)
    assert all(torch.equal(v, state["model"][f"encoder.{k}"]) for k, v in handle.model.state_dict().items())
    assert handle.band_order["s2"] == modality("s2").band_order


def test_shapes_for_classification_and_segmentation(handle):
    task = make_task(n=5, size=16)
    assert extract(handle, task, "classification", batch_size=2).shape == (5, 64)
    segmentation = extract(handle, task, "segmentation", batch_size=4)
    assert segmentation.shape == (5, 4, 4, 64) and segmentation.dtype == np.float32       # patch 4: 16 / 4
    assert extract(handle, task, "segmentation", patch_size=8).shape == (5, 2, 2, 64)
    series = make_task(n=3, size=8, steps=3)
    assert extract(handle, series, "classification").shape == (3, 64)
    assert extract(handle, series, "segmentation").shape == (3, 2, 2, 64)
    assert np.isfinite(segmentation).all()


def test_a_missing_modality_is_the_same_as_no_modality(handle):
    both = make_task(n=4, size=8, steps=2)
    s1 = both.images["s1"].copy()
    s1[0] = np.nan                                                  # sample 0: S1 lost entirely
    with_gap = replace_images(both, s1=s1)
    without = replace_images(both, s1=None)
    for kind in ("classification", "segmentation"):
        a, b = extract(handle, with_gap, kind), extract(handle, without, kind)
        np.testing.assert_allclose(a[0], b[0], rtol=1e-5, atol=1e-5)
        assert not np.allclose(a[1], b[1], atol=1e-3)                # S1 present: it does change the embedding


def test_deterministic_and_batch_size_only_moves_rounding(checkpoint, handle):
    task = make_task(n=5, size=8, steps=2)
    first = extract(handle, task, "classification", batch_size=2)
    again = extract(load_encoder(checkpoint), task, "classification", batch_size=2)
    assert first.tobytes() == again.tobytes()
    np.testing.assert_allclose(extract(handle, task, "classification", batch_size=5), first, rtol=1e-4, atol=1e-5)


def test_random_encoder_has_the_shape_not_the_weights(handle):
    task = make_task(n=4, size=8)
    trained = extract(handle, task, "classification")
    random = random_encoder_like(handle, seed=1)
    baseline = extract(random, task, "classification")
    assert baseline.shape == trained.shape and not np.allclose(baseline, trained, atol=1e-3)
    assert random.identity != handle.identity != random_encoder_like(handle, seed=2).identity
    assert random_encoder_like(handle, seed=1).identity == random.identity
    assert extract(random_encoder_like(handle, seed=1), task, "classification").tobytes() == baseline.tobytes()
    torch.manual_seed(handle.config.train.seed)                      # the run's seed: its very initial encoder
    initial = LatentMIM(handle.config).encoder.state_dict()
    seeded = random_encoder_like(handle, handle.config.train.seed).model.state_dict()
    assert all(torch.equal(initial[k], seeded[k]) for k in initial)


class GroupMeanEncoder(torch.nn.Module):
    """A TokenEncoder whose tokens are (mean of the group's normalized pixels in the patch, 1)."""

    def __init__(self, config: ExperimentConfig):
        super().__init__()
        self.config = config

    def forward(self, batch, masks):
        tokens = {}
        for key in self.config.mix.encode:
            x, p = batch.modality(key), batch.patch_size                               # (B, H, W, T, C)
            B, H, W, T, C = x.shape
            patches = x.reshape(B, H // p, p, W // p, p, T, C)
            value = torch.stack([patches[..., list(g)].mean((2, 4, 6)) for g in self.config.groups(key).indices],
                                dim=-1)                                                # (B, h, w, T, G)
            tokens[key] = torch.stack([value, torch.ones_like(value)], -1) * (masks[key] == 0)[..., None]
        return Encoded(tokens, dict(masks), torch.zeros(B, 2))


def normalized(raw: np.ndarray, key: str) -> np.ndarray:
    """The store's rule by hand, with the test statistics: (x - (mean - 2 std)) / (4 std) per band."""
    doc = stats_document(key)["bands"]
    order = modality(key).band_order
    mean = np.array([doc[b]["mean"] for b in order])[:, None, None]
    std = np.array([doc[b]["std"] for b in order])[:, None, None]
    return (raw - (mean - 2 * std)) / (4 * std)                                         # (C, H, W)


def test_pooling_by_hand_with_a_fake_encoder_and_the_checkpoint_stats(handle):
    """Pooling over present tokens and normalization with the checkpoint's statistics, against hand sums."""
    fake = EncoderHandle(GroupMeanEncoder(handle.config), handle.config, handle.band_order, handle.normalization,
                         "group-means")
    task = make_task(n=2, size=8)
    s2 = task.images["s2"].copy()
    s2[0, 5, 1, 2] = np.nan                                       # sample 0: B06 lost in one pixel of patch (0, 0)
    task = replace_images(task, s2=s2)
    cls = extract(fake, task, "classification", patch_size=4)
    seg = extract(fake, task, "segmentation", patch_size=4)
    groups = [g for g in handle.config.groups("s2").indices]
    for n in range(2):
        x2, x1 = normalized(task.images["s2"][n], "s2"), normalized(task.images["s1"][n], "s1")
        tokens, per_position = [], np.zeros((2, 2))
        for i in range(2):
            for j in range(2):
                window = np.s_[:, 4 * i:4 * i + 4, 4 * j:4 * j + 4]
                s2_tokens = [x2[list(g)][window].mean() if not (n == 0 and i == j == 0 and k == 1) else None
                             for k, g in enumerate(groups[:2])]              # B09 has no stats: 60 m never present
                s2_tokens = [t for t in s2_tokens if t is not None]
                s1_token = x1[window].mean()
                tokens += s2_tokens + [s1_token]
                per_position[i, j] = (np.mean(s2_tokens) + s1_token) / 2
        np.testing.assert_allclose(cls[n], [np.mean(tokens), 1.0], rtol=1e-5)
        np.testing.assert_allclose(seg[n, ..., 0], per_position, rtol=1e-5)
        np.testing.assert_allclose(seg[n, ..., 1], 1.0, rtol=1e-6)
    other = {"imagery": {**handle.normalization["imagery"], "s1": stats_to_json(
        ("vv", "vh"), {"mean": np.array([-10.0, -20.0]), "std": np.array([1.0, 1.0]), "count": np.array([1, 1])},
        std_multiplier=2.0)}}
    shifted = extract(dataclasses.replace(fake, normalization=other), task, "classification", patch_size=4)
    assert not np.allclose(shifted, cls)                          # other statistics, other embeddings


def timestamp_recorder(handle) -> tuple[EncoderHandle, list]:
    """A group-mean encoder handle that appends every batch's timestamps (B, T, 3) to the returned list."""
    seen = []

    class Recording(GroupMeanEncoder):
        def forward(self, batch, masks):
            seen.append(batch.timestamps.clone())
            return super().forward(batch, masks)

    return EncoderHandle(Recording(handle.config), handle.config, handle.band_order, handle.normalization, "rec"), seen


def test_time_series_mean_skips_lost_steps_and_months_come_from_the_first_dated_modality(handle):
    fake, seen = timestamp_recorder(handle)
    task = make_task(n=1, size=4, steps=3)
    s2 = task.images["s2"].copy()
    s2[0, 1] = np.nan                                              # step 1 of S2 lost to clouds
    dates = {"s2": np.array([["2024-03-05", "NaT", "NaT"]], "datetime64[D]"),
             "s1": np.array([["2024-03-07", "2024-05-02", "NaT"]], "datetime64[D]")}
    task = dataclasses.replace(replace_images(task, s2=s2), dates=dates)
    seg = extract(fake, task, "segmentation", patch_size=4)
    x2 = [normalized(task.images["s2"][0, t], "s2") for t in (0, 2)]
    x1 = [normalized(task.images["s1"][0, t], "s1").mean() for t in range(3)]
    groups = handle.config.groups("s2").indices[:2]                  # B09 has no stats: the 60 m group is missing
    s2_mean = np.mean([x[list(g)].mean() for x in x2 for g in groups])
    np.testing.assert_allclose(seg[0, 0, 0, 0], (s2_mean + np.mean(x1)) / 2, rtol=1e-5)
    np.testing.assert_array_equal(seen[0][0].numpy(), [[5, 3, 2024], [2, 5, 2024], [1, 7, 2020]])


def test_single_images_are_encoded_at_one_fixed_date_whatever_their_files_say(handle):
    """OlmoEarth's GeoBench and MADOS datasets pass default_day_month_year: a chip's own month must not reach
    the encoder, or kNN votes by season (the sample tasks carry real acquisition dates)."""
    fake, seen = timestamp_recorder(handle)
    task = make_task(n=3, size=4)
    dated = dataclasses.replace(task, dates={k: v + 100 * np.arange(3)[:, None] for k, v in task.dates.items()})
    assert len({str(d) for d in dated.dates["s2"][:, 0]}) == 3                 # three different months on file
    extract(fake, dated, "classification", patch_size=4)
    np.testing.assert_array_equal(seen[0].numpy(), [[[1, 7, 2020]]] * 3)


def test_merged_bandsets_pool_over_the_merged_tokens(handle):
    merged = ExperimentConfig.model_validate({**TINY, "model": {**TINY["model"], "merge": {"enabled": True}}})
    encoder = random_encoder_like(dataclasses.replace(handle, config=merged), seed=0)
    both = make_task(n=2, size=8)
    s1 = both.images["s1"].copy()
    s1[0] = np.nan
    a = extract(encoder, replace_images(both, s1=s1), "segmentation")
    b = extract(encoder, replace_images(both, s1=None), "segmentation")
    assert a.shape == (2, 2, 2, 64)
    np.testing.assert_allclose(a[0], b[0], rtol=1e-5, atol=1e-5)


class Counting(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, batch, masks):
        self.calls += 1
        return self.inner(batch, masks)


def test_cache_never_calls_the_encoder_twice_and_keys_on_encoder_and_data(handle, tmp_path):
    task = make_task(n=6, size=8)
    counted = dataclasses.replace(handle, model=Counting(handle.model))
    first = cached_embeddings(counted, task, "classification", "train", tmp_path, batch_size=1)
    assert counted.model.calls == 2                               # two train samples, one per batch
    again = cached_embeddings(counted, task, "classification", "train", tmp_path, batch_size=1)
    assert counted.model.calls == 2 and again.tobytes() == first.tobytes()
    np.testing.assert_array_equal(first, extract(handle, task.subset("train"), "classification", batch_size=1))
    (key_file,) = tmp_path.glob("*.json")
    key = json.loads(key_file.read_text())
    assert key["encoder"] == handle.identity and key["split"] == "train" and key["shape"] == [2, 64]
    assert key_file.with_suffix(".npy").is_file() and not list(tmp_path.glob(".*tmp*"))

    cached_embeddings(counted, task, "classification", "valid", tmp_path)           # another split
    cached_embeddings(counted, task, "segmentation", "train", tmp_path)             # another kind
    s2 = task.images["s2"].copy()
    s2[0, 0, 0, 0] += 1.0
    cached_embeddings(counted, replace_images(task, s2=s2), "classification", "train", tmp_path)  # other data
    assert counted.model.calls == 5
    random = dataclasses.replace(random_encoder_like(handle, 0), model=Counting(handle.model))
    cached_embeddings(random, task, "classification", "train", tmp_path)            # another encoder
    assert random.model.calls == 1 and len(list(tmp_path.glob("*.npy"))) == 5
    threads = torch.get_num_threads()
    try:                                     # another thread count sums in another order: its own entry
        torch.set_num_threads(threads + 1)
        cached_embeddings(random, task, "classification", "train", tmp_path)
    finally:
        torch.set_num_threads(threads)
    assert random.model.calls == 2 and len(list(tmp_path.glob("*.npy"))) == 6


def test_clear_errors(checkpoint, handle, tmp_path):
    task = make_task(n=2, size=8)
    with pytest.raises(InputDataError, match="missing"):
        load_encoder(tmp_path / "absent.pt")
    state = torch.load(checkpoint, weights_only=True)
    del state["normalization"]
    torch.save(state, tmp_path / "old.pt")
    with pytest.raises(InputDataError, match="'normalization'"):
        load_encoder(tmp_path / "old.pt")
    with pytest.raises(ConfigError, match="kind"):
        extract(handle, task, "regression")
    with pytest.raises(ConfigError, match="patch_size 3"):
        extract(handle, task, "classification", patch_size=3)
    with pytest.raises(ConfigError, match="encoder encodes"):
        extract(dataclasses.replace(handle, config=ExperimentConfig.model_validate(
            {**TINY, "mix": {"encode": ["landsat"]}})), task, "classification")
    empty = task.images["s2"].copy()
    empty[1] = np.nan
    with pytest.raises(InputDataError, match="1 sample.*no complete band group.*s1"):
        extract(handle, replace_images(task, s2=empty, s1=None), "classification")
    with pytest.raises(ConfigError, match="split"):
        cached_embeddings(handle, task, "classification", "training", tmp_path)


def test_a_band_the_task_lacks_is_imputed_from_its_nearest_band_in_wavelength(handle):
    """So2Sat / PASTIS ship 10 S2 bands, MADOS 11: B01 takes B02's values and B09 B8A's (OlmoEarth's imputation),
    so an encoder whose band group holds all 12 still sees the task."""
    full = make_task(n=3, size=8, with_s1=False)
    order = list(full.bands["s2"])
    s2 = full.images["s2"].copy()
    s2[:, order.index("B01")] = s2[:, order.index("B02")]
    s2[:, order.index("B09")] = s2[:, order.index("B8A")]
    kept = [i for i, b in enumerate(order) if b not in ("B01", "B09")]
    lacking = dataclasses.replace(full, images={"s2": np.ascontiguousarray(s2[:, kept])},
                                  bands={"s2": tuple(order[i] for i in kept)})
    copied = dataclasses.replace(full, images={"s2": s2})
    np.testing.assert_array_equal(extract(handle, lacking, "classification"), extract(handle, copied, "classification"))
