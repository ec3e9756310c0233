"""Masking and loss properties the issue names (OlmoEarth's acceptance checks, reference section 9)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from terrapipe.train.losses import (
    PatchDiscrimination,
    PatchDiscriminationMaskedNegatives,
    era5_mean_regression,
    era5_series_regression,
    info_nce,
    patch_loss,
)
from terrapipe.train.masking import (
    ModalityCrossRandomMasking,
    RandomMasking,
    RandomWithDecodeMasking,
    mask_batch,
    mask_sample,
)
from terrapipe.train.roles import MaskValue

ENC, DEC, MISS = MaskValue.ONLINE_ENCODER, MaskValue.DECODER, MaskValue.MISSING
STRATEGIES = [RandomMasking(), RandomWithDecodeMasking(),
              ModalityCrossRandomMasking(allow_encoding_decoding_same_bandset=True),
              ModalityCrossRandomMasking()]


def random_present(rng, groups: dict[str, int], hw: int, T: int, missing: float = 0.3):
    present = {}
    for key, G in groups.items():
        t = 1 if key in ("worldcover", "srtm") else T
        p = rng.random((hw, hw, t, G)) >= missing
        present[key] = p
    return present


@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda s: f"{s.kind}")
def test_every_sample_encodes_and_decodes_maps_never_encoded_missing_stays_missing(strategy):
    rng = np.random.default_rng(0)
    decode_only = frozenset({"worldcover", "srtm"})
    for i in range(150):
        hw, T = int(rng.integers(1, 7)), int(rng.integers(1, 4))
        groups = {"s2": 3, "s1": 1, "landsat": 2, "worldcover": 1, "srtm": 1} if i % 2 else {"s1": 1, "worldcover": 1}
        present = random_present(rng, groups, hw, T)
        present["s1"][..., 0].flat[0] = True                           # at least one encodable token
        if sum(int(p.sum()) for p in present.values()) < 2:
            continue                                                   # one token cannot be both encoded and decoded
        masks = mask_sample(strategy, present, decode_only, np.random.default_rng(i))
        roles = np.concatenate([m.ravel() for m in masks.values()])
        assert (roles == ENC).any() and (roles == DEC).any(), (i, strategy.kind)
        for key in decode_only & set(masks):
            assert not (masks[key] == ENC).any()
        for key in masks:
            assert np.array_equal(masks[key] == MISS, ~present[key]), key


def _encoded_unit_counts(strategy, groups, draws=400):
    counts = set()
    for i in range(draws):
        present = {k: np.ones((2, 2, 2 if k not in ("worldcover", "srtm") else 1, g), bool) for k, g in groups.items()}
        masks = mask_sample(strategy, present, frozenset({"worldcover", "srtm"}), np.random.default_rng(i))
        counts.add(sum(int((m[..., g] == ENC).any()) for m in masks.values() for g in range(m.shape[-1])))
    return counts


def test_modality_cross_random_encoded_unit_counts_are_exactly_those_allowed():
    no_same = ModalityCrossRandomMasking(allow_encoding_decoding_same_bandset=False, min_encoded_bandsets=2)
    # reference section 9: 5 present units (S2 x 3, worldcover, one more encodable) -> {2, 3, 4}; with S1 {2..5}
    assert _encoded_unit_counts(no_same, {"s2": 3, "landsat": 1, "worldcover": 1}) == {2, 3, 4}
    assert _encoded_unit_counts(no_same, {"s2": 3, "landsat": 1, "s1": 1, "worldcover": 1}) == {2, 3, 4, 5}
    # seed 001 exp 14: single bandsets -> 3 encodable units, same-unit decoding allowed: 2 or 3 encoded
    same = ModalityCrossRandomMasking(allow_encoding_decoding_same_bandset=True, min_encoded_bandsets=2)
    assert _encoded_unit_counts(same, {"s2": 1, "s1": 1, "landsat": 1, "worldcover": 1, "srtm": 1}) == {2, 3}


def test_random_with_decode_units_are_encode_only_or_decode_only():
    strategy = RandomWithDecodeMasking(encode_ratio=0.25, decode_ratio=0.5)
    for i in range(100):
        present = {"s2": np.ones((4, 4, 2, 3), bool), "s1": np.ones((4, 4, 2, 1), bool),
                   "worldcover": np.ones((4, 4, 1, 1), bool)}
        masks = mask_sample(strategy, present, frozenset({"worldcover"}), np.random.default_rng(i))
        assert (masks["worldcover"] == DEC).all()
        encoded_units = 0
        for key in ("s2", "s1"):
            for g in range(masks[key].shape[-1]):
                unit, n = masks[key][..., g], masks[key][..., g].size
                if (unit == ENC).any():
                    assert (unit == ENC).sum() == int(n * 0.25) and not (unit == DEC).any()
                    encoded_units += 1
                else:
                    assert (unit == DEC).sum() == int(n * 0.5)
        assert encoded_units >= 1


def test_masks_depend_only_on_the_sample_rng():
    present = {"s2": np.random.default_rng(1).random((3, 2, 2, 2, 3)) > 0.2, "worldcover": np.ones((3, 2, 2, 1, 1), bool)}
    strategy = ModalityCrossRandomMasking(allow_encoding_decoding_same_bandset=True)
    a = mask_batch(strategy, present, frozenset({"worldcover"}), [np.random.default_rng(s) for s in (5, 6, 7)])
    b = mask_batch(strategy, {k: v[1:] for k, v in present.items()}, frozenset({"worldcover"}),
                   [np.random.default_rng(s) for s in (6, 7)])
    assert all(np.array_equal(a[k][1:], b[k]) for k in a)


def test_masking_config_errors():
    from pydantic import ValidationError
    with pytest.raises(ValidationError):
        RandomMasking(encode_ratio=0.7, decode_ratio=0.6)
    with pytest.raises(ValidationError):
        ModalityCrossRandomMasking(min_encoded_bandsets=1)


def _decoder_masks(B, N, counts):
    masks = torch.full((B, N), int(MaskValue.TARGET_ENCODER_ONLY))
    for b, c in enumerate(counts):
        masks[b, :c] = int(DEC)
    return masks


def test_patch_discrimination_is_a_per_sample_mean_batch_3_equals_8():
    torch.manual_seed(0)
    pred, target = torch.randn(1, 6, 8), torch.randn(1, 6, 8)
    config = PatchDiscrimination()
    loss = {B: patch_loss(config, {"s2": pred.repeat(B, 1, 1)}, {"s2": target.repeat(B, 1, 1)},
                          {"s2": _decoder_masks(B, 6, [4] * B)}) for B in (3, 8)}
    torch.testing.assert_close(loss[3], loss[8])
    ones = patch_loss(config, {"s2": torch.ones(2, 16, 4)}, {"s2": torch.ones(2, 16, 4)},
                      {"s2": _decoder_masks(2, 16, [16, 16])})
    assert float(ones) == pytest.approx(2 * 0.1 * np.log(16), rel=1e-5)   # > 0.5: no token can be told apart


def test_masked_negatives_lower_the_loss_when_targets_repeat():
    torch.manual_seed(0)
    pred, target = torch.randn(2, 6, 8), torch.randn(2, 6, 8)
    target[:, 1] = target[:, 0]                                       # two identical target tokens
    masks = {"worldcover": _decoder_masks(2, 6, [6, 6])}
    masked = patch_loss(PatchDiscriminationMaskedNegatives(), {"worldcover": pred}, {"worldcover": target}, masks)
    plain = patch_loss(PatchDiscriminationMaskedNegatives(same_target_threshold=2.0), {"worldcover": pred},
                       {"worldcover": target}, masks)
    assert 0 < float(masked) < float(plain)


def test_only_decoded_tokens_get_gradient_and_weights_scale_linearly():
    torch.manual_seed(0)
    pred = torch.randn(3, 7, 8, requires_grad=True)
    masks = {"s1": _decoder_masks(3, 7, [3, 0, 5])}
    patch_loss(PatchDiscrimination(), {"s1": pred}, {"s1": torch.randn(3, 7, 8)}, masks).backward()
    decoded = masks["s1"] == DEC
    assert (pred.grad[~decoded] == 0).all() and (pred.grad[decoded].abs().sum(-1) > 0).all()
    a, b = torch.randn(6, 8), torch.randn(6, 8)
    torch.testing.assert_close(info_nce(a, b, weight=0.2), 2 * info_nce(a, b, weight=0.1))
    assert float(info_nce(torch.ones(4, 3), torch.zeros(4, 3) + 1e-3, weight=1.0)) > 0.5


def test_era5_regressions_ignore_missing_entries_and_run_in_fp32():
    series = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]])     # (B=1, T=3, C=2)
    valid = torch.tensor([[[True, True], [True, True], [False, False]]])
    pred = torch.tensor([[2.0, 3.0]], requires_grad=True)             # the mean of the valid months: loss 0
    assert float(era5_mean_regression(pred, series, valid).detach()) == 0.0
    changed = series.clone()
    changed[0, 2] = -5.0
    flat = torch.zeros(1, 6, requires_grad=True)
    a = era5_series_regression(flat, series, valid)
    assert float(a) == pytest.approx((1 + 4 + 9 + 16) / 4)
    assert float(era5_series_regression(flat, changed, valid)) == float(a)
    a.backward()
    assert flat.grad[0, 4:].abs().sum() == 0 and flat.grad[0, :4].abs().sum() > 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = info_nce(torch.randn(4, 8), torch.randn(4, 8))
    assert out.dtype == torch.float32
