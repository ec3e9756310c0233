"""Masking strategies: which tokens of a sample the online encoder sees and which the predictor decodes.

OlmoEarth (Herzog et al., 2025; allenai/olmoearth_pretrain train/masking.py), re-implemented from the
description in reference/olmoearth-behaviour.md section 2. Masks live at token resolution: per modality
``present`` (*grid, G) marks tokens with data (grid = (h, w, T) for spatial modalities, maps T = 1,
(T,) for ERA5; G band groups); the result holds MaskValue codes of the same shape, MISSING exactly where
``present`` is False. A unit is a (modality, band group) pair, in modality order then group order.
Decode-only modalities never get ONLINE_ENCODER tokens under any strategy.
"""
from __future__ import annotations

import math
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from terrapipe.train.roles import MaskValue

ENC, TGT, DEC, MISS = (np.int8(v) for v in (MaskValue.ONLINE_ENCODER, MaskValue.TARGET_ENCODER_ONLY,
                                           MaskValue.DECODER, MaskValue.MISSING))


class _Strategy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    encode_ratio: float = Field(0.5, ge=0.0, le=1.0)
    decode_ratio: float = Field(0.5, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _ratios_fit(self):
        if self.encode_ratio + self.decode_ratio > 1.0 + 1e-9:
            raise ValueError(f"encode_ratio {self.encode_ratio} + decode_ratio {self.decode_ratio} exceed 1: "
                             "a token cannot be both encoded and decoded")
        return self


class RandomMasking(_Strategy):
    """Every present token independently of its unit: int(N enc) encoded, int(N dec) decoded."""
    kind: Literal["random"] = "random"


class RandomWithDecodeMasking(_Strategy):
    """Units are split into encode-only and decode-only units; decode-only modalities are fully decoded."""
    kind: Literal["random_with_decode"] = "random_with_decode"


class ModalityCrossRandomMasking(_Strategy):
    """Random masks, then per sample a random set of encoded units and of decoded units (OlmoEarth v1)."""
    kind: Literal["modality_cross_random"] = "modality_cross_random"
    allow_encoding_decoding_same_bandset: bool = False
    min_encoded_bandsets: int | None = Field(2, gt=1)
    max_encoded_bandsets: int | None = Field(None, ge=1)
    min_decoded_bandsets: int | None = Field(None, ge=1)
    max_decoded_bandsets: int | None = Field(None, ge=1)


MaskingConfig = Annotated[RandomMasking | RandomWithDecodeMasking | ModalityCrossRandomMasking,
                          Field(discriminator="kind")]


def _fill(flat_present: np.ndarray, enc: float, dec: float, rng: np.random.Generator) -> np.ndarray:
    """Random fill over present tokens: int(N enc) ENCODER, int(N dec) DECODER, rest TARGET_ONLY.

    One present token alone is encoded (OlmoEarth's _random_fill_unmasked). Returns int8 like the input.
    """
    out = np.full(flat_present.shape, MISS, np.int8)
    idx = np.flatnonzero(flat_present)
    n = len(idx)
    if n == 0:
        return out
    if n == 1:
        out[idx] = ENC if enc > 0 else DEC
        return out
    n_enc, n_dec = int(n * enc), int(n * dec)
    roles = np.full(n, TGT, np.int8)
    roles[:n_enc] = ENC
    roles[n_enc:n_enc + n_dec] = DEC
    out[idx] = roles[rng.permutation(n)]
    return out


def _units(present: dict[str, np.ndarray]) -> list[tuple[str, int]]:
    return [(key, g) for key, p in present.items() for g in range(p.shape[-1])]


def _random(present, decode_only, enc, dec, rng) -> dict[str, np.ndarray]:
    """``random``: one permutation over all present tokens of the sample; decode-only modalities' would-be
    encoder tokens become TARGET_ONLY (they are never inputs)."""
    keys = list(present)
    flat = np.concatenate([present[k].ravel() for k in keys])
    roles = _fill(flat, enc, dec, rng)
    out, start = {}, 0
    for k in keys:
        part = roles[start:start + present[k].size].reshape(present[k].shape)
        start += present[k].size
        if k in decode_only:
            part = np.where(part == ENC, TGT, part)
        out[k] = part
    return out


def _safety_net(masks, present, decode_only, enc, dec, rng):
    """A sample with no ENCODER or no DECODER token is re-filled unit by unit (not decode-only)."""
    roles = np.concatenate([m.ravel() for m in masks.values()])
    if (roles == ENC).any() and (roles == DEC).any():
        return masks
    for key in masks:
        if key not in decode_only and present[key].any():
            masks[key] = _fill(present[key].ravel(), enc, dec, rng).reshape(present[key].shape)
    roles = np.concatenate([m.ravel() for m in masks.values()])
    if not (roles == DEC).any():  # one token per encodable modality: decode a decode-only one, else re-fill all
        for key in masks:
            if key in decode_only and present[key].any():
                masks[key] = np.where(present[key], DEC, MISS).astype(np.int8)
                break
        else:
            masks = _random(present, decode_only, enc, dec, rng)
    return masks


def _cross_random(strategy: ModalityCrossRandomMasking, present, decode_only, rng):
    enc, dec = strategy.encode_ratio, strategy.decode_ratio
    masks = _random(present, decode_only, enc, dec, rng)
    units = [(k, g) for k, g in _units(present)
             if present[k].any() and ((masks[k][..., g] == ENC).any() or k in decode_only)]
    encode: set = set()
    decode: set = set()
    if len(units) == 1:
        encode = {units[0]}
    elif len(units) == 2:
        encode, decode = {units[0]}, {units[1]}
    elif len(units) >= 3:
        encodable = [u for u in units if u[0] not in decode_only]
        same = strategy.allow_encoding_decoding_same_bandset
        upper = len(encodable) - (0 if same else 1)
        high = min(strategy.max_encoded_bandsets or upper, upper)
        low = min(strategy.min_encoded_bandsets or len(encodable), len(encodable), high)
        k = int(rng.integers(low, high + 1)) if high >= 1 else 0
        encode = {encodable[i] for i in rng.choice(len(encodable), size=k, replace=False)} if k else set()
        if same:
            lo_d = strategy.min_decoded_bandsets or 1
            hi_d = min(strategy.max_decoded_bandsets or len(units), len(units))
            m = int(rng.integers(min(lo_d, hi_d), hi_d + 1))
            decode = {units[i] for i in rng.choice(len(units), size=m, replace=False)}
        else:
            decode = {u for u in units if u not in encode}
    for key, g in _units(present):
        unit = masks[key][..., g]
        if (key, g) not in encode:
            unit[unit == ENC] = TGT
        if (key, g) not in decode:
            unit[unit == DEC] = TGT
    return _safety_net(masks, present, decode_only, enc, dec, rng)


def _random_with_decode(strategy: RandomWithDecodeMasking, present, decode_only, rng):
    enc, dec = strategy.encode_ratio, strategy.decode_ratio
    masks = {k: np.where(p, DEC, MISS).astype(np.int8) for k, p in present.items()}
    units = [(k, g) for k, g in _units(present) if k not in decode_only and present[k][..., g].any()]
    if len(units) == 1:
        k, g = units[0]
        masks[k][..., g] = _fill(present[k][..., g].ravel(), enc, dec, rng).reshape(present[k][..., g].shape)
        return masks
    order = rng.permutation(len(units))
    n_encode = math.ceil(len(units) * enc)
    for rank, i in enumerate(order):
        k, g = units[i]
        ratios = (enc, 0.0) if rank < n_encode else (0.0, dec)
        masks[k][..., g] = _fill(present[k][..., g].ravel(), *ratios, rng).reshape(present[k][..., g].shape)
    return masks


def mask_sample(strategy, present: dict[str, np.ndarray], decode_only: frozenset[str],
                rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Masks of ONE sample: ``present[key]`` (*grid, G) bool -> int8 MaskValue arrays of the same shapes."""
    if isinstance(strategy, ModalityCrossRandomMasking):
        return _cross_random(strategy, present, decode_only, rng)
    if isinstance(strategy, RandomWithDecodeMasking):
        return _random_with_decode(strategy, present, decode_only, rng)
    masks = _random(present, decode_only, strategy.encode_ratio, strategy.decode_ratio, rng)
    return _safety_net(masks, present, decode_only, strategy.encode_ratio, strategy.decode_ratio, rng)


def mask_batch(strategy, present: dict[str, np.ndarray], decode_only: frozenset[str],
               rngs: list[np.random.Generator]) -> dict[str, np.ndarray]:
    """Masks of B samples (``present[key]`` (B, *grid, G)); sample i draws only from ``rngs[i]``."""
    per_sample = [mask_sample(strategy, {k: p[i] for k, p in present.items()}, decode_only, rng)
                  for i, rng in enumerate(rngs)]
    return {k: np.stack([m[k] for m in per_sample]) for k in present}
