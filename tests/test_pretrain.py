"""Pretraining: band dropout, bandset merge, ERA5 heads, the training loop's resume and DDP equality.

A tiny in-memory store (random normalized values with missing timesteps) stands in for the processed
store, so no pipeline run is needed; the real store is exercised by the pretrain stage in `make demo`.
"""
from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from terrapipe.models.latent_mim import LatentMIM
from terrapipe.models.layers import BandsetMerge, BandsetUnmerge, band_dropout
from terrapipe.train.batch import assemble, step_shape
from terrapipe.train.experiments import ExperimentConfig, load_pretrain, merge, resolve
from terrapipe.train.roles import MaskValue

REPO = Path(__file__).resolve().parents[1]
TINY = {"model": {"size": "pico"},
        "sampling": {"patch_sizes": [4], "hw_tokens": [2], "token_budget": 96},
        "train": {"steps": 6, "global_batch": 8, "microbatch": 4, "checkpoint_every": 3, "seed": 3},
        "optim": {"warmup_steps": 2}, "tracking": {"wandb": "disabled"},
        "downstream": {"every": 0}}   # the kNN callback has its own tests (test_pretrain_callback.py)


def tiny_config(key: str, **override) -> ExperimentConfig:
    """A seed experiment at test size: the experiment's own variable kept, only size knobs changed."""
    params = load_pretrain(REPO / "params.yaml")
    from terrapipe.train.experiments import raw_config
    raw = merge(raw_config(params, key), TINY)
    if raw["model"]["merge"]["after_layer"] > 1:                    # pico has 2 blocks: merge mid-way
        raw["model"]["merge"]["after_layer"] = 1
    return ExperimentConfig.model_validate(merge(raw, override))


def tiny_store(n: int = 12, chip: int = 16, months: int = 12, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)

    def series(channels):
        x = rng.normal(0.5, 0.15, (n, chip, chip, months, channels)).astype(np.float32)
        lost = rng.random((n, months)) < 0.2                 # cloud-lost months: every pixel and band
        x.transpose(0, 3, 1, 2, 4)[lost] = -99999.0
        return x
    return {"s2": series(12), "s1": series(2), "landsat": series(11),
            "worldcover": rng.integers(0, 4, (n, chip, chip, 1, 1)).astype(np.float32) / 4,
            "srtm": rng.normal(0.4, 0.01, (n, chip, chip, 1, 1)).astype(np.float32),
            "era5": rng.normal(0.5, 0.2, (n, months, 6)).astype(np.float32),
            "timestamps": np.stack(np.broadcast_arrays(15, np.arange(1, months + 1), 2024), -1)[None]
            .repeat(n, 0).astype(np.int32)}


def one_batch(config: ExperimentConfig, store: dict, step: int = 0, size: int = 4):
    return assemble(config, store, np.arange(size), np.arange(size), step, step_shape(config, step, 12, store["s2"].shape[1]))


def test_every_seed_experiment_builds_and_gives_finite_losses():
    from terrapipe.train.objective import Objective

    store = tiny_store()
    for key in load_pretrain(REPO / "params.yaml").experiments:
        config = tiny_config(key)
        torch.manual_seed(0)
        loss, metrics = Objective(LatentMIM(config)).train()(one_batch(config, store), torch.Generator().manual_seed(1))
        assert torch.isfinite(loss), key
        loss.backward()
        assert "info_nce" in metrics and "patch_disc" in metrics


def test_patch_chance_is_two_tau_log_of_the_decoded_tokens_per_sample():
    """Without negative masking every row of a sample with c decoded tokens is scored against c columns: the
    chance level is the mean over samples (c > 0) of 2 tau log c, then over the two views."""
    import math

    from terrapipe.train.objective import Objective

    config = tiny_config("era5_decode_no_mask_neg")      # plain patch discrimination: no negative is masked
    batch = one_batch(config, tiny_store())
    torch.manual_seed(0)
    _, metrics = Objective(LatentMIM(config)).train()(batch, torch.Generator().manual_seed(1))
    tau = config.losses.patch.tau
    for key in config.token_modalities:
        per_view = []
        for view in batch.views:
            counts = (view[key].flatten(1) == MaskValue.DECODER).sum(1).tolist()
            per_view.append(sum(2 * tau * math.log(c) for c in counts if c) / max(sum(1 for c in counts if c), 1))
        assert float(metrics[f"patch_disc_chance/{key}"]) == pytest.approx(sum(per_view) / 2, rel=1e-5), key
    assert float(metrics["patch_disc_chance"]) == pytest.approx(
        config.losses.patch.weight * sum(float(metrics[f"patch_disc_chance/{k}"]) for k in config.token_modalities),
        rel=1e-5)


