"""Pretraining experiments as configuration: a shared base plus named overrides (seed 003's "subclass,
don't modify", applied to config).

params.yaml's ``pretrain`` section holds ``base`` (every knob of one LatentMIM run) and ``experiments``:
each entry names the experiment it ``extends`` (default: the base), says what it tests (``about``) and
overrides only the variable under test. New behaviour comes as a new component selected by a
discriminated ``kind`` (masking strategy, patch loss, ERA5 objective), never as a flag inside a base
class. ``resolve`` returns the frozen ``ExperimentConfig`` one run is built from; ``resolved_document``
is what `terrapipe experiments show` prints (band groups written out as band names) and what the
training stage records in its checkpoint.

Merging: mappings merge key by key; lists and scalars are replaced; a mapping whose ``kind`` changes
is replaced whole, so no option of the old component leaks into the new one.

Only pydantic, the standard library and the registry are imported: params validation runs this.
"""
from __future__ import annotations

import copy
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from terrapipe.modalities import ERA5, MAPS, SENSORS
from terrapipe.models.tokenization import BandGroups, band_groups
from terrapipe.train.losses_config import InfoNCEConfig, PatchLossConfig
from terrapipe.train.masking import MaskingConfig

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
RESERVED = ("about", "extends")  # entry keys that describe an experiment rather than override the base


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class TransformerSize(_Section):
    dim: int = Field(ge=8)
    depth: int = Field(ge=1)
    heads: int = Field(ge=1)

    @model_validator(mode="after")
    def _heads_divide_dim(self):
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not divisible by heads {self.heads}")
        return self


# OlmoEarth's MODEL_SIZE_ARGS (encoder, decoder), plus CPU sizes below nano; mlp_ratio 4 for all.
MODEL_SIZES: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "pico": ((64, 4, 2), (64, 2, 2)),           # tests and smoke runs (4 blocks: seed 001's merge after 3 fits)
    "cpu": ((128, 4, 4), (128, 2, 4)),          # the laptop default: nano's width, half the decoder
    "nano": ((128, 4, 8), (128, 4, 8)),
    "tiny": ((192, 12, 3), (192, 12, 3)),
    "tiny_shallow_decoder": ((192, 12, 3), (192, 4, 3)),
    "small_shallow_decoder": ((384, 12, 6), (384, 4, 6)),
    "base": ((768, 12, 12), (768, 12, 12)),
    "base_shallow_decoder": ((768, 12, 12), (768, 4, 12)),
    "large": ((1024, 24, 16), (1024, 24, 16)),
}
ModelSizeName = Literal[tuple(MODEL_SIZES)]


class BandDropoutConfig(_Section):
    """Per (sample, band) drop probability on the online encoder's input (seed 001; never on the target)."""
    rate: Probability = 0.0        # fixed rate, or the maximum when ``random``
    random: bool = False           # rate ~ U(0, rate), drawn once per forward and band group
    modalities: list[str] | None = None  # None: every encodable modality with > 1 band in a group


class MergeConfig(_Section):
    """Merge a modality's band-group tokens into one before the transformer (``after_layer`` 0) or after
    its first k blocks, and unmerge them at the decoder input (seed 001 exps 9, 10, 12; BandsetMerge)."""
    enabled: bool = False
    after_layer: int = Field(0, ge=0)


class TargetConfig(_Section):
    """The target encoder: exit depth 0 = the per-group patch embeddings; EMA decay start -> end."""
    exit_depth: int = Field(0, ge=0)
    ema: list[float] = [1.0, 1.0]            # (1, 1): frozen random projection targets, as the official runs

    @field_validator("ema")
    @classmethod
    def _decay_in_unit(cls, value):
        if len(value) != 2 or not all(0.0 <= d <= 1.0 for d in value):
            raise ValueError(f"ema must be [start, end] decays in [0, 1], got {value}")
        return value


class ModelConfig(_Section):
    size: ModelSizeName = "cpu"
    mlp_ratio: float = Field(4.0, gt=0)
    base_patch_size: int = Field(8, ge=1)     # FlexiPatchEmbed's stored kernel; others are PI-resized from it
    band_dropout: BandDropoutConfig = BandDropoutConfig()
    merge: MergeConfig = MergeConfig()
    target: TargetConfig = TargetConfig()

    @property
    def encoder(self) -> TransformerSize:
        dim, depth, heads = MODEL_SIZES[self.size][0]
        return TransformerSize(dim=dim, depth=depth, heads=heads)

    @property
    def decoder(self) -> TransformerSize:
        dim, depth, heads = MODEL_SIZES[self.size][1]
        return TransformerSize(dim=dim, depth=depth, heads=heads)


