"""Training batches from the processed store: random crops and timestep subsets under a token budget,
two masked views per sample, assembled with array slicing (no per-pixel Python loops).

Randomness is a pure function of (seed, step, global sample index): a sample's crop, timesteps and
masks do not depend on which rank or microbatch it lands in, so a resumed run and a run split over
ranks see exactly the batches of a single uninterrupted run (OlmoEarth resamples patch size and crop
size per rank batch; here per optimizer step, shared by all ranks).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from terrapipe.modalities import ERA5, modality
from terrapipe.train.experiments import ExperimentConfig
from terrapipe.train.masking import mask_batch
from terrapipe.train.roles import MaskValue

MISSING_VALUE = -99999.0


@dataclass
class Batch:
    """One microbatch: one field per modality (torch tensors, missing pixels zeroed), masks per view.

    Spatial modalities are (B, H, W, T, C) (maps T = 1); ERA5 tokens (B, T, C) at the sampled months.
    ``present[m]`` (B, *grid, G) marks tokens with data; ``views`` holds the two masked views, each a
    dict modality -> int8 (B, *grid, G) of MaskValue. ``era5_series`` (B, 12, 6) is the whole year for
    the pooled ERA5 objectives with ``era5_valid`` its non-missing entries.
    """
    patch_size: int
    timestamps: object                      # (B, T, 3) day, month, year
    s2: object | None = None
    s1: object | None = None
    landsat: object | None = None
    worldcover: object | None = None
    srtm: object | None = None
    era5: object | None = None
    present: dict = field(default_factory=dict)
    views: list = field(default_factory=list)
    era5_series: object | None = None
    era5_valid: object | None = None

    def modality(self, key: str):
        return getattr(self, key)

    @property
    def size(self) -> int:
        return int(self.timestamps.shape[0])

    def to(self, device) -> Batch:
        def move(value):
            if isinstance(value, dict):
                return {k: move(v) for k, v in value.items()}
            if isinstance(value, list):
                return [move(v) for v in value]
            return value.to(device, non_blocking=True) if hasattr(value, "to") else value
        return Batch(**{name: move(getattr(self, name)) for name in self.__dataclass_fields__})


@dataclass(frozen=True)
class StepShape:
    """What one optimizer step's samples look like: patch size, tokens per side, timesteps."""
    patch_size: int
    hw: int
    timesteps: int


def tokens_per_sample(config: ExperimentConfig, hw: int, timesteps: int) -> int:
    """Tokens of one sample: h*w*T*G per image series, h*w*G per map, T*G for ERA5 tokens."""
    total = 0
    for key in config.token_modalities:
        mod, groups = modality(key), len(config.groups(key))
        if mod.is_time_only:
            total += timesteps * groups
        else:
            total += hw * hw * (timesteps if mod.multitemporal else 1) * groups
    return total


def step_shape(config: ExperimentConfig, step: int, months: int, chip: int) -> StepShape:
    """Draw the step's patch size and crop size (crops that fit a ``chip`` px chip); T = the most
    timesteps within the token budget."""
    sampling = config.sampling
    rng = np.random.default_rng([config.train.seed, step, 0xC0FFEE])
    pairs = [(p, h) for p in sampling.patch_sizes for h in sampling.hw_tokens if p * h <= chip]
    if not pairs:
        from terrapipe.errors import ConfigError
        raise ConfigError(f"no pretrain sampling.patch_sizes x hw_tokens crop fits the store's {chip} px chips "
                          f"({sampling.patch_sizes} x {sampling.hw_tokens}); lower them or raise "
                          "sources.sentinel.chip_size")
    patch, hw = pairs[rng.integers(len(pairs))]
    timesteps = months
    while timesteps > 1 and tokens_per_sample(config, hw, timesteps) > sampling.token_budget:
        timesteps -= 1
    return StepShape(int(patch), int(hw), timesteps)


def sample_rng(config: ExperimentConfig, step: int, sample: int) -> np.random.Generator:
    return np.random.default_rng([config.train.seed, step, sample])


def epoch_order(config: ExperimentConfig, train_rows: np.ndarray, epoch: int) -> np.ndarray:
    return np.random.default_rng([config.train.seed, epoch, 0xE90C]).permutation(train_rows)


