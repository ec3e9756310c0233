"""Frozen embeddings of a downstream task from a pretrained encoder: an unmasked pass and OlmoEarth's pooling
(reference/olmoearth-behaviour.md section 7, re-implemented from its description), cached on disk.

- Input: a ``TaskData`` in raw store units (S2 reflectance x 10000, S1 dB), NaN where missing. Each
  modality is cut to the checkpoint's band order (a band the task lacks is imputed from its band nearest in
  wavelength, as OlmoEarth does for So2Sat; missing where none has a wavelength), normalized with the
  checkpoint's pretraining statistics (the store's rule, terrapipe.data.normalize), and tokenized with
  the training rule: a token is missing when any pixel of any band of its group is.
- Pass: every present token is ONLINE_ENCODER, every missing one MISSING (never encoded), eval mode, no
  band dropout, no ERA5 (downstream tasks carry none). A modality the encoder knows but the task lacks
  enters as one all-missing token, so it changes nothing.
- Time: a single-image task (GEO-Bench's eurosat and so2sat, MADOS) is encoded at one fixed date, 1 July
  2020, whatever its files say, as OlmoEarth's GeobenchDataset and MADOS dataset do (their
  default_day_month_year): real GEO-Bench chips carry no date, and the sample tasks' real acquisition
  months would otherwise dominate the pooled embedding (1-NN on them recovers a chip's month for every
  test chip, random and pretrained encoders alike, and kNN then votes by season, not land use). A time
  series (PASTIS) keeps its dates: its series share one timestep axis (index t of every modality is step
  t, as the monthly store's), a step's month comes from the first modality, in encoder order, that has a
  date there, and 1 July stands in where no modality has one.
- Patch size: the smallest of the pretraining ``sampling.patch_sizes`` that divides the chip (OlmoEarth
  evaluates at 4, the smallest it trains with), unless one is given.
- Pooling: classification = mean over every encoded token (modalities, positions, timesteps, band groups)
  -> [N, D]; segmentation = per modality the mean over timesteps and band groups at each token position,
  then the mean over the modalities that have data there -> [N, H', W', D] (zeros where none has).

Any module with the ``TokenEncoder`` interface works in place of the LatentMIM encoder. ``cached_embeddings``
keys a result by (encoder identity, task name, task data fingerprint, split, kind, patch size, pooling
version), so re-running a probe never runs the encoder again.

Shapes: N samples, B a batch of them, C bands, H W pixels, h w tokens per side, T timesteps, G band groups
(G' after a bandset merge), D embedding width.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Mapping, Protocol

import numpy as np

from terrapipe.data.normalize import MISSING_VALUE, normalize
from terrapipe.errors import ConfigError, InputDataError
from terrapipe.sources.transfer import file_digest

if TYPE_CHECKING:
    import torch

    from terrapipe.data.tasks import TaskData
    from terrapipe.train.batch import Batch
    from terrapipe.train.experiments import ExperimentConfig

log = logging.getLogger("terrapipe")

POOLING_VERSION = 3            # bump when the pooling or the input treatment changes: old cache entries then miss
KINDS = ("classification", "segmentation")
UNDATED = np.datetime64("2020-07-01", "D")   # single images, and steps no modality dates: OlmoEarth's default
Kind = Literal["classification", "segmentation"]


class EncodedTokens(Protocol):
    """What an encoder returns: per modality the tokens (B, *grid, G', D), zeros where not encoded, and their
    roles (B, *grid, G') as MaskValue (ONLINE_ENCODER marks an encoded token)."""
    tokens: Mapping[str, torch.Tensor]
    roles: Mapping[str, torch.Tensor]


class TokenEncoder(Protocol):
    """The interface ``extract`` needs (terrapipe.models.latent_mim.Encoder has it): a torch module called
    on a ``Batch`` and its per-modality role masks (B, *grid, G)."""

    def __call__(self, batch: Batch, masks: dict[str, torch.Tensor]) -> EncodedTokens: ...

    def eval(self): ...


@dataclass(frozen=True)
class EncoderHandle:
    """An encoder ready for extraction and everything needed to feed it.

    ``config`` gives the modalities, band groups and pretraining patch sizes; ``band_order`` the channel
    order per modality; ``normalization`` the checkpoint's {"imagery": {modality: stats document}}
    (terrapipe.data.normalize.stats_to_json); ``identity`` names the weights (a checkpoint's sha256), the
    cache key's first part.
    """
    model: TokenEncoder
    config: ExperimentConfig
    band_order: Mapping[str, tuple[str, ...]]
    normalization: Mapping[str, Mapping]
    identity: str
    device: str = "cpu"


def _experiment_config(path: Path, document: dict) -> ExperimentConfig:
    """The ExperimentConfig of a checkpoint's recorded experiment (resolved_document form, or its config)."""
    from pydantic import ValidationError

    from terrapipe.train.experiments import ExperimentConfig

    config = dict(document.get("config", document))
    model = dict(config.get("model", {}))
    model.pop("encoder", None)      # resolved_document writes the derived sizes out; they are not inputs
    model.pop("decoder", None)
    try:
        return ExperimentConfig.model_validate({**config, "model": model})
    except ValidationError as exc:
        raise InputDataError(path, f"records an experiment this code cannot rebuild ({exc.errors()[0]['msg']} at "
                             f"{'.'.join(map(str, exc.errors()[0]['loc']))})",
                             "Re-train it with the current code (`terrapipe experiments run KEY`)") from None


def load_encoder(checkpoint_path: str | Path, device: str = "cpu") -> EncoderHandle:
    """The online encoder of a pretraining checkpoint (train/checkpoint.py), in eval mode, frozen.

    Args:
        checkpoint_path: a checkpoint.pt written by the pretrain stage.
        device: where the encoder runs ("cpu" or "cuda").
    Returns:
        An EncoderHandle whose identity is the checkpoint file's sha256.
    """
    import torch

    from terrapipe.models.latent_mim import Encoder

    path = Path(checkpoint_path)
    retrain = "Re-train it with the current code (`terrapipe experiments run KEY`)"
    if not path.is_file():
        raise InputDataError(path, "missing", "Train it with `terrapipe experiments run KEY` (or `dvc repro`), or point at an existing checkpoint.pt")
    try:   # tensors and plain containers only: a downloaded checkpoint cannot run code
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputDataError(path, f"is not a readable checkpoint ({type(exc).__name__}: {str(exc)[:200]})",
                             retrain) from None
    for key in ("experiment", "model", "band_order", "normalization"):
        if key not in state:
            raise InputDataError(path, f"has no {key!r} entry (it was not written by the pretrain stage)", retrain)
    if "imagery" not in state["normalization"]:
        raise InputDataError(path, "normalization has no 'imagery' statistics", retrain)
    config = _experiment_config(path, state["experiment"])
    encoder = Encoder(config, tuple(config.mix.encode))
    prefix = "encoder."
    weights = {k[len(prefix):]: v for k, v in state["model"].items() if k.startswith(prefix)}
    try:
        encoder.load_state_dict(weights)
    except RuntimeError as exc:
        raise InputDataError(path, f"encoder weights do not fit its recorded experiment ({str(exc)[:300]})",
                             retrain) from None
    encoder.requires_grad_(False)
    band_order = {k: tuple(v) for k, v in state["band_order"].items()}
    return EncoderHandle(encoder.to(device).eval(), config, band_order, state["normalization"], file_digest(path),
                         device)


def random_encoder_like(handle: EncoderHandle, seed: int) -> EncoderHandle:
    """The random-encoder baseline: ``handle``'s architecture freshly initialised from ``seed`` (the seed
    of the pretraining run gives exactly that run's initial encoder), fed the same normalization.

    Returns a handle whose identity depends on the seed and the architecture, never on trained weights.
    """
    import torch

    from terrapipe.models.latent_mim import Encoder

    config = handle.config
    with torch.random.fork_rng(devices=[]):   # leave the caller's global RNG where it was
        torch.manual_seed(seed)
        encoder = Encoder(config, tuple(config.mix.encode))
    encoder.requires_grad_(False)
    identity = hashlib.sha256(f"random-init seed={seed} {config.model_dump_json()}".encode()).hexdigest()
    return replace(handle, model=encoder.to(handle.device).eval(), identity=identity)


# -- inputs -----------------------------------------------------------------------------------------------
def default_patch_size(config: ExperimentConfig, height: int, width: int) -> int:
    """The smallest pretraining patch size dividing the chip; ConfigError when none does."""
    fitting = [p for p in sorted(config.sampling.patch_sizes) if height % p == 0 and width % p == 0]
    if not fitting:
        raise ConfigError(f"no pretraining patch size {config.sampling.patch_sizes} divides the task's {height} x "
                          f"{width} px chips; pass patch_size= a divisor of both")
    return fitting[0]


def _plan(handle: EncoderHandle, task: TaskData, patch_size: int | None) -> tuple[tuple[str, ...], int, int]:
    """The task's modalities the encoder encodes (encoder order), the shared timestep count T and the patch
    size; ConfigError / InputDataError when the task and the encoder do not fit together."""
    encode = tuple(handle.config.mix.encode)
    keys = tuple(k for k in encode if k in task.images)
    if not keys:
        raise ConfigError(f"task {task.name} has {sorted(task.images)} but the encoder encodes {list(encode)}: "
                          "evaluate it with an encoder trained on one of its modalities (pretrain mix.encode)")
    sizes = {k: tuple(task.images[k].shape[-2:]) for k in keys}
    if len(set(sizes.values())) > 1:
        raise InputDataError(f"task {task.name}", f"modalities have different chip sizes {sizes}",
                             "Resample them to one grid when reading the task")
    height, width = sizes[keys[0]]
    patch = patch_size or default_patch_size(handle.config, height, width)
    if patch < 1 or height % patch or width % patch:
        raise ConfigError(f"patch_size {patch} does not divide the task's {height} x {width} px chips")
    steps = max(task.images[k].shape[1] if task.images[k].ndim == 5 else 1 for k in keys)
    return keys, int(steps), int(patch)


def _channel_index(handle: EncoderHandle, task: TaskData, key: str) -> np.ndarray:
    """For each band of the checkpoint's order, its channel in the task's images (-1: the task lacks it)."""
    order = handle.band_order.get(key)
    if order is None:
        raise InputDataError(f"encoder {handle.identity[:12]}", f"has no band order for {key}",
                             "Re-train it with the current code (`terrapipe experiments run KEY`)")
    groups = handle.config.groups(key)
    for names, indices in zip(groups.names, groups.indices):
        if any(i >= len(order) or order[i] != n for n, i in zip(names, indices)):
            raise InputDataError(f"encoder {handle.identity[:12]}", f"{key} band order {list(order)} does not hold "
                                 f"its band group {list(names)} at the registry positions {list(indices)}",
                                 "Re-train it on a store with every band of its groups")
    task_bands = list(task.bands[key])
    return np.array([task_bands.index(b) if b in task_bands else _imputed_from(key, b, task_bands)
                     for b in order])


def _imputed_from(key: str, band: str, task_bands: list[str]) -> int:
    """The task's channel that stands in for a band it lacks: its band nearest in wavelength (B01 <- B02,
    B09 <- B8A for So2Sat, PASTIS and MADOS, which ship 10 or 11 of the 12 S2 bands), as OlmoEarth imputes
    them; -1 where the registry gives no wavelength. Without it one absent band would leave every token
    of its band group missing: an encoder with one S2 bandset could not see such a task at all."""
    from terrapipe.modalities import modality

    wavelength = {b.name: b.wavelength_nm for b in modality(key).bands}
    target = wavelength.get(band)
    candidates = [(abs(wavelength[b] - target), i) for i, b in enumerate(task_bands)
                  if target is not None and wavelength.get(b) is not None]
    return min(candidates)[1] if candidates else -1


def _stats(handle: EncoderHandle, key: str) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-band mean and std in the checkpoint's band order (NaN: no statistics, the band stays missing)
    and the std multiplier k."""
    document = handle.normalization["imagery"].get(key)
    if document is None:
        raise InputDataError(f"encoder {handle.identity[:12]}", f"has no normalization statistics for {key}",
                             "Re-train it with the current code (`terrapipe experiments run KEY`)")
    bands, order = document["bands"], handle.band_order[key]

    def column(name: str) -> np.ndarray:   # JSON null (a band without valid values) -> NaN
        values = [bands.get(b, {}).get(name) for b in order]
        return np.array([np.nan if v is None else v for v in values], np.float64)
    return column("mean"), column("std"), float(document["std_multiplier"])


def _timestamps(task: TaskData, keys: tuple[str, ...], rows: np.ndarray, steps: int) -> np.ndarray:
    """(B, T, 3) day, month, year per timestep: UNDATED for a single image, else the first modality (``keys``
    order) with a date there."""
    chosen = np.full((len(rows), steps), np.datetime64("NaT"), "datetime64[D]")
    dated = keys if steps > 1 else ()            # a single image keeps UNDATED, whatever its files say
    for key in dated:
        if key not in task.dates:
            continue
        dates = task.dates[key][rows].astype("datetime64[D]")[:, :steps]          # (B, T_k)
        span = chosen[:, :dates.shape[1]]
        span[np.isnat(span)] = dates[np.isnat(span)]
    chosen[np.isnat(chosen)] = UNDATED
    month_start = chosen.astype("datetime64[M]")
    day = (chosen - month_start.astype("datetime64[D]")).astype(np.int64) + 1
    month = month_start.astype(np.int64) % 12 + 1
    year = chosen.astype("datetime64[Y]").astype(np.int64) + 1970
    return np.stack([day, month, year], axis=-1)


def _modality_input(raw: np.ndarray, channels: np.ndarray, stats, steps: int, groups, patch: int):
    """Raw task images of one modality (B, [T,] C_task, H, W) -> normalized (B, H, W, T, C) with missing
    zeroed, and token presence (B, h, w, T, G)."""
    from terrapipe.train.batch import _token_missing

    if raw.ndim == 4:
        raw = raw[:, None]                                                         # (B, 1, C_task, H, W)
    B, T, _, H, W = raw.shape
    x = np.full((B, steps, len(channels), H, W), np.nan, np.float32)              # (B, T, C, H, W)
    have = channels >= 0
    x[:, :T, have] = raw[:, :, channels[have]]
    x = x.transpose(0, 3, 4, 1, 2)                                                 # (B, H, W, T, C)
    mean, std, k = stats
    x = normalize(x, mean, std, k)                          # NaN in -> MISSING_VALUE out
    x[..., ~np.isfinite(mean) | ~np.isfinite(std)] = MISSING_VALUE                # bands pretraining never saw
    missing = x == MISSING_VALUE
    present = ~_token_missing(missing, groups, patch)
    return np.where(missing, np.float32(0), x), present


def _batch(handle: EncoderHandle, task: TaskData, rows: np.ndarray, patch: int, steps: int, channels: dict,
           stats: dict) -> tuple[Batch, dict]:
    """One unmasked batch of ``rows`` and its role masks (present -> ONLINE_ENCODER, else MISSING)."""
    import torch

    from terrapipe.train.batch import Batch
    from terrapipe.train.roles import MaskValue

    config = handle.config
    keys = tuple(config.mix.encode)
    fields, masks = {}, {}
    for key in keys:
        groups = config.groups(key)
        if key in task.images:
            x, present = _modality_input(task.images[key][rows], channels[key], stats[key], steps,
                                         groups.indices, patch)
        else:   # one all-missing token: the encoder needs the field, and it contributes nothing
            x = np.zeros((len(rows), patch, patch, 1, len(handle.band_order.get(key, ()))), np.float32)
            present = np.zeros((len(rows), 1, 1, 1, len(groups)), bool)
        fields[key] = torch.from_numpy(np.ascontiguousarray(x))
        masks[key] = torch.from_numpy(np.where(present, np.int8(MaskValue.ONLINE_ENCODER), np.int8(MaskValue.MISSING)))
    stamps = torch.from_numpy(_timestamps(task, keys, rows, steps))
    batch = Batch(patch_size=patch, timestamps=stamps, present={k: m == MaskValue.ONLINE_ENCODER
                                                                   for k, m in masks.items()}, **fields)
    return batch.to(handle.device), {k: m.to(handle.device) for k, m in masks.items()}


def encoder_input(handle: EncoderHandle, task: TaskData, rows: np.ndarray, patch_size: int | None = None):
    """The unmasked batch ``extract`` feeds the encoder for ``rows`` of ``task``: (Batch, role masks per
    modality (B, h, w, T, G), the task's modalities the encoder encodes). For training an encoder on a task
    end to end (benchmarks/eurosat_supervised.py) with exactly the evaluation's inputs."""
    keys, steps, patch = _plan(handle, task, patch_size)
    channels = {k: _channel_index(handle, task, k) for k in keys}
    stats = {k: _stats(handle, k) for k in keys}
    batch, masks = _batch(handle, task, np.asarray(rows), patch, steps, channels, stats)
    return batch, masks, keys


# -- pooling ----------------------------------------------------------------------------------------------
def pool(encoded: EncodedTokens, kind: Kind, spatial_keys: tuple[str, ...]):
    """OlmoEarth's pooling of encoded tokens (section 7 of reference/olmoearth-behaviour.md).

    Args:
        encoded: per modality tokens (B, *grid, G', D) and roles (B, *grid, G').
        kind: "classification" or "segmentation".
        spatial_keys: the modalities on the task's token grid (segmentation pools only these).
    Returns:
        classification: (B, D) and the encoded-token count (B,); segmentation: (B, h, w, D) and the number
        of modalities with data at each position (B, h, w).
    """
    import torch

    from terrapipe.train.roles import MaskValue

    if kind == "classification":
        sums, counts = 0, 0
        for key, tokens in encoded.tokens.items():
            encoded_here = (encoded.roles[key] == MaskValue.ONLINE_ENCODER).flatten(1)         # (B, N_m)
            sums = sums + (tokens.flatten(1, -2) * encoded_here[..., None]).sum(1)             # (B, D)
            counts = counts + encoded_here.sum(1)                                              # (B,)
        return sums / counts.clamp(min=1)[:, None], counts
    means, has = [], []
    for key in spatial_keys:
        tokens = encoded.tokens[key]                                                           # (B, h, w, T, G', D)
        encoded_here = (encoded.roles[key] == MaskValue.ONLINE_ENCODER)                        # (B, h, w, T, G')
        count = encoded_here.sum((3, 4))                                                       # (B, h, w)
        total = (tokens * encoded_here[..., None]).sum((3, 4))                                 # (B, h, w, D)
        means.append(total / count.clamp(min=1)[..., None])
        has.append(count > 0)
    weight = torch.stack(has).to(means[0].dtype)                                               # (M, B, h, w)
    modalities = weight.sum(0)                                                                 # (B, h, w)
    pooled = (torch.stack(means) * weight[..., None]).sum(0) / modalities.clamp(min=1)[..., None]
    return pooled, modalities


def extract(handle: EncoderHandle, task: TaskData, kind: Kind, batch_size: int = 64,
            patch_size: int | None = None) -> np.ndarray:
    """Embeddings of every sample of ``task``: classification [N, D], segmentation [N, H/p, W/p, D] float32.

    Args:
        handle: the encoder and how to feed it (load_encoder, random_encoder_like, or any TokenEncoder).
        task: images in raw store units, NaN where missing.
        kind: the pooling, "classification" or "segmentation".
        batch_size: samples per forward pass (memory, not results: each sample's tokens attend only to its own).
        patch_size: pixels per token side; None: ``default_patch_size``.
    """
    import torch

    if kind not in KINDS:
        raise ConfigError(f"embedding kind {kind!r} is not one of {', '.join(KINDS)}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if len(task) == 0:
        raise InputDataError(f"task {task.name}", "has no samples", "Check its partition files")
    keys, steps, patch = _plan(handle, task, patch_size)
    channels = {k: _channel_index(handle, task, k) for k in keys}
    stats = {k: _stats(handle, k) for k in keys}
    handle.model.eval()
    parts, counts = [], []
    with torch.no_grad():
        for start in range(0, len(task), batch_size):
            rows = np.arange(start, min(start + batch_size, len(task)))
            batch, masks = _batch(handle, task, rows, patch, steps, channels, stats)
            pooled, count = pool(handle.model(batch, masks), kind, keys)
            parts.append(pooled.float().cpu().numpy())
            counts.append(count.cpu().numpy().reshape(len(rows), -1).any(1))
    empty = np.flatnonzero(~np.concatenate(counts))
    if len(empty):
        raise InputDataError(f"task {task.name}", f"{len(empty)} sample(s) have no complete band group in any "
                             f"token of {list(keys)} (first: {[task.sample_ids[i] for i in empty[:5]]})",
                             "Drop them from the task or fill their gaps")
    return np.concatenate(parts).astype(np.float32, copy=False)


# -- the cache --------------------------------------------------------------------------------------------
def task_fingerprint(task: TaskData) -> str:
    """sha256 of what the embeddings depend on: the images (bands, shape, bytes), the dates and the sample ids."""
    digest = hashlib.sha256()
    digest.update(json.dumps([task.name, list(task.sample_ids)]).encode())
    for key in sorted(task.images):
        image = np.ascontiguousarray(task.images[key])
        digest.update(json.dumps([key, list(task.bands[key]), list(image.shape), str(image.dtype)]).encode())
        digest.update(memoryview(image).cast("B"))
    for key in sorted(task.dates):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(task.dates[key].astype("datetime64[D]").view(np.int64)).tobytes())
    return digest.hexdigest()


def cache_key(handle: EncoderHandle, task: TaskData, kind: Kind, split: str, patch_size: int) -> dict:
    """The fields a cached embedding is valid for (written beside it as JSON). The torch thread count is one:
    GEMMs and reductions split their sums by it, so another count gives other low bits."""
    import torch

    return {"encoder": handle.identity, "task": task.name, "data": task_fingerprint(task), "split": split,
            "kind": kind, "patch_size": patch_size, "pooling_version": POOLING_VERSION,
            "torch_threads": torch.get_num_threads()}


def cached_embeddings(handle: EncoderHandle, task: TaskData, kind: Kind, split: str, cache_dir: str | Path, *,
                      batch_size: int = 64, patch_size: int | None = None) -> np.ndarray:
    """``extract`` of one partition of ``task``, computed once: later calls with the same key read
    ``cache_dir``/<task>_<split>_<kind>_<key hash>.npy (its key in the .json beside it).

    Args:
        split: one of terrapipe.data.tasks.PARTITIONS (train, valid, test).
    Returns:
        As ``extract`` for the partition's samples, in their order in ``task``.
    """
    from terrapipe.atomic import atomic_path, write_json
    from terrapipe.data.tasks import PARTITIONS

    if split not in PARTITIONS:
        raise ConfigError(f"split {split!r} is not one of {', '.join(PARTITIONS)}")
    if kind not in KINDS:
        raise ConfigError(f"embedding kind {kind!r} is not one of {', '.join(KINDS)}")
    part = task.subset(split)
    if len(part) == 0:
        raise InputDataError(f"task {task.name}", f"has no {split} samples", "Check its partition files")
    patch = _plan(handle, part, patch_size)[2]
    key = cache_key(handle, part, kind, split, patch)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    stem = Path(cache_dir) / f"{task.name}_{split}_{kind}_{digest}"
    array_path, key_path = stem.with_suffix(".npy"), stem.with_suffix(".json")
    if key_path.is_file() and array_path.is_file():
        try:
            stored = json.loads(key_path.read_text())
            if {k: stored.get(k) for k in key} == key:
                return np.load(array_path)
        except (ValueError, OSError) as exc:   # unreadable entry: computed again below, then replaced
            log.warning("embedding cache entry %s unreadable (%s): recomputing", array_path, exc)
    embeddings = extract(handle, part, kind, batch_size=batch_size, patch_size=patch)
    with atomic_path(array_path) as tmp, open(tmp, "wb") as out:   # np.save(path) would append .npy to tmp
        np.save(out, embeddings)
    write_json(key_path, {**key, "shape": list(embeddings.shape)})
    return embeddings
