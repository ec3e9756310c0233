"""One sentence per seed hypothesis, stating what this run's numbers say about it.

Each claim is the seed document's own (paraphrased); the verdict follows the numbers by one rule
(terrapipe.report.stats: a difference counts when it exceeds twice its spread), so a reader can check
it from the tables: "supported", "partly supported", "mixed", "not supported", "inconclusive
(difference within the spread)" or "not evaluated" (with the stage that would give the numbers).
Seed 003 describes how experiments are made, not a result, so it has no hypothesis here.
"""
from __future__ import annotations

from dataclasses import dataclass

from terrapipe.report.collect import (
    FORMAT_ERRORS,
    EvaluateRun,
    PretrainRun,
    ReportInputs,
    describe_missing,
    format_problem,
)
from terrapipe.report.stats import (
    Comparison,
    Estimate,
    Trend,
    binomial,
    compare,
    paired_spread,
    second_half_trend,
    window_mean,
)

SUPPORTED, PARTLY, MIXED = "supported", "partly supported", "mixed"
NOT_SUPPORTED, INCONCLUSIVE, NOT_EVALUATED = "not supported", "inconclusive (difference within the spread)", "not evaluated"
NOT_JUDGED = "not judged (the inputs carry no spread)"
ERA5_BASELINE = "single_bandset_all12_random_band_dropout_era5_random_decode_masked_neg"   # seed 000's exp 15
ERA5_AUX_LOSS = {"regression": "era5_regression_mse", "clip_alignment": "era5_alignment_info_nce"}
BANDSET_TASK = "eurosat"                     # seed 001: the bandset change moved EuroSAT only
DEEPEARTH_MAPE = 3.61                        # seed 002's reported 100 * MAE / 2 (%)
EARTH4D_HOLDOUTS = ("random", "spatial_all", "temporal")
NEAR_CHANCE = 0.95           # a final patch loss at >= 95 % of its chance level: the patch objective barely learned


@dataclass(frozen=True)
class Finding:
    seed: str            # "000"
    claim: str           # the seed's hypothesis
    verdict: str
    evidence: str        # the numbers behind the verdict

    @property
    def sentence(self) -> str:
        return f"{self.verdict[0].upper()}{self.verdict[1:]}: {self.evidence.rstrip('.')}"


HYPOTHESES: list = []   # every judge, in seed order (the @hypothesis decorator registers them)


def hypothesis(seed: str, claim: str):
    """Register ``judge(inputs) -> (verdict, evidence)`` as the judge of ``claim``; the registered function
    returns a Finding, "not evaluated" when an input has another format than its stage writes today."""
    def register(judge):
        def run(inputs: ReportInputs) -> Finding:
            try:
                return Finding(seed, claim, *judge(inputs))
            except FORMAT_ERRORS as exc:
                return Finding(seed, claim, NOT_EVALUATED, f"its inputs could not be read ({format_problem(exc)})")
        run.__name__, run.__doc__ = judge.__name__, judge.__doc__
        HYPOTHESES.append(run)
        return run
    return register


def fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def fmt_diff(c: Comparison, digits: int = 3) -> str:
    spread = "" if c.spread is None else f" ± {c.spread:.{digits}f}"
    return f"{c.difference:+.{digits}f}{spread}"


def verdict(outcomes: list[str], good: str) -> str:
    """Aggregate per-comparison outcomes ('higher' / 'lower' / 'within' / 'no spread') for a claim that
    expects ``good`` ('higher', 'lower' or 'within')."""
    if not outcomes:
        return NOT_EVALUATED
    if all(o == "no spread" for o in outcomes):
        return NOT_JUDGED
    if all(o == good for o in outcomes):
        return SUPPORTED
    if good == "within":
        return NOT_SUPPORTED if {"higher", "lower"} & set(outcomes) else NOT_JUDGED
    bad = {"higher": "lower", "lower": "higher"}[good]
    if good in outcomes and bad in outcomes:
        return MIXED
    if bad in outcomes:
        return NOT_SUPPORTED
    return PARTLY if good in outcomes else INCONCLUSIVE


