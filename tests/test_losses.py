"""Pretraining losses (train/losses.py): OlmoEarth's loss acceptance checks, and the vectorized patch
discrimination against a per-sample looped reference (values and gradients, rtol 1e-4)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from pydantic import TypeAdapter, ValidationError

from terrapipe.train.losses import (
    InfoNCEConfig,
    PatchDiscrimination,
    PatchDiscriminationMaskedNegatives,
    PatchLossConfig,
    era5_mean_regression,
    era5_series_regression,
    info_nce,
    patch_loss,
    patch_loss_per_modality,
)
from terrapipe.train.roles import MaskValue

DEC, ENC, TGT, MISS = (int(MaskValue.DECODER), int(MaskValue.ONLINE_ENCODER),
                       int(MaskValue.TARGET_ENCODER_ONLY), int(MaskValue.MISSING))


# ---------------------------------------------------------------- looped reference (tests only)

def _looped_modality(pred, target, mask, tau, threshold):
    """One modality, one sample at a time, straight from the description."""
    losses = []
    for b in range(pred.shape[0]):
        sel = mask[b] == DEC
        c = int(sel.sum())
        if c == 0:
            continue
        p = F.normalize(pred[b][sel].float(), dim=-1)
        t = F.normalize(target[b][sel].float(), dim=-1)
        s = p @ t.T / tau
        if threshold is not None and c > 1:
            same = (t @ t.T > threshold) & ~torch.eye(c, dtype=torch.bool)
            s = s.masked_fill(same, float("-inf"))
            negatives_left = (~same & ~torch.eye(c, dtype=torch.bool)).sum(dim=1)
            if bool((negatives_left == 0).any()):
                continue
        losses.append(F.cross_entropy(s, torch.arange(c)) * 2 * tau)
    if not losses:
        return pred.sum() * 0.0
    return torch.stack(losses).mean()


def _looped(config, pred, target, masks):
    total = 0.0
    for m in pred:
        threshold = None
        if isinstance(config, PatchDiscriminationMaskedNegatives) and (
                config.mask_negatives_for is None or m in config.mask_negatives_for):
            threshold = config.same_target_threshold
        total = total + config.modality_weights.get(m, 1.0) * _looped_modality(
            pred[m], target[m], masks[m], config.tau, threshold)
    return total * config.weight


def _leaves(pred):
    return {m: p.detach().clone().requires_grad_(True) for m, p in pred.items()}


def _assert_matches_looped(config, pred, target, masks):
    pv, pl = _leaves(pred), _leaves(pred)
    vec = patch_loss(config, pv, target, masks)
    ref = _looped(config, pl, target, masks)
    torch.testing.assert_close(vec, ref.to(vec.dtype), rtol=1e-4, atol=1e-6)
    vec.backward()
    ref.backward()
    for m in pred:
        torch.testing.assert_close(pv[m].grad, pl[m].grad, rtol=1e-4, atol=1e-6)
    return vec


def _roles(counts, n, gen):
    """(B, n) roles with exactly counts[b] DECODER tokens per sample at random positions, others non-decoder."""
    rows = []
    for c in counts:
        row = torch.tensor([ENC, TGT, MISS])[torch.randint(0, 3, (n,), generator=gen)]
        row[torch.randperm(n, generator=gen)[:c]] = DEC
        rows.append(row)
    return torch.stack(rows).to(torch.int8)


def _data(counts, n=10, d=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    pred = torch.randn(len(counts), n, d, generator=gen)
    target = torch.randn(len(counts), n, d, generator=gen)
    return pred, target, _roles(counts, n, gen)


# ---------------------------------------------------------------- vectorized == looped

@pytest.mark.parametrize("counts", [[1, 5, 10, 3], [0, 4, 0, 7], [1, 1, 1], [2, 9, 6, 6, 1, 8]])
@pytest.mark.parametrize("masked", [False, True])
def test_vectorized_equals_looped(counts, masked):
    pred, target, mask = _data(counts)
    config = PatchDiscriminationMaskedNegatives(same_target_threshold=0.5) if masked else PatchDiscrimination()
    loss = _assert_matches_looped(config, {"s2": pred}, {"s2": target}, {"s2": mask})
    assert (loss.item() > 0) == (max(counts) > 1)  # one decoded token: nothing to discriminate, loss 0


def test_all_samples_without_decoder_tokens_give_exactly_zero_with_a_graph():
    pred, target, mask = _data([0, 0, 0])
    p = pred.requires_grad_(True)
    loss = patch_loss(PatchDiscrimination(), {"s2": p}, {"s2": target}, {"s2": mask})
    assert loss.item() == 0.0 and loss.dtype == torch.float32
    loss.backward()
    assert torch.equal(p.grad, torch.zeros_like(p))
    _assert_matches_looped(PatchDiscrimination(), {"s2": pred}, {"s2": target}, {"s2": mask})


def test_single_decoder_token_per_sample_is_zero_loss_and_matches_looped():
    pred, target, mask = _data([1, 1, 1, 1])
    for config in (PatchDiscrimination(), PatchDiscriminationMaskedNegatives()):
        loss = _assert_matches_looped(config, {"s2": pred}, {"s2": target}, {"s2": mask})
        assert abs(loss.item()) < 1e-6  # one candidate: cross-entropy log(1) = 0


def test_several_modalities_with_weights_match_looped_and_sum_of_per_modality_terms():
    pa, ta, ma = _data([3, 0, 6], n=12, seed=1)
    pb, tb, mb = _data([5, 2, 2], n=7, d=8, seed=2)
    pc, tc, mc = _data([0, 0, 0], n=4, seed=3)
    pred, target, masks = {"s2": pa, "s1": pb, "worldcover": pc}, {"s2": ta, "s1": tb, "worldcover": tc}, \
        {"s2": ma, "s1": mb, "worldcover": mc}
    config = PatchDiscrimination(weight=0.7, tau=0.2, modality_weights={"s2": 2.0, "s1": 0.5})
    loss = _assert_matches_looped(config, pred, target, masks)
    terms = patch_loss_per_modality(config, pred, target, masks)
    assert set(terms) == {"s2", "s1", "worldcover"} and terms["worldcover"].item() == 0.0
    expected = 0.7 * (2.0 * terms["s2"] + 0.5 * terms["s1"] + terms["worldcover"])
    torch.testing.assert_close(loss.detach(), expected.detach(), rtol=1e-6, atol=0)


def test_masked_negatives_with_repeated_targets_match_looped():
    gen = torch.Generator().manual_seed(4)
    counts = [6, 4, 5, 3]
    pred = torch.randn(4, 8, 5, generator=gen)
    classes = torch.randn(3, 5, generator=gen)  # map-like targets: few distinct values, many repeats
    target = classes[torch.randint(0, 3, (4, 8), generator=gen)]
    mask = _roles(counts, 8, gen)
    target[3] = classes[0]  # sample 3: every target identical -> every row starved -> skipped
    for threshold in (0.999, 0.3, 2.0):
        config = PatchDiscriminationMaskedNegatives(same_target_threshold=threshold)
        _assert_matches_looped(config, {"m": pred}, {"m": target}, {"m": mask})
    # masking only for another modality is plain patch discrimination
    only_other = PatchDiscriminationMaskedNegatives(mask_negatives_for=["worldcover"])
    torch.testing.assert_close(patch_loss(only_other, {"m": pred}, {"m": target}, {"m": mask}),
                               patch_loss(PatchDiscrimination(), {"m": pred}, {"m": target}, {"m": mask}))


def test_all_samples_skipped_by_masked_negatives_give_zero_with_a_graph():
    pred = torch.randn(2, 4, 3, requires_grad=True)
    target = torch.ones(2, 4, 3)
    mask = torch.full((2, 4), DEC, dtype=torch.int8)
    loss = patch_loss(PatchDiscriminationMaskedNegatives(), {"m": pred}, {"m": target}, {"m": mask})
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(pred.grad, torch.zeros_like(pred))


# ---------------------------------------------------------------- OlmoEarth's loss acceptance checks

def test_identical_all_ones_give_log_c_times_two_tau():
    b, n, d = 2, 16, 4
    ones = torch.ones(b, n, d)
    mask = torch.full((b, n), DEC, dtype=torch.int8)
    loss = patch_loss(PatchDiscrimination(), {"s2": ones}, {"s2": ones}, {"s2": mask})
    assert loss.item() > 0.5
    assert loss.item() == pytest.approx(0.2 * math.log(n), rel=1e-6)  # every score equal: CE = log(c)


def test_loss_is_a_mean_over_samples_not_over_tokens():
    pred, target, mask = _data([4, 7, 2], n=9)

    def loss_of(idx):
        return patch_loss(PatchDiscrimination(), {"x": pred[idx]}, {"x": target[idx]}, {"x": mask[idx]})

    three = loss_of(torch.tensor([0, 1, 2]))
    per_sample = [loss_of(torch.tensor([i])) for i in range(3)]
    torch.testing.assert_close(three, torch.stack(per_sample).mean(), rtol=1e-6, atol=0)
    torch.testing.assert_close(loss_of(torch.tensor([0, 1, 2, 2, 0, 1])), three, rtol=1e-6, atol=0)
    eight = loss_of(torch.tensor([0, 1, 2, 2, 1, 0, 1, 2]))  # samples weighted 2, 3, 3
    torch.testing.assert_close(eight, (2 * per_sample[0] + 3 * per_sample[1] + 3 * per_sample[2]) / 8,
                               rtol=1e-6, atol=0)


def test_batch_3_equals_batch_8_of_identical_samples():
    pred, target, mask = _data([5], n=9, seed=7)
    one = patch_loss(PatchDiscrimination(), {"x": pred.expand(3, -1, -1)}, {"x": target.expand(3, -1, -1)},
                     {"x": mask.expand(3, -1)})
    eight = patch_loss(PatchDiscrimination(), {"x": pred.expand(8, -1, -1)}, {"x": target.expand(8, -1, -1)},
                       {"x": mask.expand(8, -1)})
    torch.testing.assert_close(one, eight, rtol=1e-6, atol=0)


def test_info_nce_ones_vs_zeros_and_weight_scales_linearly():
    a, b = torch.ones(4, 8), torch.zeros(4, 8)
    unweighted = info_nce(a, b, weight=1.0)
    assert unweighted.item() > 0.5
    assert unweighted.item() == pytest.approx(math.log(4), rel=1e-6)  # zeros normalize to zeros: uniform logits
    assert info_nce(a, b, weight=0.1).item() == pytest.approx(0.1 * unweighted.item(), rel=1e-6)
    assert info_nce(a, b, weight=0.2).item() == pytest.approx(2 * info_nce(a, b, weight=0.1).item(), rel=1e-6)
    assert info_nce(a, b).item() == pytest.approx(0.1 * unweighted.item(), rel=1e-6)  # default weight 0.1


def test_info_nce_matches_hand_computation_and_is_one_directional():
    gen = torch.Generator().manual_seed(5)
    a, b = torch.randn(5, 6, generator=gen), torch.randn(5, 6, generator=gen)
    logits = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T / 0.07
    expected = -torch.log_softmax(logits, dim=1).diagonal().mean()
    torch.testing.assert_close(info_nce(a, b, tau=0.07, weight=1.0), expected, rtol=1e-5, atol=0)
    assert not torch.allclose(info_nce(a, b, weight=1.0), info_nce(b, a, weight=1.0))
    perfect = info_nce(torch.eye(5) * 3, torch.eye(5), weight=1.0)  # aligned pairs, orthogonal negatives
    assert perfect.item() == pytest.approx(math.log1p(4 * math.exp(-10)), abs=1e-7)  # fp32 log-softmax near 0


def test_masked_negatives_two_identical_targets_lower_the_loss():
    gen = torch.Generator().manual_seed(6)
    pred = torch.randn(1, 5, 4, generator=gen)
    target = torch.randn(1, 5, 4, generator=gen)
    target[0, 1] = target[0, 0]
    mask = torch.full((1, 5), DEC, dtype=torch.int8)
    masked = patch_loss(PatchDiscriminationMaskedNegatives(), {"m": pred}, {"m": target}, {"m": mask})
    unmasked = patch_loss(PatchDiscriminationMaskedNegatives(same_target_threshold=2.0), {"m": pred},
                          {"m": target}, {"m": mask})
    assert masked.item() > 0
    assert masked.item() < unmasked.item()
    # threshold 2.0 masks nothing: exactly plain patch discrimination
    torch.testing.assert_close(unmasked, patch_loss(PatchDiscrimination(), {"m": pred}, {"m": target}, {"m": mask}))


def test_only_decoder_tokens_get_gradient():
    gen = torch.Generator().manual_seed(8)
    pred = torch.randn(3, 12, 6, generator=gen, requires_grad=True)
    target = torch.randn(3, 12, 6, generator=gen)
    mask = _roles([4, 6, 2], 12, gen)
    patch_loss(PatchDiscrimination(), {"s2": pred}, {"s2": target}, {"s2": mask}).backward()
    grad_norm = pred.grad.norm(dim=-1)
    is_dec = mask == DEC
    assert torch.all(grad_norm[~is_dec] == 0)
    assert torch.all(grad_norm[is_dec] > 0)


def test_nan_in_non_decoder_tokens_does_not_leak():
    pred, target, mask = _data([3, 2], n=6)
    pred = pred.clone()
    pred[mask != DEC] = float("nan")
    pred.requires_grad_(True)
    loss = patch_loss(PatchDiscrimination(), {"s2": pred}, {"s2": target}, {"s2": mask})
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(pred.grad).all()


# ---------------------------------------------------------------- ERA5 regression

def _series():
    # B=2, T=3, V=2; sample 1 variable 1 has no valid timestep
    series = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [5.0, 100.0]],
                           [[2.0, 7.0], [4.0, 8.0], [9.0, 9.0]]])
    valid = torch.tensor([[[True, True], [True, True], [True, False]],
                          [[True, False], [False, False], [True, False]]])
    return series, valid


def test_era5_mean_regression_hand_computed():
    series, valid = _series()
    # valid means: s0 v0 (1+3+5)/3=3, s0 v1 (2+4)/2=3, s1 v0 (2+9)/2=5.5, s1 v1 excluded
    pred = torch.tensor([[4.0, 1.0], [5.0, -50.0]], requires_grad=True)
    loss = era5_mean_regression(pred, series, valid)
    assert loss.item() == pytest.approx((1.0 + 4.0 + 0.25) / 3, rel=1e-6)
    loss.backward()
    torch.testing.assert_close(pred.grad, torch.tensor([[2 / 3, -4 / 3], [-1 / 3, 0.0]]))


def test_era5_series_regression_hand_computed():
    series, valid = _series()
    pred = torch.zeros(2, 6, requires_grad=True)
    loss = era5_series_regression(pred, series, valid)
    # valid entries: s0: 1,2,3,4,5 ; s1: 2,9 -> mean of squares
    expected = (1 + 4 + 9 + 16 + 25 + 4 + 81) / 7
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    expected_grad = torch.where(valid.flatten(1), -2 * series.flatten(1) / 7, torch.zeros(2, 6))
    torch.testing.assert_close(pred.grad, expected_grad)


@pytest.mark.parametrize("fn,width", [(era5_mean_regression, 2), (era5_series_regression, 6)])
def test_era5_invalid_entries_do_not_change_the_loss(fn, width):
    series, valid = _series()
    pred = torch.linspace(-1, 1, 2 * width).reshape(2, width)
    base = fn(pred, series, valid)
    changed = series.clone()
    changed[~valid] = torch.tensor([1e6, -3.0, float("nan"), float("inf")]).repeat(3)[: int((~valid).sum())]
    assert fn(pred, changed, valid).item() == base.item()
    nothing = fn(pred.requires_grad_(True), series, torch.zeros_like(valid))
    assert nothing.item() == 0.0
    nothing.backward()
    assert torch.equal(pred.grad, torch.zeros_like(pred))


# ---------------------------------------------------------------- fp32 and configs

def test_losses_are_fp32_under_bf16_autocast():
    pred, target, mask = _data([3, 4], n=6)
    series, valid = _series()
    reference = patch_loss(PatchDiscrimination(), {"s2": pred}, {"s2": target}, {"s2": mask})
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        results = [
            patch_loss(PatchDiscrimination(), {"s2": pred.bfloat16()}, {"s2": target.bfloat16()}, {"s2": mask}),
            patch_loss(PatchDiscrimination(), {"s2": pred}, {"s2": target}, {"s2": mask}),
            info_nce(torch.randn(4, 8).bfloat16(), torch.randn(4, 8).bfloat16()),
            era5_mean_regression(torch.zeros(2, 2, dtype=torch.bfloat16), series, valid),
            era5_series_regression(torch.zeros(2, 6, dtype=torch.bfloat16), series, valid),
        ]
    assert all(r.dtype == torch.float32 for r in results)
    assert results[1].item() == reference.item()  # autocast outside changes nothing


def test_configs_validate_and_discriminate():
    adapter = TypeAdapter(PatchLossConfig)
    assert isinstance(adapter.validate_python({"kind": "patch_discrimination"}), PatchDiscrimination)
    masked = adapter.validate_python({"kind": "patch_discrimination_masked_negatives", "mask_negatives_for": ["a"]})
    assert isinstance(masked, PatchDiscriminationMaskedNegatives) and masked.same_target_threshold == 0.999
    assert InfoNCEConfig().tau == 0.1 and InfoNCEConfig().weight == 0.1
    for bad in ({"kind": "patch_discrimination", "tau": 0.0}, {"kind": "patch_discrimination", "weight": -1.0},
                {"kind": "patch_discrimination", "typo": 1.0}, {"kind": "patch_discrimination", "tau": "0.1"},
                {"kind": "patch_discrimination_masked_negatives", "same_target_threshold": 2.5},
                {"kind": "patch_discrimination_masked_negatives", "same_target_threshold": -1.0},
                {"kind": "nope"}):
        with pytest.raises(ValidationError):
            adapter.validate_python(bad)
    with pytest.raises(ValidationError):
        InfoNCEConfig(tau=-0.1)
    with pytest.raises(ValidationError):
        PatchDiscrimination().tau = 0.2  # frozen