class Era5Unused(_Section):
    kind: Literal["none"] = "none"


class Era5DecodeTarget(_Section):
    """ERA5 as a decode-only token modality (T tokens, Linear(C -> D) embedding): seed 000 exp 15 and exp 1."""
    kind: Literal["decode_target"] = "decode_target"


class Era5ClipAlignment(_Section):
    """A separate ERA5 encoder, aligned to the pooled representation by InfoNCE (seed 000 exps 2, 4)."""
    kind: Literal["clip_alignment"] = "clip_alignment"
    encoder: Literal["mean", "conv1d"] = "mean"
    hidden_dim: int = Field(256, ge=1)
    kernel_size: int = Field(3, ge=1)
    tau: float = Field(0.1, gt=0)
    weight: float = Field(0.1, ge=0)


class Era5Regression(_Section):
    """A Linear head on the pooled representation: the time-mean (D -> C) or the full series (D -> T*C),
    MSE on normalized ERA5 with missing timesteps masked out (seed 000 exps 3, 5)."""
    kind: Literal["regression"] = "regression"
    target: Literal["mean", "series"] = "mean"
    weight: float = Field(1.0, ge=0)


Era5Objective = Annotated[Era5Unused | Era5DecodeTarget | Era5ClipAlignment | Era5Regression,
                          Field(discriminator="kind")]


class ModalityMix(_Section):
    """What the model sees: encodable image series and decode-only maps (ERA5 goes through ``era5``)."""
    encode: list[Literal[SENSORS]] = list(SENSORS)
    decode_only: list[Literal[MAPS]] = list(MAPS)

    @model_validator(mode="after")
    def _some_encodable(self):
        if not self.encode:
            raise ValueError("encode is empty: name at least one of " + ", ".join(SENSORS))
        return self


class LossesConfig(_Section):
    patch: PatchLossConfig = Field(default_factory=lambda: {"kind": "patch_discrimination"})
    info_nce: InfoNCEConfig = InfoNCEConfig()


class SamplingConfig(_Section):
    """Crops and timestep subsets per sample under a token budget (OlmoEarth's sampled_hw_p, token_budget).

    Per step one patch size and one crop size (tokens per side) are drawn; T is then the largest number
    of timesteps that keeps every sample within ``token_budget``; each sample gets its own crop position
    and its own sorted subset of T timesteps. Pairs whose crop (p * hw pixels) exceeds the store's chip
    are never drawn.
    """
    patch_sizes: list[int] = [4, 8]
    hw_tokens: list[int] = [2, 3, 4]
    token_budget: int = Field(256, ge=8)

    @model_validator(mode="after")
    def _crops_valid(self):
        if not self.patch_sizes or not self.hw_tokens:
            raise ValueError("patch_sizes and hw_tokens need at least one value each")
        if min(self.patch_sizes) < 1 or min(self.hw_tokens) < 1:
            raise ValueError("patch sizes and hw_tokens must be >= 1")
        return self


class OptimConfig(_Section):
    lr: float = Field(2e-4, gt=0)              # OlmoEarth nano/tiny: 2e-4
    weight_decay: float = Field(0.02, ge=0)
    betas: list[float] = [0.9, 0.999]

    @field_validator("betas")
    @classmethod
    def _two_betas(cls, value):
        if len(value) != 2 or not all(0.0 <= b < 1.0 for b in value):
            raise ValueError(f"betas must be two values in [0, 1), got {value}")
        return value
    warmup_steps: int = Field(20, ge=0)
    final_lr_ratio: float = Field(0.1, ge=0, le=1)  # cosine decays to lr * this at the last step
    grad_clip: float = Field(1.0, gt=0)