def _missing(part) -> str:
    return "; ".join(describe_missing(part.missing)) or "no numbers"


# ------------------------------------------------------------------------------------------ seed 000

def info_nce_trend(run: PretrainRun) -> Trend | None:
    """InfoNCE's least-squares trend over the second half of training (None without the curve)."""
    if run.curves is None or "info_nce" not in run.curves:
        return None
    return second_half_trend(run.curves["step"], run.curves["info_nce"])


def _trend_text(run: PretrainRun, trend: Trend) -> str:
    return f"`{run.key}` {fmt_diff(trend.change)} over steps {trend.first_step}-{trend.last_step}"


@hypothesis("000", "ERA5 as a per-token reconstruction target (exp 15) makes InfoNCE increase with longer training")
def seed000_baseline_rises(inputs: ReportInputs) -> tuple[str, str]:
    run = next((r for r in inputs.pretrain if r.key == ERA5_BASELINE), None)
    if run is None:
        return NOT_EVALUATED, f"exp 15 (`{ERA5_BASELINE}`) is not in params.yaml pretrain.run"
    trend = info_nce_trend(run)
    if trend is None:
        return NOT_EVALUATED, _missing(run)
    return (verdict([trend.change.outcome], "higher"),
            f"InfoNCE of {_trend_text(run, trend)} (least-squares slope x steps ± its standard error)")


@hypothesis("000", "with ERA5 on the pooled representation instead (exps 1-5), InfoNCE does not increase with training")
def seed000_alternatives_flat(inputs: ReportInputs) -> tuple[str, str]:
    runs = [r for r in inputs.pretrain if r.seed == "000" and r.key != ERA5_BASELINE]
    if not runs:
        return NOT_EVALUATED, "no seed 000 alternative (exps 1-5) is in params.yaml pretrain.run"
    trends = [(r, info_nce_trend(r)) for r in runs]
    judged = [(r, t) for r, t in trends if t is not None]
    if not judged:
        return NOT_EVALUATED, " ".join(_missing(r) for r, _ in trends)
    rising = ["rises" if t.change.outcome == "higher" else "does not rise" for _, t in judged]
    outcome = NOT_SUPPORTED if "rises" in rising else SUPPORTED
    parts = [f"InfoNCE of {_trend_text(r, t)}: {word}" for (r, t), word in zip(judged, rising)]
    return outcome, "; ".join(parts) + " (a rise counts above twice its standard error)"


def _task_comparison(a: EvaluateRun, b: EvaluateRun, task: str) -> Comparison | None:
    """a - b on one task, with the paired bootstrap spread when both were scored on the same samples."""
    ta, tb = a.tasks.get(task), b.tasks.get(task)
    if ta is None or tb is None:
        return None
    difference = ta.values["encoder"] - tb.values["encoder"]
    if ta.confusion is None or tb.confusion is None:
        return Comparison(difference, None)
    (actual_a, pred_a), (actual_b, pred_b) = ta.confusion, tb.confusion
    if len(actual_a) == len(actual_b) and (actual_a == actual_b).all():
        return Comparison(difference, paired_spread(actual_a, pred_a, pred_b, ta.metric))
    return compare(Estimate(ta.values["encoder"], ta.encoder_spread), Estimate(tb.values["encoder"], tb.encoder_spread))


def patch_chance_ratio(curves: dict | None, window: int, modality: str | None = None) -> float | None:
    """A run's final ``patch_disc`` (of ``modality``, or in total; mean of the last ``window`` steps of its
    curves, column -> values) over its chance level ``patch_disc_chance``: near 1, the patch objective taught
    the encoder nothing. None without those curves or where the chance level is 0 (every sample skipped)."""
    suffix = f"/{modality}" if modality else ""
    if curves is None or f"patch_disc_chance{suffix}" not in curves:
        return None
    chance = window_mean(curves[f"patch_disc_chance{suffix}"], window).value
    return window_mean(curves[f"patch_disc{suffix}"], window).value / chance if chance > 0 else None