def test_band_dropout_rate_zero_is_identity_and_rate_one_keeps_one_band():
    x = torch.rand(64, 4, 4, 3, 12) + 0.1
    groups = ((0, 1, 2, 3), (4, 5, 6, 7, 8, 9), (10, 11))
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(band_dropout(x, groups, 0.0, False, gen), x)
    dropped = band_dropout(x, groups, 1.0, False, gen)
    kept = (dropped != 0).flatten(1, 3).all(1)                       # (B, C): band kept over all pixels/times
    for group in groups:
        assert (kept[:, list(group)].sum(1) == 1).all()             # exactly one band survives per group
    half = band_dropout(x, ((0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11),), 0.5, False, gen)
    per_sample = (half != 0).flatten(1, 3).all(1).sum(1)
    assert per_sample.min() >= 1 and per_sample.max() < 12 and (per_sample < 12).any()
    single = torch.rand(8, 2, 2, 1, 1)
    assert torch.equal(band_dropout(single, ((0,),), 1.0, False, gen), single)  # one-band groups untouched


def test_band_dropout_only_on_the_online_encoder_in_training():
    config = tiny_config("single_bandset_band_dropout_0.5_cross_random_masked_neg")
    batch = one_batch(config, tiny_store())
    torch.manual_seed(0)
    model = LatentMIM(config)
    masks = batch.views[0]
    embed = model.encoder.embedding
    plain = embed(batch, ("s2",))["s2"]
    assert not torch.equal(embed(batch, ("s2",), torch.Generator().manual_seed(0))["s2"], plain)
    model.eval()                                                     # eval: the generator is ignored
    a = model.encoder(batch, masks, None).tokens["s2"]
    b = model(batch, masks, torch.Generator().manual_seed(0))[1].tokens["s2"]
    assert torch.equal(a, b)
    model.train()
    targets_a = model.targets(batch)
    targets_b = model.targets(batch)                                 # the target never drops bands
    assert all(torch.equal(targets_a[k], targets_b[k]) for k in targets_a)
    full = model.target_encoder.embedding(batch, ("s2",))["s2"].flatten(1, -2)
    assert torch.equal(targets_a["s2"], full)


def test_bandset_merge_is_mean_pooling_at_init_and_shapes():
    torch.manual_seed(0)
    merge_layer, unmerge = BandsetMerge(16, 3), BandsetUnmerge(16, 3)
    tokens = torch.randn(2, 4, 4, 5, 3, 16)
    encoded = torch.rand(2, 4, 4, 5, 3) < 0.6
    merged = merge_layer(tokens, encoded)
    expected = (tokens * encoded[..., None]).sum(-2) / encoded.sum(-1, keepdim=True).clamp(min=1)
    assert merged.shape == (2, 4, 4, 5, 16)
    torch.testing.assert_close(merged, expected, atol=1e-6, rtol=0)
    split = unmerge(merged)
    assert split.shape == (2, 4, 4, 5, 3, 16)
    torch.testing.assert_close(split[..., 1, :], merged)


@pytest.mark.parametrize("key", ["merged_bandsets_cross_random_masked_neg",
                                 "midlayer_merged_bandsets_cross_random_masked_neg"])
def test_merged_encoder_outputs_one_token_per_position_and_decodes_every_group(key):
    config = tiny_config(key, model={"merge": {"after_layer": 0 if "midlayer" not in key else 1}})
    batch = one_batch(config, tiny_store())
    torch.manual_seed(0)
    model = LatentMIM(config).train()
    pred, encoded = model(batch, batch.views[0], torch.Generator().manual_seed(0))
    assert encoded.tokens["s2"].shape[-2] == 1 and encoded.roles["s2"].shape[-1] == 1
    assert pred["s2"].shape[1] == batch.views[0]["s2"][0].numel()  # 3 groups decoded per position
    encoded_any = (batch.views[0]["s2"] == MaskValue.ONLINE_ENCODER).any(-1)
    assert torch.equal(encoded.roles["s2"][..., 0] == MaskValue.ONLINE_ENCODER, encoded_any)


