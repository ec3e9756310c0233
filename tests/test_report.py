"""The report stage: result files in, reports/ out; verdicts that follow the numbers; missing inputs named.

The fixtures write every result file in the format its stage writes (contracts.md for evaluate) under a
temporary root, for the four experiments of the repository's params.yaml pretrain.run.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_stage, tree_digest

TASKS = {"eurosat": ("knn_accuracy", 10, 400), "so2sat": ("knn_accuracy", 17, 300),
         "mados": ("probe_micro_f1", 5, 500), "pastis": ("probe_miou", 6, 600)}
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082")


@pytest.fixture(scope="module")
def params():
    from terrapipe.config import load_params

    return load_params(REPO / "params.yaml")


@pytest.fixture(scope="module")
def keys(params):
    from terrapipe.train.experiments import pretrain_params

    run = pretrain_params(params).run
    baseline, reg, three, single = run   # exp 15, era5_reg_mean, 3 bandsets, 1 bandset (params.yaml's order)
    assert "era5_reg_mean" == reg and three.startswith("default_bandsets")
    return {"baseline": baseline, "reg": reg, "three": three, "single": single}


def _write(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())


def write_pretrain(root: Path, key: str, info_nce: np.ndarray, era5: bool, chance: float = 2.5) -> None:
    steps = np.arange(1, len(info_nce) + 1)
    columns = {"step": steps, "total": info_nce + 1.0, "patch_disc": np.linspace(2.6, 2.3, len(steps)),
               "info_nce": info_nce, "lr": np.full(len(steps), 2e-4),
               "patch_disc_chance": np.full(len(steps), chance), "patch_disc/s2": np.linspace(0.6, 0.45, len(steps)),
               "patch_disc_chance/s2": np.full(len(steps), 0.6), "patch_disc/srtm": np.zeros(len(steps)),
               "patch_disc_chance/srtm": np.zeros(len(steps))}   # srtm: every sample skipped, no ratio
    if era5:
        columns["era5_regression_mse"] = np.linspace(0.3, 0.04, len(steps))
    lines = [",".join(columns)] + [",".join(f"{columns[c][i]:.6g}" for c in columns) for i in range(len(steps))]
    folder = root / "models" / "pretrain" / key
    _write(folder / "curves.csv", "\n".join(lines) + "\n")
    final = {c: float(np.mean(v[-10:])) for c, v in columns.items() if c != "step"}
    _write(folder / "metrics.json", json.dumps({"steps": int(steps[-1]), "skipped_steps": 0, "final": final,
                                                 "first": {c: float(v[0]) for c, v in columns.items() if c != "step"},
                                                 "final_averages_last_steps": 10}))


def info_nce_curve(seed: int, rises: bool) -> np.ndarray:
    steps = np.arange(1, 61)
    base = 2.6 - 0.02 * np.minimum(steps, 30) + (0.02 * np.maximum(steps - 30, 0) if rises else 0)
    return base + np.random.default_rng(seed).normal(0, 0.02, len(steps))


def predictions(task: str, accuracy: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Test labels (the same for every experiment) and predictions right on a share ``accuracy``."""
    _, classes, n = TASKS[task]
    actual = np.random.default_rng(list(TASKS).index(task)).integers(0, classes, n)
    rng = np.random.default_rng(seed)
    wrong = rng.random(n) >= accuracy
    predicted = np.where(wrong, (actual + rng.integers(1, classes, n)) % classes, actual)
    return actual, predicted


def flip(actual: np.ndarray, predicted: np.ndarray, count: int) -> np.ndarray:
    """``predicted`` with its first ``count`` right answers made wrong (a paired, controlled difference)."""
    out = predicted.copy()
    right = np.flatnonzero(out == actual)[:count]
    out[right] = actual[right] + 1
    return out


def fix(actual: np.ndarray, predicted: np.ndarray, count: int) -> np.ndarray:
    """``predicted`` with its first ``count`` wrong answers made right."""
    out = predicted.copy()
    wrong = np.flatnonzero(out != actual)[:count]
    out[wrong] = actual[wrong]
    return out