def _near_chance_caveat(inputs: ReportInputs, keys) -> str:
    """A clause naming the compared runs whose patch objective ended near its chance level ('' if none)."""
    runs = {r.key: r for r in inputs.pretrain}
    near = [(k, ratio) for k in dict.fromkeys(keys) if k in runs
            and (ratio := patch_chance_ratio(runs[k].curves, runs[k].window)) is not None and ratio >= NEAR_CHANCE]
    if not near:
        return ""
    return ("; caveat: the patch loss of " + ", ".join(f"`{k}` ended at {ratio:.2f} x its chance level" for k, ratio in near)
            + ", so these encoders are close to their initialisations and the comparison says little about what "
            "the objective teaches")


def _evaluated(inputs: ReportInputs, key: str) -> EvaluateRun | None:
    run = next((e for e in inputs.evaluate if e.key == key), None)
    return run if run is not None and run.tasks else None


def _pairs_finding(inputs: ReportInputs, pairs: list[tuple[str, str]], tasks_of, good: str,
                   absent: str) -> tuple[str, str]:
    """Compare experiment a with b on each task ``tasks_of(a_run, b_run)`` gives; one verdict for all."""
    if not pairs:
        return NOT_EVALUATED, absent
    outcomes, parts, missing = [], [], []
    for a, b in pairs:
        ea, eb = _evaluated(inputs, a), _evaluated(inputs, b)
        if ea is None or eb is None:
            missing += [f"`{k}` has no downstream metrics (run `dvc repro evaluate@{k}`)" for k, e in ((a, ea), (b, eb))
                        if e is None]
            continue
        for task in tasks_of(ea, eb):
            comparison = _task_comparison(ea, eb, task)
            if comparison is None:
                continue
            outcomes.append(comparison.outcome)
            metric = ea.tasks[task].metric
            parts.append(f"`{a}` - `{b}` on {task} ({metric}) {fmt_diff(comparison)} ({_outcome_word(comparison)})")
    if not outcomes:
        return NOT_EVALUATED, "; ".join(dict.fromkeys(missing)) or absent
    return (verdict(outcomes, good),
            "; ".join(parts) + " (± the bootstrap std of the difference over test samples)"
            + _near_chance_caveat(inputs, [k for pair in pairs for k in pair]))


def _outcome_word(c: Comparison) -> str:
    return {"higher": "higher", "lower": "lower", "within": "within the spread", "no spread": "no spread known"}[c.outcome]


@hypothesis("000", "climate-aware representations (exps 1-5) improve the downstream tasks over exp 15")
def seed000_downstream(inputs: ReportInputs) -> tuple[str, str]:
    alternatives = [r.key for r in inputs.pretrain if r.seed == "000" and r.key != ERA5_BASELINE]
    pairs = [(k, ERA5_BASELINE) for k in alternatives] if ERA5_BASELINE in inputs.run else []
    return _pairs_finding(inputs, pairs, lambda a, b: [t for t in a.tasks if t in b.tasks], "higher",
                          "pretrain.run needs exp 15 and at least one of exps 1-5")


@hypothesis("000", "the ERA5 regression MSE (exps 3, 5) and alignment loss (exps 2, 4) decrease over training")
def seed000_aux_losses(inputs: ReportInputs) -> tuple[str, str]:
    runs = [r for r in inputs.pretrain if r.era5_kind in ERA5_AUX_LOSS]
    if not runs:
        return (NOT_EVALUATED, "no experiment in params.yaml pretrain.run has an ERA5 "
                "regression or alignment loss (seed 000 exps 2-5)")
    outcomes, parts = [], []
    for run in runs:
        column = ERA5_AUX_LOSS[run.era5_kind]
        if run.curves is None or column not in run.curves:
            parts.append(_missing(run) if run.curves is None else f"`{run.key}` logged no {column}")
            continue
        values = run.curves[column]
        final = window_mean(values, run.window)
        change = compare(final, Estimate(float(values[0]), 0.0))
        outcomes.append(change.outcome)
        parts.append(f"`{run.key}` {column} {fmt(float(values[0]))} at step {int(run.curves['step'][0])} -> "
                     f"{fmt(final.value)} over the last {run.window} steps ({fmt_diff(change)}, {_outcome_word(change)})")
    return verdict(outcomes, "lower"), "; ".join(parts)


