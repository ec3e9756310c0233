"""Masking strategies for LatentMIM pretraining: which tokens the online encoder sees and which it must predict.

Re-implemented from a description of OlmoEarth (Herzog et al., 2025), allenai/olmoearth_pretrain
``train/masking.py``; no code was copied.

Layout. Masks live at TOKEN resolution. For one sample, ``present[key]`` is a bool array of shape ``(*grid, G)``:
grid is ``(h, w, T)`` for spatial modalities (static maps have T=1), ``(T,)`` for time-only ERA5 and ``()`` for a
fully static modality (latlon); G is the number of band groups (bandsets). ``False`` means no data: that token comes
out as ``MaskValue.MISSING`` under every strategy. A *unit* is a ``(key, group)`` pair, ordered by the dict's
insertion order and then by group. The result for a sample is an int8 array of the same shape per key holding
``MaskValue`` values. ``decode_only`` names modalities that never reach the online encoder (worldcover, srtm, ...):
no strategy ever gives them an ONLINE_ENCODER token. Counts are ``int(N * ratio)`` as in the reference.

Strategies:

- ``random``: per sample and modality, ``int(N*enc)`` ENCODER and ``int(N*dec)`` DECODER tokens out of the N token
  positions (missing ones included), the rest TARGET_ENCODER_ONLY, randomly placed; then missing tokens become
  MISSING. Decode-only modalities get ``int(N*dec)`` DECODER tokens and no ENCODER ones. A fully static modality
  (grid ``()``) draws each token's role with probabilities (enc, dec, rest): the reference permutes such modalities
  across the batch instead, which gives the same per-sample odds but would tie a sample to its batch.
- ``modality_cross_random``: ``random``, then whole units are chosen to be encoded and/or decoded
  (see :class:`ModalityCrossRandomMasking`).
- ``random_with_decode``: each encodable unit is either an encode unit (``int(N*enc)`` ENCODER, rest target-only)
  or a decode unit (``int(N*dec)`` DECODER, rest target-only); decode-only modalities are entirely DECODER.

Safety net (every strategy; the reference applies it to ``modality_cross_random`` only): a sample left with no
ENCODER or no DECODER token is re-filled with :func:`random_fill` in every modality that is not decode-only, and if it
still has no DECODER token, every present token of its decode-only modalities becomes DECODER. A sample whose data
is too small for both roles (e.g. a single encodable token) can still end up without one of them.

Randomness comes only from the given ``numpy.random.Generator``; :func:`mask_batch` takes one per sample so that a
sample's masks do not depend on its batch or process.
"""
from __future__ import annotations

import math
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from terrapipe.train.roles import MaskValue

ENC, TGT, DEC, MISS = (np.int8(v) for v in MaskValue)
Unit = tuple[str, int]


