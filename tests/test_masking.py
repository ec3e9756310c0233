"""Masking strategies (terrapipe.train.masking): OlmoEarth's masking acceptance checks on the token layout."""
from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from terrapipe.train.masking import (
    MaskingConfig,
    ModalityCrossRandomMasking,
    RandomMasking,
    RandomWithDecodeMasking,
    mask_batch,
    mask_sample,
    random_fill,
)
from terrapipe.train.roles import MaskValue

ENC, TGT, DEC, MISS = (int(v) for v in MaskValue)
MAPS = frozenset({"worldcover", "srtm"})
STRATEGIES = [RandomMasking(), RandomWithDecodeMasking(), ModalityCrossRandomMasking(),
              ModalityCrossRandomMasking(allow_encoding_decoding_same_bandset=True)]


def _random_sample(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One sample: random h in 1..6, T in 1..3; S2 complete, S1 missing by sample / timestep / token, maps
    and ERA5 sometimes missing, a fully static latlon."""
    h, t = int(rng.integers(1, 7)), int(rng.integers(1, 4))
    s1 = np.ones((h, h, t, 1), bool)
    how = rng.integers(4)
    if how == 1:
        s1[:] = False
    elif how == 2:
        s1[:, :, rng.random(t) < 0.5] = False
    elif how == 3:
        s1 &= rng.random(s1.shape) < 0.5
    return {"s2": np.ones((h, h, t, 3), bool), "s1": s1,
            "worldcover": np.full((h, h, 1, 1), rng.random() < 0.8), "srtm": np.ones((h, h, 1, 1), bool),
            "era5": rng.random((t, 1)) < 0.7, "latlon": np.ones(1, bool)}


def _units_with(masks: dict[str, np.ndarray], role: int, keys=None) -> set[tuple[str, int]]:
    return {(k, g) for k, m in masks.items() if keys is None or k in keys
            for g in range(m.shape[-1]) if (m[..., g] == role).any()}


@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda s: f"{s.kind}-{getattr(s, 'allow_encoding_decoding_same_bandset', '')}")
def test_every_sample_has_encoder_and_decoder_tokens_and_missing_stays_missing(strategy):
    rng = np.random.default_rng(0)
    for i in range(150):
        present = _random_sample(rng)
        decode_only = MAPS | {"era5"} if i % 2 else MAPS
        masks = mask_sample(strategy, present, decode_only, np.random.default_rng(i))
        roles = np.concatenate([m.ravel() for m in masks.values()])
        assert (roles == ENC).any() and (roles == DEC).any(), i
        for key, m in masks.items():
            assert m.dtype == np.int8 and m.shape == present[key].shape
            assert np.array_equal(m == MISS, ~present[key]), (i, key)
            if key in decode_only:
                assert not (m == ENC).any(), (i, key)


@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda s: s.kind)
def test_decode_only_never_encoded_when_s1_hw1_is_the_only_encodable(strategy):
    for i in range(100):
        t = 1 + i % 3
        present = {"s1": np.ones((1, 1, t, 1), bool), "worldcover": np.ones((1, 1, 1, 1), bool),
                   "srtm": np.ones((1, 1, 1, 1), bool)}
        masks = mask_sample(strategy, present, MAPS, np.random.default_rng(i))
        assert not (masks["worldcover"] == ENC).any() and not (masks["srtm"] == ENC).any()
        assert (masks["s1"] == ENC).any()
        assert all((m != MISS).all() for m in masks.values())


def test_random_counts_per_modality():
    present = {"s2": np.ones((4, 4, 2, 3), bool), "worldcover": np.ones((4, 4, 1, 1), bool)}
    present["s2"][0, 0, 0, :] = False  # missing fill after the counts: N counts all positions
    strategy = RandomMasking(encode_ratio=0.25, decode_ratio=0.5)
    for i in range(20):
        masks = mask_sample(strategy, present, frozenset({"worldcover"}), np.random.default_rng(i))
        enc, dec = int((masks["s2"] == ENC).sum()), int((masks["s2"] == DEC).sum())
        assert 24 - 3 <= enc <= 24 and 48 - 3 <= dec <= 48 and (masks["s2"] == TGT).sum() + enc + dec == 96 - 3
        assert (24 - enc) + (48 - dec) + (24 - (masks["s2"] == TGT).sum()) == 3
        assert (masks["worldcover"] == ENC).sum() == 0 and (masks["worldcover"] == DEC).sum() == 8


def _encoded_counts(strategy, present, decode_only, draws=400):
    counts = set()
    for i in range(draws):
        masks = mask_sample(strategy, present, decode_only, np.random.default_rng(i))
        encoded, decoded = _units_with(masks, ENC), _units_with(masks, DEC)
        if not strategy.allow_encoding_decoding_same_bandset:
            assert encoded.isdisjoint(decoded)
            assert encoded | decoded == {(k, g) for k, p in present.items() for g in range(p.shape[-1])
                                         if p[..., g].any()}
        counts.add(len(encoded))
    return counts


def test_cross_random_encoded_set_sizes_five_and_six_present_units():
    present = {"s2": np.ones((4, 4, 2, 3), bool), "worldcover": np.ones((4, 4, 1, 1), bool),
               "latlon": np.ones((4, 4, 1, 1), bool)}  # a spatial single-group stand-in for latlon
    strategy = ModalityCrossRandomMasking()
    assert _encoded_counts(strategy, present, frozenset({"worldcover"})) == {2, 3, 4}
    present["s1"] = np.ones((4, 4, 2, 1), bool)
    assert _encoded_counts(strategy, present, frozenset({"worldcover"})) == {2, 3, 4, 5}


def test_cross_random_single_bandset_with_same_unit_decoding():
    maps = ("worldcover", "srtm", "openstreetmap_raster", "wri_canopy_height_map", "cdl", "worldcereal")
    present = {k: np.ones((4, 4, 2, 1), bool) for k in ("s2", "s1", "landsat")}
    present |= {k: np.ones((4, 4, 1, 1), bool) for k in maps}
    strategy = ModalityCrossRandomMasking(allow_encoding_decoding_same_bandset=True, min_encoded_bandsets=2)
    counts, decoded_sizes, overlap = set(), set(), False
    for i in range(400):
        masks = mask_sample(strategy, present, frozenset(maps), np.random.default_rng(i))
        encoded, decoded = _units_with(masks, ENC), _units_with(masks, DEC)
        counts.add(len(encoded))
        decoded_sizes.add(len(decoded))
        overlap |= bool(encoded & decoded)
    assert counts == {2, 3}
    assert overlap and decoded_sizes <= set(range(1, 10)) and max(decoded_sizes) >= 7


def test_cross_random_present_units_exclude_fully_missing_modality():
    strategy = ModalityCrossRandomMasking()
    # s2 x3 + worldcover entirely missing: 3 present units, so at most 2 are encoded (4 present would allow 3)
    present = {"s2": np.ones((4, 4, 2, 3), bool), "worldcover": np.zeros((4, 4, 1, 1), bool)}
    assert _encoded_counts(strategy, present, frozenset({"worldcover"}), 200) == {2}
    # two present units (s2 x2, worldcover missing): the first is encoded, the second decoded, always
    present = {"s2": np.ones((4, 4, 2, 2), bool), "worldcover": np.zeros((4, 4, 1, 1), bool)}
    for i in range(50):
        masks = mask_sample(strategy, present, frozenset({"worldcover"}), np.random.default_rng(i))
        assert _units_with(masks, ENC) == {("s2", 0)} and _units_with(masks, DEC) == {("s2", 1)}


def test_cross_random_present_units_exclude_units_without_encoder_tokens():
    # s2 with one token position and 3 groups: random encodes exactly one group, so only that s2 unit and
    # worldcover are present (2 units): that unit is encoded, worldcover decoded, the other s2 groups neither
    present = {"s2": np.ones((1, 1, 1, 3), bool), "worldcover": np.ones((4, 4, 1, 1), bool)}
    for i in range(50):
        masks = mask_sample(ModalityCrossRandomMasking(), present, frozenset({"worldcover"}),
                            np.random.default_rng(i))
        assert (masks["s2"] == ENC).sum() == 1 and (masks["s2"] == DEC).sum() == 0
        assert (masks["worldcover"] == DEC).sum() == 8


def test_random_with_decode_units_are_encode_or_decode_units():
    strategy = RandomWithDecodeMasking(encode_ratio=0.25, decode_ratio=0.5)
    rng = np.random.default_rng(1)
    for i in range(200):
        h, t = int(rng.choice([2, 4])), int(rng.integers(1, 4))
        s1 = np.ones((h, h, t, 1), bool)
        if i % 3 == 1:
            s1[:] = False                                  # S1 missing for this sample
        elif i % 3 == 2:
            s1[:, :, rng.random(t) < 0.5] = False          # S1 missing at some timesteps
        present = {"s2": np.ones((h, h, t, 3), bool), "s1": s1, "worldcover": np.ones((h, h, 1, 1), bool)}
        masks = mask_sample(strategy, present, frozenset({"worldcover"}), np.random.default_rng(i))
        assert np.array_equal(masks["worldcover"] == DEC, present["worldcover"])
        n_units, n_encode_units = 0, 0
        for key in ("s2", "s1"):
            for g in range(masks[key].shape[-1]):
                unit, n = masks[key][..., g], int(present[key][..., g].sum())
                assert np.array_equal(unit == MISS, ~present[key][..., g])
                if n == 0:
                    continue
                n_units += 1
                n_enc, n_dec = int((unit == ENC).sum()), int((unit == DEC).sum())
                is_encode = n_enc == int(n * 0.25) and n_dec == 0
                is_decode = n_dec == int(n * 0.5) and n_enc == 0
                assert is_encode != is_decode, (i, key, g, n, n_enc, n_dec)
                n_encode_units += is_encode
        assert n_encode_units == math.ceil(n_units * 0.25) >= 1


def test_random_fill_on_two_of_twelve_timesteps():
    present = np.zeros((1, 1, 12, 1), bool)
    present[0, 0, [3, 8], 0] = True
    for i in range(20):
        out = random_fill(present, 0.5, 0.5, np.random.default_rng(i))
        assert sorted(out[present].tolist()) == [ENC, DEC] and (out[~present] == MISS).all()
    one = np.zeros(12, bool)
    one[5] = True
    assert random_fill(one, 0.5, 0.5, np.random.default_rng(0))[5] == ENC
    assert random_fill(one, 0.0, 0.5, np.random.default_rng(0))[5] == DEC
    ten = np.ones(10, bool)
    out = random_fill(ten, 0.25, 0.5, np.random.default_rng(0))
    assert [(out == r).sum() for r in (ENC, TGT, DEC)] == [2, 3, 5]


@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda s: s.kind)
def test_masks_are_deterministic_and_per_sample(strategy):
    rng = np.random.default_rng(3)
    present = {"s2": np.ones((5, 3, 3, 2, 3), bool), "s1": rng.random((5, 3, 3, 2, 1)) < 0.6,
               "worldcover": np.ones((5, 3, 3, 1, 1), bool), "era5": np.ones((5, 2, 1), bool)}

    def run(seeds, rows=slice(None)):
        return mask_batch(strategy, {k: v[rows] for k, v in present.items()}, MAPS,
                          [np.random.default_rng(s) for s in seeds])

    a, b = run([10, 11, 12, 13, 14]), run([10, 11, 12, 13, 14])
    sub = run([11, 12], slice(1, 3))
    other = run([20, 21, 22, 23, 24])
    for k in present:
        assert a[k].shape == present[k].shape and a[k].dtype == np.int8
        assert np.array_equal(a[k], b[k]) and np.array_equal(a[k][1:3], sub[k])
    assert any(not np.array_equal(a[k], other[k]) for k in present)
    with pytest.raises(ValueError, match="generators"):
        run([1, 2, 3])


@pytest.mark.parametrize("config, match", [
    ({"kind": "unknown"}, "does not match any of the expected tags"),
    ({"kind": "random", "encode_ratio": 0.6, "decode_ratio": 0.5}, "encode_ratio \\+ decode_ratio must be <= 1"),
    ({"kind": "random_with_decode", "encode_ratio": 1.5, "decode_ratio": 0.0}, "less than or equal to 1"),
    ({"kind": "modality_cross_random", "min_encoded_bandsets": 1}, "min_encoded_bandsets must be > 1"),
    ({"kind": "modality_cross_random", "max_decoded_bandsets": 0}, "greater than or equal to 1"),
    ({"kind": "random", "mask_ratio": 0.5}, "Extra inputs are not permitted"),
])
def test_config_validation_errors(config, match):
    with pytest.raises(ValidationError, match=match):
        TypeAdapter(MaskingConfig).validate_python(config)


def test_config_parses_each_kind():
    adapter = TypeAdapter(MaskingConfig)
    assert isinstance(adapter.validate_python({"kind": "random"}), RandomMasking)
    assert isinstance(adapter.validate_python({"kind": "random_with_decode"}), RandomWithDecodeMasking)
    parsed = adapter.validate_python({"kind": "modality_cross_random", "allow_encoding_decoding_same_bandset": True})
    assert parsed == ModalityCrossRandomMasking(allow_encoding_decoding_same_bandset=True)
    assert parsed.min_encoded_bandsets == 2