class TrainConfig(_Section):
    steps: int = Field(100, ge=1)
    global_batch: int = Field(32, ge=2)        # samples per optimizer step, over all ranks
    microbatch: int = Field(16, ge=2)          # samples per forward on one rank; InfoNCE negatives come from it
    checkpoint_every: int = Field(50, ge=1)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    bf16: bool = True                          # autocast the model on a GPU (losses stay fp32); never on CPU
    cpu_threads: int | None = Field(2, ge=1)   # torch threads on CPU, fixed: ATen and MKL split sums by thread
                                               # count, so the bytes would follow the core count (None: one per core)

    @model_validator(mode="after")
    def _microbatches_divide(self):
        if self.global_batch % self.microbatch:
            raise ValueError(f"global_batch {self.global_batch} is not a multiple of microbatch {self.microbatch}")
        return self


class TrackingConfig(_Section):
    project: str = "2026_02_08_masked_neg"     # W&B project: YYYY_MM_DD_<family> (seed 003)
    wandb: Literal["disabled", "offline", "online"] = "offline"

    @field_validator("project")
    @classmethod
    def _dated(cls, value: str):
        if not re.fullmatch(r"\d{4}_\d{2}_\d{2}_[a-z0-9_.]+", value):
            raise ValueError(f"project {value!r} must be named YYYY_MM_DD_<family> (seed 003), e.g. 2026_02_08_masked_neg")
        return value


class DownstreamCallbackConfig(_Section):
    """kNN on a downstream task's valid partition every ``every`` steps and at the end (train/callbacks.py);
    0 turns it off."""
    every: int = Field(0, ge=0)
    task: Literal["eurosat", "so2sat"] = "eurosat"
    k: int = Field(20, ge=1)
    temperature: float = Field(0.07, gt=0)


class ExperimentConfig(_Section):
    """Everything one pretraining run is built from; two runs differ only where their configs differ."""
    mix: ModalityMix = ModalityMix()
    tokenization: dict[str, list[list[str]]] = {}   # band groups by band name; unlisted modalities: registry sets
    era5: Era5Objective = Field(default_factory=Era5Unused)
    model: ModelConfig = ModelConfig()
    masking: MaskingConfig = Field(default_factory=lambda: {"kind": "random"})
    losses: LossesConfig = LossesConfig()
    sampling: SamplingConfig = SamplingConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    tracking: TrackingConfig = TrackingConfig()
    downstream: DownstreamCallbackConfig = DownstreamCallbackConfig()

    @model_validator(mode="after")
    def _consistent(self):
        tokenized = self.token_modalities
        for key, groups in self.tokenization.items():
            band_groups(key, groups)  # unknown modality or band: ValueError naming it and the accepted ones
            if key not in tokenized:
                raise ValueError(f"tokenization.{key}: {key} is not in this experiment's modalities "
                                 f"({', '.join(tokenized)}); remove it or add it to mix")
        dropout = self.model.band_dropout.modalities
        if dropout is not None and set(dropout) - set(self.mix.encode):
            raise ValueError(f"model.band_dropout.modalities {sorted(set(dropout) - set(self.mix.encode))} are "
                             f"not encodable here; choose from {self.mix.encode}")
        merge = self.model.merge
        if merge.enabled:
            if not any(len(self.groups(k)) > 1 for k in self.mix.encode):
                raise ValueError("model.merge.enabled needs an encodable modality with more than one band group")
            if merge.after_layer >= self.model.encoder.depth:
                raise ValueError(f"model.merge.after_layer {merge.after_layer} must be below the encoder depth "
                                 f"{self.model.encoder.depth} (0 merges before the transformer)")
        if self.train.microbatch > self.train.global_batch:
            raise ValueError("train.microbatch exceeds train.global_batch")
        return self

    @property
    def decode_only(self) -> tuple[str, ...]:
        """Modalities never given to the online encoder: the maps, and ERA5 when it is a decode target."""
        era5 = (ERA5.key,) if isinstance(self.era5, Era5DecodeTarget) else ()
        return (*self.mix.decode_only, *era5)

    @property
    def token_modalities(self) -> tuple[str, ...]:
        """Every modality that becomes tokens, encodable first (the order of masks, tokens and losses)."""
        return (*self.mix.encode, *self.decode_only)

    def groups(self, key: str) -> BandGroups:
        return band_groups(key, self.tokenization.get(key))