def _roles(n: int, n_enc: int, n_dec: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` roles, ``n_enc`` ENCODER and ``n_dec`` DECODER, the rest TARGET_ENCODER_ONLY, randomly permuted."""
    roles = np.full(n, TGT, dtype=np.int8)
    roles[:n_enc] = ENC
    roles[n_enc:n_enc + n_dec] = DEC
    return rng.permutation(roles)


def random_fill(present: np.ndarray, encode_ratio: float, decode_ratio: float, rng: np.random.Generator) -> np.ndarray:
    """Roles over the present tokens of ``present`` (the reference's ``_random_fill_unmasked``).

    With N present tokens: ``int(N*enc)`` ENCODER, ``int(N*dec)`` DECODER, the rest TARGET_ENCODER_ONLY; absent
    tokens are MISSING. A single present token is ENCODER (DECODER when ``encode_ratio`` is 0, so that a decode fill
    never encodes).
    """
    out = np.full(present.shape, MISS, dtype=np.int8)
    idx = np.flatnonzero(present)
    n = idx.size
    if n == 1:
        out.flat[idx] = ENC if encode_ratio > 0 else DEC if decode_ratio > 0 else TGT
    elif n > 1:
        out.flat[idx] = _roles(n, int(n * encode_ratio), int(n * decode_ratio), rng)
    return out


def _random_modality(present: np.ndarray, enc: float, dec: float, rng: np.random.Generator) -> np.ndarray:
    """``random`` for one modality of one sample: counts over all token positions, then the missing fill."""
    n = present.size
    if present.ndim == 1:  # fully static: per-token draw (the reference permutes across the batch)
        roles = rng.choice(np.array([ENC, DEC, TGT], dtype=np.int8), size=n, p=[enc, dec, max(0.0, 1.0 - enc - dec)])
    else:
        roles = _roles(n, int(n * enc), int(n * dec), rng)
    return np.where(present, roles.reshape(present.shape), MISS).astype(np.int8)


class _Strategy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    encode_ratio: float = Field(0.5, ge=0, le=1)
    decode_ratio: float = Field(0.5, ge=0, le=1)

    @model_validator(mode="after")
    def _ratios_sum(self):
        if self.encode_ratio + self.decode_ratio > 1:
            raise ValueError(f"encode_ratio + decode_ratio must be <= 1, got "
                             f"{self.encode_ratio} + {self.decode_ratio} = {self.encode_ratio + self.decode_ratio}")
        return self

    def _random(self, present: dict[str, np.ndarray], decode_only: frozenset[str],
                rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {k: _random_modality(p, 0.0 if k in decode_only else self.encode_ratio, self.decode_ratio, rng)
                for k, p in present.items()}

    def assign(self, present: dict[str, np.ndarray], decode_only: frozenset[str],
               rng: np.random.Generator) -> dict[str, np.ndarray]:
        raise NotImplementedError


class RandomMasking(_Strategy):
    """Token-level random split per sample and modality (decode-only modalities: DECODER / target-only)."""
    kind: Literal["random"] = "random"

    def assign(self, present, decode_only, rng):
        return self._random(present, decode_only, rng)


class RandomWithDecodeMasking(_Strategy):
    """Whole encodable units are either encode units or decode units; decode-only modalities are all DECODER.

    Units with at least one present token are shuffled; the first ``ceil(n*enc)`` are filled with (enc, 0), the
    others with (0, dec). A sample with a single such unit gets one (enc, dec) fill.
    """
    kind: Literal["random_with_decode"] = "random_with_decode"

    def assign(self, present, decode_only, rng):
        masks = {k: np.where(p, DEC, MISS).astype(np.int8) for k, p in present.items()}
        units = [(k, g) for k, p in present.items() if k not in decode_only
                 for g in range(p.shape[-1]) if p[..., g].any()]
        if len(units) == 1:
            k, g = units[0]
            masks[k][..., g] = random_fill(present[k][..., g], self.encode_ratio, self.decode_ratio, rng)
        elif units:
            order = rng.permutation(len(units))
            n_enc = math.ceil(len(units) * self.encode_ratio)
            for rank, i in enumerate(order):
                k, g = units[i]
                enc, dec = (self.encode_ratio, 0.0) if rank < n_enc else (0.0, self.decode_ratio)
                masks[k][..., g] = random_fill(present[k][..., g], enc, dec, rng)
        return masks


class ModalityCrossRandomMasking(_Strategy):
    """``random``, then per sample a set of units to encode and a set to decode.

    Present units: units with a present token that have an ENCODER token after ``random`` or are decode-only.
    One present unit: encode it. Two: encode the first encodable one, decode the other. Three or more: draw
    k encoded units among the encodable (present, not decode-only) ones, k uniform in [min, max] with
    ``max = min(max_encoded or upper, upper)`` and ``min = min(min_encoded or n_encodable, n_encodable, max)``;
    ``upper`` is ``n_encodable``, or ``min(n_encodable, n_present - 1)`` when a unit may not be both encoded and
    decoded. Decoded: with same-unit decoding allowed, m units of all present ones, m uniform in
    [min_decoded or 1, max_decoded or n_present]; otherwise every present unit that is not encoded.
    Then ENCODER tokens of non-encoded units and DECODER tokens of non-decoded units become TARGET_ENCODER_ONLY.
    """
    kind: Literal["modality_cross_random"] = "modality_cross_random"
    allow_encoding_decoding_same_bandset: bool = False
    min_encoded_bandsets: int | None = 2
    max_encoded_bandsets: int | None = Field(None, ge=1)
    min_decoded_bandsets: int | None = Field(None, ge=1)
    max_decoded_bandsets: int | None = Field(None, ge=1)

    @field_validator("min_encoded_bandsets")
    @classmethod
    def _min_encoded_above_one(cls, v: int | None) -> int | None:
        if v is not None and v <= 1:
            raise ValueError(f"min_encoded_bandsets must be > 1 (so that one unit, e.g. latlon, is never the only "
                             f"encoded one) or None, got {v}")
        return v

    def _choose(self, units: list[Unit], decode_only: frozenset[str],
                rng: np.random.Generator) -> tuple[set[Unit], set[Unit]]:
        """(encoded, decoded) sets among the present ``units``."""
        encodable = [u for u in units if u[0] not in decode_only]
        if len(units) == 1:
            return set(units), set()
        if len(units) == 2:
            first = encodable[0] if encodable else units[0]
            return {first}, set(units) - {first}
        allow_same = self.allow_encoding_decoding_same_bandset
        upper = len(encodable) if allow_same else min(len(encodable), len(units) - 1)
        hi = min(self.max_encoded_bandsets or upper, upper)
        lo = min(self.min_encoded_bandsets or len(encodable), len(encodable), hi)
        k = int(rng.integers(lo, hi + 1))
        encoded = {encodable[i] for i in rng.choice(len(encodable), size=k, replace=False)}
        if not allow_same:
            return encoded, set(units) - encoded
        hi_d = min(self.max_decoded_bandsets or len(units), len(units))
        lo_d = min(self.min_decoded_bandsets or 1, hi_d)
        m = int(rng.integers(lo_d, hi_d + 1))
        return encoded, {units[i] for i in rng.choice(len(units), size=m, replace=False)}

    def assign(self, present, decode_only, rng):
        masks = self._random(present, decode_only, rng)
        units = [(k, g) for k, m in masks.items() for g in range(m.shape[-1])
                 if present[k][..., g].any() and (k in decode_only or (m[..., g] == ENC).any())]
        encoded, decoded = self._choose(units, decode_only, rng)
        for k, m in masks.items():
            for g in range(m.shape[-1]):
                view = m[..., g]  # a view: the writes below change masks[k]
                if (k, g) not in encoded:
                    view[view == ENC] = TGT
                if (k, g) not in decoded:
                    view[view == DEC] = TGT
        return masks


MaskingConfig = Annotated[RandomMasking | RandomWithDecodeMasking | ModalityCrossRandomMasking,
                          Field(discriminator="kind")]


def _safety_net(strategy: _Strategy, masks: dict[str, np.ndarray], present: dict[str, np.ndarray],
                decode_only: frozenset[str], rng: np.random.Generator) -> None:
    """Re-fill (in place) a sample that has no ENCODER or no DECODER token; see the module docstring."""
    def has(role):
        return any((m == role).any() for m in masks.values())

    if has(ENC) and has(DEC):
        return
    for k, p in present.items():
        if k not in decode_only:
            masks[k] = random_fill(p, strategy.encode_ratio, strategy.decode_ratio, rng)
    if not has(DEC):
        for k in decode_only & masks.keys():
            masks[k] = np.where(present[k], DEC, MISS).astype(np.int8)


def mask_sample(strategy: MaskingConfig, present: dict[str, np.ndarray], decode_only: frozenset[str],
                rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Masks (int8 ``MaskValue`` arrays, shapes of ``present``) for ONE sample; ``present[key]``: ``(*grid, G)``."""
    present = {k: np.asarray(p, dtype=bool) for k, p in present.items()}
    masks = strategy.assign(present, decode_only, rng)
    _safety_net(strategy, masks, present, decode_only, rng)
    return masks


def mask_batch(strategy: MaskingConfig, present: dict[str, np.ndarray], decode_only: frozenset[str],
               rngs: list[np.random.Generator]) -> dict[str, np.ndarray]:
    """Masks for B samples (``present[key]``: ``(B, *grid, G)``); sample i uses ``rngs[i]`` only."""
    sizes = {np.shape(p)[0] for p in present.values()}
    if sizes != {len(rngs)}:
        raise ValueError(f"batch sizes {sorted(sizes)} of present do not match the {len(rngs)} generators")
    per_sample = [mask_sample(strategy, {k: p[i] for k, p in present.items()}, decode_only, rng)
                  for i, rng in enumerate(rngs)]
    return {k: np.stack([s[k] for s in per_sample]) for k in present}