# ------------------------------------------------------------------------------------------ seed 001

def _bandset_pairs(inputs: ReportInputs) -> list[tuple[str, str]]:
    """(one-bandset run, three-bandset run) among the seed 001 experiments trained."""
    runs = [r for r in inputs.pretrain if r.seed == "001"]
    three = next((r.key for r in runs if r.s2_bandsets == 3), None)
    return [(r.key, three) for r in runs if r.s2_bandsets == 1] if three else []


@hypothesis("001", "one S2 bandset instead of three lowers sample-eurosat performance")
def seed001_eurosat(inputs: ReportInputs) -> tuple[str, str]:
    return _pairs_finding(inputs, _bandset_pairs(inputs),
                          lambda a, b: [BANDSET_TASK] if BANDSET_TASK in a.tasks and BANDSET_TASK in b.tasks else [],
                          "lower", "pretrain.run needs a seed 001 experiment with 3 S2 bandsets and one with 1")


@hypothesis("001", "the other downstream tasks are unaffected by the bandset change")
def seed001_other_tasks(inputs: ReportInputs) -> tuple[str, str]:
    return _pairs_finding(inputs, _bandset_pairs(inputs),
                          lambda a, b: [t for t in a.tasks if t in b.tasks and t != BANDSET_TASK],
                          "within", "pretrain.run needs a seed 001 experiment with 3 S2 bandsets and one with 1")


# ------------------------------------------------------------------------------------------ seed 002

def _earth4d_absent(inputs: ReportInputs) -> str:
    return "; ".join(describe_missing(m for m in inputs.earth4d.missing if m.path.endswith("metrics.json"))) or "no metrics"


@hypothesis("002", f"Earth4D -> AlphaEarth reaches {DEEPEARTH_MAPE}% \"MAPE\" (100 x MAE / 2) on held-out points")
def seed002_mape(inputs: ReportInputs) -> tuple[str, str]:
    holdout = ((inputs.earth4d.metrics or {}).get("holdouts") or {}).get("random")
    if holdout is None:
        return NOT_EVALUATED, _earth4d_absent(inputs)
    value = holdout["earth4d"]["mae_over_range_pct"]
    return (SUPPORTED if value <= DEEPEARTH_MAPE else NOT_SUPPORTED,
            f"on the random (interpolation) holdout of {holdout['rows']} points Earth4D scores {value:.2f}% "
            f"(mean-embedding baseline {holdout['mean_embedding']['mae_over_range_pct']:.2f}%, geodesic kNN "
            f"{holdout['knn_geodesic']['mae_over_range_pct']:.2f}%; one run, no spread)")


@hypothesis("002", "Earth4D's (lat, lon, elevation, time) encoding predicts AlphaEarth better than a location-only kNN")
def seed002_beats_knn(inputs: ReportInputs) -> tuple[str, str]:
    holdouts = (inputs.earth4d.metrics or {}).get("holdouts") or {}
    names = [h for h in EARTH4D_HOLDOUTS if h in holdouts]
    if not names:
        return NOT_EVALUATED, _earth4d_absent(inputs)
    outcomes, parts = [], []
    for name in names:
        h = holdouts[name]
        ours, knn = h["earth4d"]["mae_over_range_pct"], h["knn_geodesic"]["mae_over_range_pct"]
        outcomes.append("higher" if ours < knn else "lower")      # higher = better here (lower error)
        parts.append(f"{name} {ours:.2f}% vs kNN {knn:.2f}% ({'beats' if ours < knn else 'does not beat'})")
    return (verdict(outcomes, "higher"),
            "100 x MAE / 2 on " + "; ".join(parts) + " (one run, no spread)")