class PretrainParams(_Section):
    """params.yaml ``pretrain``: the base run, the named experiments, and which ones ``dvc repro`` trains."""
    run: list[str] = []
    base: dict = {}
    experiments: dict[str, dict] = {}

    @model_validator(mode="after")
    def _every_experiment_resolves(self):
        problems = []
        try:
            ExperimentConfig.model_validate(self.base)
        except ValidationError as exc:
            problems += [f"pretrain.base.{_loc(e)}: {e['msg']}" for e in exc.errors()]
        for key in self.experiments:
            if not re.fullmatch(r"[A-Za-z0-9_.\-]+", key):
                problems.append(f"pretrain.experiments.{key}: names may hold letters, digits, _ . - only")
                continue
            try:
                resolve(self, key)
            except (ValidationError, ValueError) as exc:
                errors = exc.errors() if isinstance(exc, ValidationError) else [{"loc": (), "msg": str(exc)}]
                problems += [f"pretrain.experiments.{key}: {_loc(e) + ': ' if e['loc'] else ''}{e['msg']}"
                             for e in errors]
        unknown = [k for k in self.run if k not in self.experiments]
        if unknown:
            problems.append(f"pretrain.run: {unknown} are not experiments; accepted: {', '.join(self.experiments)}")
        if problems:
            raise ValueError("\n  ".join(problems))
        return self


def pretrain_params(params) -> PretrainParams:
    """The validated ``pretrain`` section of loaded params (terrapipe.config.Params); ConfigError on problems."""
    from terrapipe.errors import ConfigError

    try:
        return PretrainParams.model_validate(params.pretrain)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            message = str(error["ctx"]["error"]) if error["type"] == "value_error" else error["msg"]
            lines.append(f"pretrain.{_loc(error)}: {message}" if error["loc"] else message)
        raise ConfigError("params.yaml: invalid pretraining experiments:\n  " + "\n  ".join(lines)) from None


def load_pretrain(path="params.yaml") -> PretrainParams:
    from terrapipe.config import load_params

    return pretrain_params(load_params(path))


def _loc(error: dict) -> str:
    return ".".join(str(p) for p in error["loc"])


def merge(base: dict, override: dict) -> dict:
    """``override`` on ``base``: mappings merge, everything else replaces; a changed ``kind`` replaces whole."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        old = out.get(key)
        same_kind = not (isinstance(old, dict) and isinstance(value, dict) and "kind" in value
                         and old.get("kind") != value["kind"])
        if isinstance(old, dict) and isinstance(value, dict) and same_kind:
            out[key] = merge(old, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def lineage(params: PretrainParams, key: str) -> list[str]:
    """``key`` and the experiments it extends, nearest first; refuses unknown names and cycles."""
    chain = []
    while key is not None:
        if key not in params.experiments:
            raise ValueError(f"unknown experiment {key!r}; accepted: {', '.join(params.experiments)}")
        if key in chain:
            raise ValueError(f"experiments extend each other in a cycle: {' -> '.join(chain + [key])}")
        chain.append(key)
        key = params.experiments[key].get("extends")
    return chain


def raw_config(params: PretrainParams, key: str) -> dict:
    """The merged mapping of ``key``: the base, then each ancestor's overrides, then its own."""
    raw = params.base
    for name in reversed(lineage(params, key)):
        raw = merge(raw, {k: v for k, v in params.experiments[name].items() if k not in RESERVED})
    return raw


def resolve(params: PretrainParams, key: str) -> ExperimentConfig:
    """The validated config of experiment ``key``."""
    return ExperimentConfig.model_validate(raw_config(params, key))


def resolved_document(params: PretrainParams, key: str) -> dict:
    """What `experiments show` prints: every field resolved, band groups as lists of band names."""
    config = resolve(params, key)
    document = config.model_dump(mode="json")
    document["tokenization"] = {m: [list(g) for g in config.groups(m).names] for m in config.token_modalities}
    document["model"]["encoder"] = config.model.encoder.model_dump()
    document["model"]["decoder"] = config.model.decoder.model_dump()
    entry = params.experiments[key]
    return {"experiment": key, "about": entry.get("about", ""), "extends": entry.get("extends"),
            "config": document}


def flatten(document, prefix: str = "") -> dict[str, object]:
    """Dotted keys -> leaf values (lists are leaves)."""
    if not isinstance(document, dict):
        return {prefix: document}
    out = {}
    for key, value in document.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def diff(params: PretrainParams, a: str, b: str) -> dict[str, tuple]:
    """The resolved config keys whose values differ between experiments ``a`` and ``b``: key -> (a, b)."""
    fa, fb = (flatten(resolved_document(params, k)["config"]) for k in (a, b))
    absent = object()
    return {k: (fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k, absent) != fb.get(k, absent)}
