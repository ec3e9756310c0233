"""Experiments as configuration: every seed key listed, shown and diffed against what it extends."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from terrapipe.cli import main
from terrapipe.errors import ConfigError
from terrapipe.train.experiments import ExperimentConfig, diff, load_pretrain, resolve, resolved_document

REPO = Path(__file__).resolve().parents[1]
PARAMS = str(REPO / "params.yaml")
S2_ALL = ["B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12", "B01", "B09"]
S2_20M = ["B05", "B06", "B07", "B8A", "B11", "B12"]
LANDSAT_ALL = ["B8", "B1", "B2", "B3", "B4", "B5", "B6", "B7", "B9", "B10", "B11"]
BASELINE_000 = "single_bandset_all12_random_band_dropout_era5_random_decode_masked_neg"
SEED_KEYS = {  # the 14 keys of seed 001's table and seed 000's baseline + 5
    "single_bandset_cross_random_masked_neg", "single_bandset_random_decode_masked_neg",
    "single_bandset_no60m_cross_random_masked_neg", "single_bandset_10m_only_cross_random_masked_neg",
    "single_bandset_band_dropout_cross_random_masked_neg", "single_bandset_band_dropout_0.5_cross_random_masked_neg",
    "single_bandset_era5_decode_only_masked_neg", "two_bandset_cross_random_masked_neg",
    "merged_bandsets_cross_random_masked_neg", "midlayer_merged_bandsets_cross_random_masked_neg",
    "default_bandsets_via_tokenconfig_cross_random_masked_neg", "two_bandset_midlayer_merged_cross_random_masked_neg",
    "single_bandset_no60m_random_band_dropout_cross_random_masked_neg",
    "single_bandset_all12_random_band_dropout_cross_random_masked_neg",
    BASELINE_000, "era5_decode_no_mask_neg", "era5_clip_mean", "era5_reg_mean", "era5_clip_conv1d",
    "era5_reg_timeseries"}


def cli(capsys, *argv) -> tuple[int, str]:
    code = main(["--params", PARAMS, *argv])
    return code, capsys.readouterr().out


def test_every_seed_key_is_listed_and_shown(capsys):
    code, out = cli(capsys, "experiments", "list")
    assert code == 0
    listed = {line.split()[1] if line.startswith("*") else line.split()[0] for line in out.splitlines()
              if line.strip() and not line.startswith("\n") and " extends " in line}
    assert listed == SEED_KEYS
    for key in SEED_KEYS:
        code, out = cli(capsys, "experiments", "show", key, "--format", "json")
        assert code == 0 and json.loads(out)["experiment"] == key


def groups(key, modality):
    return resolved_document(load_pretrain(PARAMS), key)["config"]["tokenization"][modality]


def test_tokenization_of_the_seed_variants_in_registry_order():
    assert groups("single_bandset_cross_random_masked_neg", "s2") == [S2_ALL]
    assert groups("single_bandset_cross_random_masked_neg", "landsat") == [LANDSAT_ALL]
    assert groups("single_bandset_no60m_cross_random_masked_neg", "s2") == [S2_ALL[:10]]
    assert groups("single_bandset_10m_only_cross_random_masked_neg", "s2") == [S2_ALL[:4]]
    assert groups("two_bandset_cross_random_masked_neg", "s2") == [S2_ALL[:4], S2_20M]
    assert groups("default_bandsets_via_tokenconfig_cross_random_masked_neg", "s2") == [S2_ALL[:4], S2_20M,
                                                                                          ["B01", "B09"]]
    assert groups("default_bandsets_via_tokenconfig_cross_random_masked_neg", "landsat") == [["B8"], LANDSAT_ALL[1:]]


@pytest.mark.parametrize("key, parent, changed", [
    ("single_bandset_cross_random_masked_neg", "default_bandsets_via_tokenconfig_cross_random_masked_neg",
     {"tokenization.s2", "tokenization.landsat"}),
    ("single_bandset_random_decode_masked_neg", "single_bandset_cross_random_masked_neg",
     {"masking.kind", "masking.allow_encoding_decoding_same_bandset", "masking.min_encoded_bandsets",
      "masking.max_encoded_bandsets", "masking.min_decoded_bandsets", "masking.max_decoded_bandsets"}),
    ("single_bandset_no60m_cross_random_masked_neg", "single_bandset_cross_random_masked_neg", {"tokenization.s2"}),
    ("single_bandset_band_dropout_0.5_cross_random_masked_neg", "single_bandset_cross_random_masked_neg",
     {"model.band_dropout.rate"}),
    ("single_bandset_all12_random_band_dropout_cross_random_masked_neg", "single_bandset_cross_random_masked_neg",
     {"model.band_dropout.rate", "model.band_dropout.random"}),
    ("merged_bandsets_cross_random_masked_neg", "default_bandsets_via_tokenconfig_cross_random_masked_neg",
     {"model.merge.enabled"}),
    ("midlayer_merged_bandsets_cross_random_masked_neg", "default_bandsets_via_tokenconfig_cross_random_masked_neg",
     {"model.merge.enabled", "model.merge.after_layer"}),
    ("era5_decode_no_mask_neg", BASELINE_000, {"losses.patch.kind", "losses.patch.same_target_threshold",
                                               "losses.patch.mask_negatives_for"}),
    # the ERA5 objective is the variable; ERA5's band group exists only while ERA5 is a token
    ("era5_reg_mean", BASELINE_000, {"era5.kind", "era5.target", "era5.weight", "tokenization.era5"}),
    ("era5_reg_timeseries", BASELINE_000, {"era5.kind", "era5.target", "era5.weight", "tokenization.era5"}),
    ("era5_clip_conv1d", BASELINE_000, {"era5.kind", "era5.encoder", "era5.hidden_dim", "era5.kernel_size",
                                        "era5.tau", "era5.weight", "tokenization.era5"}),
])
def test_diff_against_the_parent_shows_only_the_variable_under_test(capsys, key, parent, changed):
    assert set(diff(load_pretrain(PARAMS), key, parent)) == changed
    code, out = cli(capsys, "experiments", "diff", key, parent, "--format", "json")
    assert code == 0 and set(json.loads(out)) == changed


def test_default_bandsets_via_tokenconfig_resolves_to_the_base(capsys):
    """Seed 001 #11, the sanity check: writing the default bandsets out changes nothing."""
    params = load_pretrain(PARAMS)
    assert resolve(params, "default_bandsets_via_tokenconfig_cross_random_masked_neg").model_dump() != {}
    base = ExperimentConfig.model_validate(params.base)
    explicit = resolve(params, "default_bandsets_via_tokenconfig_cross_random_masked_neg")
    assert [explicit.groups(m).names for m in explicit.token_modalities] == \
           [base.groups(m).names for m in base.token_modalities]
    assert resolve(params, BASELINE_000).era5.kind == "decode_target"


