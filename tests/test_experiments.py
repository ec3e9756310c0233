"""Experiments as configuration: every seed key listed, shown and diffed against what it extends."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from terrapipe.cli import main
from terrapipe.errors import ConfigError
from terrapipe.models.tokenization import band_groups
from terrapipe.train.experiments import ExperimentConfig, diff, flatten, load_pretrain, resolve, resolved_document

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
    ("single_bandset_10m_only_cross_random_masked_neg", "single_bandset_cross_random_masked_neg",
     {"tokenization.s2"}),
    ("single_bandset_band_dropout_cross_random_masked_neg", "single_bandset_cross_random_masked_neg",
     {"model.band_dropout.rate"}),
    ("single_bandset_era5_decode_only_masked_neg", "single_bandset_random_decode_masked_neg",
     {"era5.kind", "tokenization.era5"}),
    ("two_bandset_cross_random_masked_neg", "default_bandsets_via_tokenconfig_cross_random_masked_neg",
     {"tokenization.s2", "tokenization.landsat"}),
    ("two_bandset_midlayer_merged_cross_random_masked_neg", "two_bandset_cross_random_masked_neg",
     {"model.merge.enabled", "model.merge.after_layer"}),
    ("single_bandset_no60m_random_band_dropout_cross_random_masked_neg",
     "single_bandset_no60m_cross_random_masked_neg", {"model.band_dropout.rate", "model.band_dropout.random"}),
    # seed 000's baseline vs seed 001 #14: masking, ERA5 as a decode target (so ERA5 tokens), its W&B project
    (BASELINE_000, "single_bandset_all12_random_band_dropout_cross_random_masked_neg",
     {"masking.kind", "masking.allow_encoding_decoding_same_bandset", "masking.min_encoded_bandsets",
      "masking.max_encoded_bandsets", "masking.min_decoded_bandsets", "masking.max_decoded_bandsets",
      "era5.kind", "tokenization.era5", "tracking.project"}),
    ("era5_clip_mean", BASELINE_000, {"era5.kind", "era5.encoder", "era5.hidden_dim", "era5.kernel_size",
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


# --- coverage added for the brief's remaining points ---------------------------------------------------------------

DIFF_CASES = test_diff_against_the_parent_shows_only_the_variable_under_test.pytestmark[0].args[1]
RUN = ["single_bandset_all12_random_band_dropout_era5_random_decode_masked_neg", "era5_reg_mean",
       "default_bandsets_via_tokenconfig_cross_random_masked_neg", "single_bandset_cross_random_masked_neg"]


def test_every_seed_experiment_is_diffed_against_its_parent():
    params = load_pretrain(PARAMS)
    cases = {key: parent for key, parent, _ in DIFF_CASES}
    assert set(cases) == SEED_KEYS - {"default_bandsets_via_tokenconfig_cross_random_masked_neg"}
    assert all(params.experiments[key]["extends"] == parent for key, parent in cases.items())


def test_list_marks_the_dvc_repro_experiments_and_names_the_parent(capsys):
    params = load_pretrain(PARAMS)
    assert params.run == RUN
    code, out = cli(capsys, "experiments", "list")
    rows = [line for line in out.splitlines() if " extends " in line]
    assert code == 0 and len(rows) == len(SEED_KEYS)
    for line in rows:
        marker, key = line[0], line[2:].split()[0]
        entry = params.experiments[key]
        assert marker == ("*" if key in RUN else " "), line
        assert f" extends {entry.get('extends') or 'base'}: " in line and line.endswith(entry["about"])


def test_show_yaml_is_the_default(capsys):
    code, out = cli(capsys, "experiments", "show", "era5_reg_mean")
    assert code == 0 and yaml.safe_load(out) == resolved_document(load_pretrain(PARAMS), "era5_reg_mean")


def test_band_groups_keep_the_written_order():
    assert band_groups("s2", [["B04", "B02"]]).indices == ((2, 0),)


def test_landsat_groups_of_every_experiment():
    """The default 2 Landsat groups where an experiment keeps the registry sets, else one group of all 11."""
    default = {"default_bandsets_via_tokenconfig_cross_random_masked_neg", "merged_bandsets_cross_random_masked_neg",
               "midlayer_merged_bandsets_cross_random_masked_neg"}
    for key in SEED_KEYS:
        expected = [["B8"], LANDSAT_ALL[1:]] if key in default else [LANDSAT_ALL]
        assert groups(key, "landsat") == expected, key
    assert len(LANDSAT_ALL) == 11


def _dumped(config: ExperimentConfig) -> dict:
    """``config`` written out as resolved_document writes an experiment's config."""
    document = config.model_dump(mode="json")
    document["tokenization"] = {m: [list(g) for g in config.groups(m).names] for m in config.token_modalities}
    document["model"]["encoder"] = config.model.encoder.model_dump()
    document["model"]["decoder"] = config.model.decoder.model_dump()
    return document