# ------------------------------------------------------------------------------------------ seed 004

def _classifier(inputs: ReportInputs, mode: str) -> dict | None:
    return ((inputs.deepearth.metrics or {}).get("classifiers") or {}).get(mode)


def _deepearth_absent(inputs: ReportInputs) -> str:
    return "; ".join(describe_missing(inputs.deepearth.missing)) or "the classifier is not in metrics.json"


@hypothesis("004", ("the vision classifier (V-JEPA-2 embeddings) recognises species in the 2025 and spatial-region holdouts "
             "better than the majority-class and nearest-centroid baselines"))
def seed004_vision(inputs: ReportInputs) -> tuple[str, str]:
    vision = _classifier(inputs, "vision")
    if vision is None:
        return NOT_EVALUATED, _deepearth_absent(inputs)
    outcomes, parts = [], []
    for group, scores in vision["model"].items():
        if scores.get("top1_all") is None:
            continue
        best_name, best = max(((b, vision["baselines"][b][group]["top1_all"]) for b in vision["baselines"]
                               if vision["baselines"][b].get(group, {}).get("top1_all") is not None),
                              key=lambda item: item[1])
        comparison = compare(binomial(scores["top1_all"], scores["n"]), binomial(best, scores["n"]))
        outcomes.append(comparison.outcome)
        parts.append(f"{group} (n={scores['n']}) {fmt(scores['top1_all'])} vs {best_name} {fmt(best)} "
                     f"({fmt_diff(comparison)}, {_outcome_word(comparison)})")
    return (verdict(outcomes, "higher"),
            "top-1 (species unseen in training count as errors): " + "; ".join(parts)
            + " (± binomial standard errors)")


@hypothesis("004", ("the language classifier scores high but means little: its input is one vector per species, so it "
             "identifies the species by lookup"))
def seed004_language_lookup(inputs: ReportInputs) -> tuple[str, str]:
    language, vision = _classifier(inputs, "language"), _classifier(inputs, "vision")
    if language is None or vision is None:
        return NOT_EVALUATED, _deepearth_absent(inputs)
    lang, vis = language["model"]["test"], vision["model"]["test"]
    if lang.get("top1") is None or vis.get("top1") is None:
        return NOT_EVALUATED, "no test observation of a species seen in training"
    comparison = compare(binomial(lang["top1"], lang["n_seen"]), binomial(vis["top1"], vis["n_seen"]))
    return (verdict([comparison.outcome], "higher"),
            f"top-1 over test observations of trained species: language {fmt(lang['top1'])} (n={lang['n_seen']}) "
            f"vs vision {fmt(vis['top1'])} (n={vis['n_seen']}), difference {fmt_diff(comparison)} "
            f"({_outcome_word(comparison)})")


@hypothesis("004", ("cross-modal reconstruction links vision to language: species never trained on are identified from "
             "vision embeddings above chance"))
def seed004_zero_shot(inputs: ReportInputs) -> tuple[str, str]:
    zero_shot = ((inputs.deepearth.metrics or {}).get("autoencoder") or {}).get("zero_shot")
    if not zero_shot:
        return NOT_EVALUATED, _deepearth_absent(inputs)
    outcomes, parts = [], []
    for reading, scores in zero_shot.items():
        held = scores["held_out_only"]
        if held.get("top1") is None:
            continue
        comparison = compare(binomial(held["top1"], held["n"]), Estimate(held["chance_top1"], 0.0))
        outcomes.append(comparison.outcome)
        parts.append(f"{reading}: top-1 {fmt(held['top1'])} among {held['candidates']} held-out species vs chance "
                     f"{fmt(held['chance_top1'])} (n={held['n']}, {_outcome_word(comparison)})")
    return verdict(outcomes, "higher"), "; ".join(parts)


def findings(inputs: ReportInputs) -> list[Finding]:
    """Every seed hypothesis, in seed order, judged on ``inputs``; one whose input has another format than
    its stage writes today is "not evaluated" with the field that is missing."""
    return [judge(inputs) for judge in HYPOTHESES]