@pytest.mark.parametrize("key", ["era5_clip_mean", "era5_reg_mean", "era5_clip_conv1d", "era5_reg_timeseries"])
def test_era5_heads_get_gradient_and_leave_the_token_path_unchanged(key):
    from terrapipe.train.objective import Objective

    store = tiny_store()
    config = tiny_config(key)
    baseline = tiny_config(key, era5={"kind": "none"})
    assert "era5" not in config.token_modalities                     # never a token in exps 2-5
    batch = one_batch(config, store)
    torch.manual_seed(0)
    model = LatentMIM(config).eval()
    torch.manual_seed(0)
    plain = LatentMIM(baseline).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("era5_head")})
    with torch.no_grad():
        tokens = model(batch, batch.views[0])[1].tokens
        tokens_plain = plain(batch, batch.views[0])[1].tokens
    assert all(torch.equal(tokens[k], tokens_plain[k]) for k in tokens)
    model.train()
    loss, metrics = Objective(model)(batch, torch.Generator().manual_seed(0))
    loss.backward()
    grads = [p.grad for p in model.era5_head.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    name = "era5_regression_mse" if "reg" in key else "era5_alignment_info_nce"
    assert float(metrics[name]) > 0


def _train(config, store, out: Path, **kwargs):
    from terrapipe.train.loop import train
    return train(config, {"config": config.model_dump(mode="json")}, store, np.arange(len(store["s2"])), out,
                 progress=False, **kwargs)


def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    config = tiny_config("single_bandset_all12_random_band_dropout_era5_random_decode_masked_neg")
    store = tiny_store()
    full = _train(config, store, tmp_path / "full")
    _train(config, store, tmp_path / "cut", stop_at=3)                 # "interrupted" after the step-3 checkpoint
    cut = torch.load(tmp_path / "cut/checkpoint.pt", weights_only=False)
    assert cut["step"] == 3
    resumed = _train(config, store, tmp_path / "cut")
    a = torch.load(tmp_path / "full/checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "cut/checkpoint.pt", weights_only=False)
    assert a["step"] == b["step"] == 6
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert full.history == resumed.history                           # every metric of every step, exactly
    other = copy.deepcopy(config.model_dump(mode="json"))
    other["train"]["seed"] = 4                                        # another config never resumes this one
    assert _train(ExperimentConfig.model_validate(other), store, tmp_path / "cut").history[0]["step"] == 1


def test_cpu_training_runs_the_configured_thread_count_not_the_machines(tmp_path):
    """train.cpu_threads sets torch's threads on CPU: ATen and MKL split sums by thread count, so a machine
    with more cores would otherwise train other bytes."""
    config = tiny_config("single_bandset_cross_random_masked_neg",
                         train={"steps": 1, "checkpoint_every": 1, "device": "cpu", "cpu_threads": 1})
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        _train(config, tiny_store(), tmp_path / "run")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_torchrun_two_ranks_match_one_process(tmp_path):
    """Two gloo ranks with half the microbatches each reach the parameters of one process with all."""
    script = tmp_path / "ddp.py"
    script.write_text(textwrap.dedent(f"""
        import sys, torch
        sys.path.insert(0, {str(REPO / "tests")!r})
        from test_pretrain import tiny_config, tiny_store, _train
        from pathlib import Path
        config = tiny_config("single_bandset_cross_random_masked_neg",
                             train={{"steps": 3, "checkpoint_every": 3}})
        _train(config, tiny_store(), Path(sys.argv[1]))
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    single = subprocess.run([sys.executable, str(script), str(tmp_path / "one")], env=env,
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script), str(tmp_path / "two")], env=env, capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    a = torch.load(tmp_path / "one/checkpoint.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "two/checkpoint.pt", weights_only=False)["model"]
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert worst < 1e-5, worst
    moved = torch.load(tmp_path / "one/checkpoint.pt", weights_only=False)["history"][-1]["grad_norm"]
    assert moved > 0


def test_unknown_experiment_and_band_fail_at_config_load():
    from terrapipe.models.tokenization import band_groups

    with pytest.raises(ValueError, match="B10.*accepted: B02"):
        band_groups("s2", [["B10"]])
    with pytest.raises(ValueError, match="unknown modality 'sentinel3'"):
        band_groups("sentinel3")
    params = load_pretrain(REPO / "params.yaml")
    with pytest.raises(ValueError, match="unknown experiment 'nope'"):
        resolve(params, "nope")