def test_default_bandsets_via_tokenconfig_resolved_document_equals_the_base():
    """The seed's sanity check, on every resolved key: an experiment built from the base alone is the same."""
    params = load_pretrain(PARAMS)
    base = flatten(_dumped(ExperimentConfig.model_validate(params.base)))
    resolved = flatten(resolved_document(params, "default_bandsets_via_tokenconfig_cross_random_masked_neg")["config"])
    assert set(base) == set(resolved) and len(base) > 40
    assert {k: (v, resolved[k]) for k, v in base.items() if resolved[k] != v} == {}


@pytest.mark.parametrize("argv", [("show", "nope"), ("diff", "nope", "era5_reg_mean"), ("diff", "era5_reg_mean", "nope"),
                                  ("run", "nope"), ("run", "nope", "--steps", "3")])
def test_unknown_key_exits_2_naming_it_and_the_accepted_keys(capsys, monkeypatch, argv):
    import subprocess
    monkeypatch.setattr(subprocess, "call", lambda *a, **k: pytest.fail("nothing may run for an unknown key"))
    assert main(["--params", PARAMS, "experiments", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "'nope'" in captured.err and "accepted" in captured.err
    assert all(key in captured.err for key in SEED_KEYS)


def test_diff_text_and_no_differences(capsys):
    assert cli(capsys, "experiments", "diff", "era5_reg_mean", "era5_reg_timeseries") == (
        0, 'era5.target: "mean" -> "series"\n')
    assert cli(capsys, "experiments", "diff", "era5_reg_mean", "era5_reg_mean") == (0, "no differences\n")
    code, out = cli(capsys, "experiments", "diff", "era5_reg_mean", "era5_reg_mean", "--format", "json")
    assert code == 0 and json.loads(out) == {}


def test_experiments_run_command_without_steps_and_as_printed(monkeypatch, capsys):
    import subprocess
    import sys
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda cmd: calls.append(cmd) or 3)
    key = "single_bandset_band_dropout_0.5_cross_random_masked_neg"
    assert main(["--params", PARAMS, "experiments", "run", key]) == 3  # dvc's exit code comes back
    assert calls == [[sys.executable, "-m", "dvc", "exp", "run", "-n", key, "-S", f"pretrain.run=[{key}]"]]
    assert capsys.readouterr().err == f"+ dvc exp run -n {key} -S 'pretrain.run=[{key}]'\n"


def test_experiments_run_refuses_steps_it_would_ignore(tmp_path, monkeypatch, capsys):
    import subprocess
    monkeypatch.setattr(subprocess, "call", lambda *a, **k: pytest.fail("must not run"))
    path = _params_with(tmp_path, lambda p: p["experiments"].update(
        my_short_run={"about": "exp 3, shorter", "extends": "era5_reg_mean", "train": {"steps": 7}},
        my_child={"about": "inherits steps 7", "extends": "my_short_run"}))
    for key in ("my_short_run", "my_child"):
        assert main(["--params", str(path), "experiments", "run", key, "--steps", "3"]) == 2
        err = capsys.readouterr().err
        assert "--steps would be ignored" in err and "'my_short_run' sets train.steps" in err
    assert main(["--params", PARAMS, "experiments", "run", "era5_reg_mean", "--steps", "0"]) == 2
    assert "--steps must be at least 1" in capsys.readouterr().err


def test_a_config_error_reaches_the_cli_as_exit_2(tmp_path, capsys):
    path = _params_with(tmp_path, lambda p: p["run"].append("no_such_experiment"))
    assert main(["--params", str(path), "experiments", "list"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "no_such_experiment" in captured.err