def global_rows(config: ExperimentConfig, train_rows: np.ndarray, step: int) -> np.ndarray:
    """The store rows of step ``step``'s global batch (epochs of shuffled train sites, in order)."""
    size = config.train.global_batch
    positions = np.arange(step * size, (step + 1) * size)
    n = len(train_rows)
    out = np.empty(size, np.int64)
    for epoch in np.unique(positions // n):
        take = positions // n == epoch
        out[take] = epoch_order(config, train_rows, int(epoch))[positions[take] % n]
    return out


def _token_missing(missing: np.ndarray, groups, patch: int) -> np.ndarray:
    """Pixel missing (B, H, W, T, C) -> token missing (B, h, w, T, G): any pixel of any band in the group."""
    B, H, W, T, C = missing.shape
    per_patch = missing.reshape(B, H // patch, patch, W // patch, patch, T, C).any(axis=(2, 4))  # (B, h, w, T, C)
    return np.stack([per_patch[..., list(g)].any(-1) for g in groups], axis=-1)


def assemble(config: ExperimentConfig, arrays: dict, rows: np.ndarray, sample_ids: np.ndarray, step: int,
             shape: StepShape) -> Batch:
    """Build one microbatch from store arrays (memory maps [N, ...]) for the given rows.

    ``sample_ids`` are the samples' positions in the global batch sequence: they seed each sample's
    crop, timesteps and masks.
    """
    import torch

    rngs = [sample_rng(config, step, int(i)) for i in sample_ids]
    months = arrays["timestamps"].shape[1]
    crop = shape.hw * shape.patch_size
    chip = arrays[config.mix.encode[0]].shape[1]
    offsets = np.array([r.integers(0, chip - crop + 1, size=2) for r in rngs])                # (B, 2)
    times = np.stack([np.sort(r.choice(months, shape.timesteps, replace=False)) for r in rngs])  # (B, T)
    fields, present = {}, {}
    for key in config.token_modalities:
        mod, groups = modality(key), config.groups(key).indices
        source = arrays[key]
        if mod.is_time_only:                                         # ERA5 (N, 12, C) -> (B, T, C)
            x = np.take_along_axis(np.stack([source[row] for row in rows]), times[:, :, None], axis=1)
            missing = x == MISSING_VALUE
            present[key] = ~np.stack([missing[..., list(g)].any(-1) for g in groups], axis=-1)  # (B, T, G)
        else:                                                        # (N, H, W, T, C) -> (B, crop, crop, T', C)
            x = np.stack([source[row, y:y + crop, x0:x0 + crop] for row, (y, x0) in zip(rows, offsets)])
            if mod.multitemporal:
                x = np.take_along_axis(x, times[:, None, None, :, None], axis=3)
            missing = x == MISSING_VALUE
            present[key] = ~_token_missing(missing, groups, shape.patch_size)
        fields[key] = torch.from_numpy(np.where(missing, np.float32(0), x).astype(np.float32))
    stamps = np.take_along_axis(np.stack([arrays["timestamps"][row] for row in rows]), times[:, :, None], axis=1)
    views = []
    for view in range(2):
        view_rngs = [np.random.default_rng([config.train.seed, step, int(i), view + 1]) for i in sample_ids]
        masks = mask_batch(config.masking, present, frozenset(config.decode_only), view_rngs)
        views.append({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in masks.items()})
    batch = Batch(patch_size=shape.patch_size, timestamps=torch.from_numpy(stamps.astype(np.int64)),
                  present={k: torch.from_numpy(v) for k, v in present.items()}, views=views, **fields)
    if ERA5.key in arrays:
        series = np.stack([arrays[ERA5.key][row] for row in rows])                  # (B, 12, C)
        valid = series != MISSING_VALUE
        batch.era5_series = torch.from_numpy(np.where(valid, series, 0).astype(np.float32))
        batch.era5_valid = torch.from_numpy(valid)
    return batch


def encoded_share(batch: Batch) -> float:
    """Share of present tokens given to the online encoder, over both views (a masking diagnostic)."""
    present = sum(int(p.sum()) for p in batch.present.values()) * len(batch.views)
    encoded = sum(int((m == MaskValue.ONLINE_ENCODER).sum()) for v in batch.views for m in v.values())
    return encoded / max(present, 1)