def _params_with(tmp_path, edit) -> Path:
    raw = yaml.safe_load(Path(PARAMS).read_text())
    edit(raw["pretrain"])
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.parametrize("edit, expected", [
    (lambda p: p["experiments"]["era5_reg_mean"].update(tokenization={"s2": [["B10"]]}), ["B10", "B8A"]),
    (lambda p: p["experiments"]["era5_reg_mean"].update(tokenization={"sentinel3": [["B1"]]}), ["sentinel3"]),
    (lambda p: p["run"].append("no_such_experiment"), ["no_such_experiment"]),
    (lambda p: p["experiments"]["single_bandset_cross_random_masked_neg"].update(
        extends="single_bandset_random_decode_masked_neg"), ["cycle"]),
    (lambda p: p["experiments"]["era5_clip_mean"].update(masking={"kind": "checkerboard"}), ["era5_clip_mean"]),
])
def test_config_errors_name_the_key_and_the_accepted_values(tmp_path, edit, expected):
    path = _params_with(tmp_path, edit)
    with pytest.raises(ConfigError) as caught:
        load_pretrain(path)
    for text in expected:
        assert text in str(caught.value)


def test_adding_an_experiment_is_a_params_edit(tmp_path, capsys):
    path = _params_with(tmp_path, lambda p: p["experiments"].update(
        my_short_run={"about": "exp 3, shorter", "extends": "era5_reg_mean", "train": {"steps": 7}}))
    assert resolve(load_pretrain(path), "my_short_run").train.steps == 7
    assert main(["--params", str(path), "experiments", "list"]) == 0
    assert "my_short_run" in capsys.readouterr().out
    assert set(diff(load_pretrain(path), "my_short_run", "era5_reg_mean")) == {"train.steps"}


def test_experiments_run_tracks_a_dvc_experiment(monkeypatch, capsys):
    import subprocess
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    assert main(["--params", PARAMS, "experiments", "run", "era5_clip_mean", "--steps", "5"]) == 0
    assert calls[0][2:] == ["dvc", "exp", "run", "-n", "era5_clip_mean", "-S", "pretrain.run=[era5_clip_mean]",
                            "-S", "pretrain.base.train.steps=5"]
    assert main(["--params", PARAMS, "experiments", "run", "nope"]) == 2 and len(calls) == 1