def write_evaluate(root: Path, key: str, confusions: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    from terrapipe.report.stats import metric_from_counts

    tasks = {}
    folder = root / "models" / "evaluate" / key
    for task, (actual, predicted) in confusions.items():
        metric, classes, _ = TASKS[task]
        counts = np.zeros((classes + 1, classes + 1))
        np.add.at(counts, (actual, predicted), 1)
        encoder = float(metric_from_counts(counts, metric))
        tasks[task] = {"metric": metric, "encoder": encoder, "random_encoder": 0.3, "random_encoder_std": 0.02,
                       "raw_pixels": 0.4, "majority": 1 / classes, "gain_over_random": encoder - 0.3,
                       "details": {"test_samples": len(actual), "classes": [f"class {c}" for c in range(classes)]}}
        _write(folder / "confusion" / f"{task}.csv",
               "actual,predicted\n" + "".join(f"{a},{p}\n" for a, p in zip(actual, predicted)))
    _write(folder / "metrics.json", json.dumps({"experiment": key, "checkpoint_sha256": "0" * 64, "tasks": tasks}))


def holdout(rows: int, ours: float, knn: float) -> dict:
    scores = lambda pct: {"mae": pct / 50, "mse": 0.01, "rmse": 0.1, "mae_over_range_pct": pct,  # noqa: E731
                          "cosine_similarity_mean": 0.9, "r2_uniform_average": 0.5}
    return {"rows": rows, "earth4d": scores(ours), "mean_embedding": scores(9.0), "knn_geodesic": scores(knn),
            "earth4d_beats_knn": ours < knn, "earth4d_beats_mean_embedding": ours < 9.0}


def write_models(root: Path) -> None:
    from PIL import Image

    folder = root / "models" / "earth4d_alphaearth"
    _write(folder / "metrics.json", json.dumps({"holdouts": {
        "random": holdout(500, 3.0, 3.4), "spatial_region_1": holdout(80, 6.0, 5.0),
        "spatial_all": holdout(200, 5.5, 5.0), "temporal": holdout(300, 4.0, 4.5)}}))
    for name in ("final_roi_rgb.png", "final_roi_error.png", "training_curves.png"):
        _write(folder / name, PNG)
    for name in ("roi_rgb_progression.gif", "roi_error_progression.gif"):
        (folder / "visualizations").mkdir(parents=True, exist_ok=True)
        frames = [Image.new("RGB", (4, 4), (i * 60, 0, 0)) for i in range(3)]
        frames[0].save(folder / "visualizations" / name, save_all=True, append_images=frames[1:], duration=500, loop=0)

    def ranking(top1: float, n: int) -> dict:
        return {"n": n, "n_seen": n - 10, "n_unseen": 10, "unseen_share": 10 / n, "top1": top1 + 0.02,
                "top5": top1 + 0.2, "top1_all": top1, "top5_all": top1 + 0.15, "ce": 2.0}

    def classifier(top1: float) -> dict:
        groups = {"test": 400, "temporal_test": 250, "spatial_region_1": 150}
        return {"train_rows": 4000, "test_rows": 400, "species_trained": 200,
                "model": {g: ranking(top1, n) for g, n in groups.items()},
                "baselines": {"majority": {g: ranking(0.1, n) for g, n in groups.items()},
                              "nearest_centroid": {g: ranking(0.5, n) for g, n in groups.items()}}}

    identification = {"n": 120, "candidates": 20, "top1": 0.3, "top5": 0.6, "chance_top1": 0.05, "chance_top5": 0.25}
    recon = {"n": 400, "language_from_vision": {"cosine": 0.6, "mse": 0.5, "mse_mean_baseline": 1.0},
             "vision_from_language": {"cosine": 0.4, "mse": 0.7, "mse_mean_baseline": 1.0}}
    _write(root / "models" / "deepearth" / "metrics.json", json.dumps({
        "classifiers": {"language": {**classifier(0.95), "note": "one vector per species: a lookup"},
                        "vision": classifier(0.7)},
        "autoencoder": {"held_out_species": 20, "reconstruction": {"test": recon},
                        "zero_shot": {"decoded": {"all_species": identification, "held_out_only": identification}}}}))


def write_data(root: Path) -> None:
    for dataset in ("sites", "deepearth", "alphaearth"):
        folder = root / "data" / "processed" / "splits" / dataset
        _write(folder / "split.json", json.dumps({
            "dataset_info": {"dataset_name": dataset, "description": f"the {dataset} split"},
            "split_strategy": {"temporal_split": {"test_years": [2025]},
                               "spatial_split": {"num_test_regions": 2, "region_size_km": 10.0, "min_distance_km": 15.0}},
            "split_statistics": {"total_observations": 100, "train_count": 90, "test_count": 10,
                                 "temporal_test_count": 6, "spatial_test_count": 4,
                                 "spatial_test_count_by_region": {"1": 3, "2": 1}},
            "observation_mappings": {"a": {"split": "train"}}}))
        _write(folder / "split_map.png", PNG)
    quality = root / "data" / "quality"
    _write(quality / "report.json", json.dumps({"success": True, "data_docs": "data/quality/docs/index.html", "groups": {
        "imagery": {"sentinel_store": {"source": "data/processed/sentinel", "rows": 12, "expectations": [
            {"expectation": "ExpectColumnValuesToBeBetween", "column": "x", "why": "range", "success": True}]}}}}))
    _write(quality / "docs" / "index.html", "<html></html>")


def write_all(root: Path, keys: dict, *, eurosat_flips: int, baseline_rises: bool = True) -> None:
    """Every result file; the one-bandset run is the three-bandset run with ``eurosat_flips`` right answers
    on sample-eurosat made wrong (and 2 on each other task); era5_reg_mean is exp 15 with 40 more right."""
    for i, (name, key) in enumerate(keys.items()):
        write_pretrain(root, key, info_nce_curve(i, rises=baseline_rises and name == "baseline"), era5=name == "reg")
    three = {task: predictions(task, 0.8, 3) for task in TASKS}
    single = {task: (a, flip(a, p, eurosat_flips if task == "eurosat" else 2)) for task, (a, p) in three.items()}
    baseline = {task: predictions(task, 0.7, 15) for task in TASKS}
    write_evaluate(root, keys["three"], three)
    write_evaluate(root, keys["single"], single)
    write_evaluate(root, keys["baseline"], baseline)
    write_evaluate(root, keys["reg"], {t: (a, fix(a, p, 40)) for t, (a, p) in baseline.items()})
    write_models(root)
    write_data(root)


def unbalanced_tags(html: str) -> list:
    """Tags closed out of order or never closed (the HTML is hand-written by terrapipe.report.document)."""
    from html.parser import HTMLParser

    class Parser(HTMLParser):
        def __init__(self):
            super().__init__()
            self.stack, self.errors = [], []

        def handle_starttag(self, tag, attrs):
            if tag not in ("meta", "img"):
                self.stack.append(tag)

        def handle_endtag(self, tag):
            if self.stack and self.stack[-1] == tag:
                self.stack.pop()
            else:
                self.errors.append(tag)

    parser = Parser()
    parser.feed(html)
    return parser.errors + parser.stack


def referenced_images(out: Path) -> tuple[list[str], list[str]]:
    html = (out / "index.html").read_text()
    markdown = (out / "report.md").read_text()
    return re.findall(r'<img src="([^"]+)"', html), re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", markdown)


def judged(params, root, judge):
    from terrapipe.report.collect import collect

    return judge(collect(root, params))


# ------------------------------------------------------------------------------------------ tests

def test_full_report_every_image_exists_and_is_referenced(tmp_path, params, keys):
    from terrapipe.report.build import write_report

    write_all(tmp_path, keys, eurosat_flips=60)
    summary = write_report(params, tmp_path, tmp_path / "reports")
    out = tmp_path / "reports"
    html_images, md_images = referenced_images(out)
    assert html_images == md_images and len(set(html_images)) == len(html_images)
    for image in html_images:
        assert (out / image).is_file() and (out / image).stat().st_size > 0, image
    on_disk = sorted(p.name for p in (out / "figures").iterdir())
    assert sorted(Path(i).name for i in html_images) == on_disk   # nothing drawn that the text does not show
    assert {"pretrain_era5_info_nce.png", "pretrain_bandsets.png", "downstream.png", "earth4d_holdouts.png",
            "deepearth_classifiers.png", "split_sites.png", "earth4d_roi_rgb_progression.gif"} <= set(on_disk)
    assert summary["missing"] == []
    html = (out / "index.html").read_text()
    assert unbalanced_tags(html) == []
    assert "../data/quality/docs/index.html" in html and "http" not in html.replace("http-equiv", "")
    for key in keys.values():
        assert key in html
    assert "not evaluated" not in html.lower()
    assert "(random 0.300 ± 0.020)" in html                 # the random encoder's seed-to-seed spread
    final = lambda start, end: np.mean(np.linspace(start, end, 60)[-10:])  # noqa: E731
    assert f"{final(2.6, 2.3) / 2.5:.2f} (s2 {final(0.6, 0.45) / 0.6:.2f})" in html   # patch loss over its chance


def test_verdicts_follow_the_numbers_a_variant_that_loses(tmp_path, params, keys):
    from terrapipe.report import hypotheses as h

    write_all(tmp_path, keys, eurosat_flips=60)      # 0.80 -> 0.65 on sample-eurosat, 2 rows elsewhere
    eurosat = judged(params, tmp_path, h.seed001_eurosat)
    assert eurosat.verdict == h.SUPPORTED, eurosat.sentence
    assert "-0.150" in eurosat.sentence or "-0.15" in eurosat.sentence
    assert judged(params, tmp_path, h.seed001_other_tasks).verdict == h.SUPPORTED
    assert judged(params, tmp_path, h.seed000_baseline_rises).verdict == h.SUPPORTED
    assert judged(params, tmp_path, h.seed000_alternatives_flat).verdict == h.SUPPORTED
    assert judged(params, tmp_path, h.seed000_downstream).verdict == h.SUPPORTED    # 40 more right on each task
    assert judged(params, tmp_path, h.seed000_aux_losses).verdict == h.SUPPORTED
    assert judged(params, tmp_path, h.seed002_mape).verdict == h.SUPPORTED          # 3.00% <= 3.61%
    assert judged(params, tmp_path, h.seed002_beats_knn).verdict == h.MIXED         # random, temporal yes; spatial no
    assert judged(params, tmp_path, h.seed004_vision).verdict == h.SUPPORTED
    assert judged(params, tmp_path, h.seed004_language_lookup).verdict == h.SUPPORTED
    assert judged(params, tmp_path, h.seed004_zero_shot).verdict == h.SUPPORTED


def test_a_comparison_of_encoders_left_at_the_patch_chance_level_says_so(tmp_path, params, keys):
    from terrapipe.report import hypotheses as h

    write_all(tmp_path, keys, eurosat_flips=60)      # patch loss 2.32 against a chance level of 2.5: it learned
    assert "caveat" not in judged(params, tmp_path, h.seed001_eurosat).sentence
    write_pretrain(tmp_path, keys["single"], info_nce_curve(1, rises=False), era5=False, chance=2.32)
    eurosat = judged(params, tmp_path, h.seed001_eurosat)
    assert eurosat.verdict == h.SUPPORTED                          # the verdict still follows the numbers
    assert f"`{keys['single']}` ended at 1.00 x its chance level" in eurosat.sentence
    assert f"`{keys['three']}` ended" not in eurosat.sentence


def test_verdicts_follow_the_numbers_a_difference_inside_the_spread(tmp_path, params, keys):
    from terrapipe.report import hypotheses as h

    write_all(tmp_path, keys, eurosat_flips=2, baseline_rises=False)
    eurosat = judged(params, tmp_path, h.seed001_eurosat)
    assert eurosat.verdict == h.INCONCLUSIVE, eurosat.sentence
    assert "within the spread" in eurosat.sentence
    assert judged(params, tmp_path, h.seed000_baseline_rises).verdict != h.SUPPORTED


def test_verdict_rule():
    from terrapipe.report import hypotheses as h

    assert h.verdict(["lower", "lower"], "lower") == h.SUPPORTED
    assert h.verdict(["lower", "within"], "lower") == h.PARTLY
    assert h.verdict(["lower", "higher"], "lower") == h.MIXED
    assert h.verdict(["higher", "within"], "lower") == h.NOT_SUPPORTED
    assert h.verdict(["within"], "lower") == h.INCONCLUSIVE
    assert h.verdict(["within", "higher"], "within") == h.NOT_SUPPORTED
    assert h.verdict(["no spread"], "higher") == h.NOT_JUDGED
    assert h.verdict([], "higher") == h.NOT_EVALUATED


def test_spreads():
    from terrapipe.report import stats

    counts = np.array([[3, 1], [0, 2]])                          # IoU class 0: 3/4, class 1: 2/3
    assert stats.metric_from_counts(counts, "probe_miou") == pytest.approx((3 / 4 + 2 / 3) / 2)
    assert stats.metric_from_counts(counts, "knn_accuracy") == pytest.approx(5 / 6)
    actual, pred = predictions("eurosat", 0.8, 1)
    near = flip(actual, pred, 5)
    paired = stats.paired_spread(actual, pred, near, "knn_accuracy")
    unpaired = np.hypot(stats.bootstrap_spread(actual, pred, "knn_accuracy"),
                        stats.bootstrap_spread(actual, near, "knn_accuracy"))
    assert paired < unpaired / 3                                   # same samples: only the 5 flips vary
    assert stats.bootstrap_spread(actual, pred, "knn_accuracy") == pytest.approx(np.sqrt(0.8 * 0.2 / 400), rel=0.2)
    trend = stats.second_half_trend(np.arange(1, 61), 0.01 * np.arange(1, 61))
    assert trend.slope.value == pytest.approx(0.01) and trend.change.outcome == "higher"


def test_same_inputs_same_bytes(tmp_path, params, keys):
    from terrapipe.report.build import write_report

    write_all(tmp_path, keys, eurosat_flips=60)
    write_report(params, tmp_path, tmp_path / "a")
    write_report(params, tmp_path, tmp_path / "b")
    first, second = tree_digest(tmp_path / "a"), tree_digest(tmp_path / "b")
    assert first == second and len(first) >= 12


def test_missing_inputs_are_named_with_their_stage(tmp_path, params, keys):
    from terrapipe.report.build import write_report
    from terrapipe.report.hypotheses import NOT_EVALUATED

    _write(tmp_path / "models" / "earth4d_alphaearth" / "metrics.json", "{not json")
    summary = write_report(params, tmp_path, tmp_path / "reports")
    assert set(summary["verdicts"].values()) == {NOT_EVALUATED}
    html_images, md_images = referenced_images(tmp_path / "reports")
    assert html_images == md_images == []
    markdown = (tmp_path / "reports" / "report.md").read_text()
    for stage in ("pretrain@era5_reg_mean", f"evaluate@{keys['three']}", "earth4d_alphaearth", "deepearth_classify",
                  "split@deepearth", "split_sites", "validate"):
        assert f"dvc repro {stage}" in markdown, stage
    assert "unreadable" in markdown and "Not evaluated:" in markdown
    assert str(tmp_path) not in markdown                 # repository paths, not this machine's


def test_stage_writes_reports_atomically(tmp_path, params, keys):
    from terrapipe.report.build import write_report

    write_all(tmp_path, keys, eurosat_flips=60)
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "stale.txt").write_text("from an older report")
    run_stage("report", "--params", str(REPO / "params.yaml"), cwd=tmp_path)
    out = tmp_path / "reports"
    assert sorted(p.name for p in out.iterdir()) == ["figures", "index.html", "report.md"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".reports")]
    write_report(params, tmp_path, tmp_path / "in_process")
    assert tree_digest(out) == tree_digest(tmp_path / "in_process")   # same bytes in another process


def test_an_input_of_another_format_is_named_not_fatal(tmp_path, params, keys):
    from terrapipe.report import hypotheses as h
    from terrapipe.report.build import write_report

    write_all(tmp_path, keys, eurosat_flips=60)
    metrics = tmp_path / "models" / "earth4d_alphaearth" / "metrics.json"
    document = json.loads(metrics.read_text())
    for entry in document["holdouts"].values():
        entry.pop("knn_geodesic")                    # as if the stage renamed its baseline
    metrics.write_text(json.dumps(document))
    summary = write_report(params, tmp_path, tmp_path / "reports")
    assert summary["verdicts"][f"002: {judged(params, tmp_path, h.seed002_mape).claim}"] == h.NOT_EVALUATED
    assert "'knn_geodesic' is missing" in judged(params, tmp_path, h.seed002_beats_knn).sentence
    markdown = (tmp_path / "reports" / "report.md").read_text()
    assert "**Could not read `models/earth4d_alphaearth/`**: the field 'knn_geodesic' is missing" in markdown
    assert "earth4d_holdouts.png" not in markdown and "vision classifier: 4000 training" in markdown
