"""The report as one structure (sections of paragraphs, tables, images and lists), rendered to Markdown
and to self-contained HTML from the same blocks, so the two never disagree.

Inline text may hold `code`, **bold** and [links](href); images are file names under figures/. Nothing
time-dependent is written, so the same inputs give the same bytes.
"""
from __future__ import annotations

import html
import logging
import re
from dataclasses import dataclass, field

from terrapipe import paths
from terrapipe.report.collect import FORMAT_ERRORS, ReportInputs, describe_missing, format_problem
from terrapipe.report.figures import (
    BANDSET_FIGURE,
    DEEPEARTH_FIGURE,
    DOWNSTREAM_FIGURE,
    EARTH4D_FIGURE,
    ERA5_FIGURE,
    experiment_codes,
)
from terrapipe.report.hypotheses import Finding, fmt, patch_chance_ratio
from terrapipe.report.stats import Z

log = logging.getLogger("terrapipe")
FIGURES_DIR = "figures"
DATA_DOCS_LINK = f"../{paths.DATA_DOCS.as_posix()}/index.html"   # from reports/index.html


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""


@dataclass(frozen=True)
class Image:
    file: str            # under figures/
    caption: str


@dataclass(frozen=True)
class Section:
    title: str
    intro: str
    blocks: tuple = ()
    subsections: tuple[Section, ...] = ()


@dataclass(frozen=True)
class Document:
    title: str
    intro: tuple[str, ...]
    sections: tuple[Section, ...] = field(default_factory=tuple)


# ------------------------------------------------------------------------------------------ rendering

def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_block(block) -> str:
    if isinstance(block, Paragraph):
        return block.text
    if isinstance(block, Bullets):
        return "\n".join(f"- {item}" for item in block.items)
    if isinstance(block, Table):
        lines = [f"| {' | '.join(map(_md_cell, block.header))} |", f"|{'---|' * len(block.header)}"]
        lines += [f"| {' | '.join(map(_md_cell, row))} |" for row in block.rows]
        return (f"{block.caption}\n\n" if block.caption else "") + "\n".join(lines)
    if isinstance(block, Image):
        return f"![{block.caption}]({FIGURES_DIR}/{block.file})\n\n*{block.caption}*"
    raise TypeError(f"unknown block {block!r}")


def _md_section(section: Section, level: int) -> list[str]:
    parts = [f"{'#' * level} {section.title}", section.intro, *(_md_block(b) for b in section.blocks)]
    for sub in section.subsections:
        parts += _md_section(sub, level + 1)
    return parts


def to_markdown(doc: Document) -> str:
    parts = [f"# {doc.title}", *doc.intro]
    for section in doc.sections:
        parts += _md_section(section, 2)
    return "\n\n".join(p for p in parts if p) + "\n"


_INLINE = re.compile(r"`([^`]+)`|\*\*([^*]+)\*\*|\[([^\]]+)\]\(([^)\s]+)\)")


def inline_html(text: str) -> str:
    """Escape ``text`` and turn `code`, **bold** and [text](href) into HTML."""
    out, last = [], 0
    for match in _INLINE.finditer(text):
        out.append(html.escape(text[last:match.start()]))
        code, bold, label, href = match.groups()
        if code is not None:
            out.append(f"<code>{html.escape(code)}</code>")
        elif bold is not None:
            out.append(f"<strong>{html.escape(bold)}</strong>")
        else:
            out.append(f'<a href="{html.escape(href)}">{html.escape(label)}</a>')
        last = match.end()
    out.append(html.escape(text[last:]))
    return "".join(out)


def _html_block(block) -> str:
    if isinstance(block, Paragraph):
        return f"<p>{inline_html(block.text)}</p>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{inline_html(i)}</li>" for i in block.items) + "</ul>"
    if isinstance(block, Table):
        caption = f"<caption>{inline_html(block.caption)}</caption>" if block.caption else ""
        head = "".join(f"<th>{inline_html(h)}</th>" for h in block.header)
        body = "".join("<tr>" + "".join(f"<td>{inline_html(c)}</td>" for c in row) + "</tr>" for row in block.rows)
        return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if isinstance(block, Image):
        return (f'<figure><img src="{FIGURES_DIR}/{html.escape(block.file)}" alt="{html.escape(block.caption)}">'
                f"<figcaption>{inline_html(block.caption)}</figcaption></figure>")
    raise TypeError(f"unknown block {block!r}")


def _anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def _html_section(section: Section, level: int) -> str:
    parts = [f'<h{level} id="{_anchor(section.title)}">{inline_html(section.title)}</h{level}>',
             f"<p class=\"intro\">{inline_html(section.intro)}</p>" if section.intro else "",
             *(_html_block(b) for b in section.blocks), *(_html_section(s, level + 1) for s in section.subsections)]
    return "<section>" + "\n".join(p for p in parts if p) + "</section>"


CSS = """body{font-family:DejaVu Sans,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}table{border-collapse:collapse;margin:1em 0;font-size:0.85em}th,td{border:1px solid #ccc;
padding:3px 7px;text-align:left}th{background:#f2f2f2}caption{text-align:left;font-style:italic;padding:3px 0}
figure{margin:1em 0}img{max-width:100%}figcaption{font-size:0.85em;color:#555}.intro{color:#333}
code{background:#f5f5f5;padding:0 2px;font-size:0.9em}nav li{margin:0}"""


def to_html(doc: Document) -> str:
    nav = "<nav><ul>" + "".join(f'<li><a href="#{_anchor(s.title)}">{inline_html(s.title)}</a></li>'
                                for s in doc.sections) + "</ul></nav>"
    body = "\n".join(_html_section(s, 2) for s in doc.sections)
    intro = "".join(f"<p>{inline_html(p)}</p>" for p in doc.intro)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(doc.title)}</title>'
            f"<style>{CSS}</style></head><body><h1>{html.escape(doc.title)}</h1>{intro}{nav}\n{body}\n</body></html>\n")


def image_files(doc: Document) -> list[str]:
    """Every figure file the document references."""
    def walk(section):
        yield from (b.file for b in section.blocks if isinstance(b, Image))
        for sub in section.subsections:
            yield from walk(sub)
    return [f for s in doc.sections for f in walk(s)]


# ------------------------------------------------------------------------------------------ content

def _missing_block(missing) -> tuple:
    sentences = describe_missing(missing)
    return (Paragraph("**Missing inputs.** " + " ".join(f"{s}." for s in sentences)),) if sentences else ()


def _image(figures: set[str], name: str, caption: str) -> tuple:
    return (Image(name, caption),) if name in figures else ()


def _pm(value: float | None, spread: float | None) -> str:
    return fmt(value) if spread is None or value is None else f"{fmt(value)} ± {fmt(spread)}"


def hypotheses_section(findings: list[Finding]) -> Section:
    rows = tuple((f.seed, f.claim, f.verdict) for f in findings)
    return Section(
        "Seed hypotheses",
        "Each seed document's claim, and one sentence with what this run's numbers say about it. "
        f"A difference counts only when it is larger than {Z:g} times its spread (the spread of each "
        "kind of number is defined in its section); otherwise the verdict is \"inconclusive\". Seed 003 "
        "describes how experiments are built, not a result, so it has no row.",
        (Table(("seed", "claim", "verdict"), rows),
         Bullets(tuple(f"**Seed {f.seed}**, {f.claim}. {f.sentence}." for f in findings))))


def experiments_section(inputs: ReportInputs) -> Section:
    codes = experiment_codes(inputs)
    rows = tuple((codes[r.key], f"`{r.key}`", r.about or "(no description)", str(r.s2_bandsets), r.era5_kind,
                  str((r.metrics or {}).get("steps", "not trained"))) for r in inputs.pretrain)
    return Section(
        "Experiments",
        "The default experiment set: params.yaml `pretrain.run`, trained by the `pretrain@KEY` stages and scored "
        "by `evaluate@KEY`. The code (E1, E2, ...) names each experiment in the figures.",
        (Table(("code", "experiment", "what it tests", "S2 bandsets", "ERA5 objective", "steps"), rows),))


def pretrain_section(inputs: ReportInputs, figures: set[str]) -> Section:
    codes = experiment_codes(inputs)
    columns = ["total", "patch_disc", "info_nce", "era5_regression_mse", "era5_alignment_info_nce"]
    present = [c for c in columns if any(r.curves is not None and c in r.curves for r in inputs.pretrain)]
    rows = []
    for run in inputs.pretrain:
        if run.curves is None:
            rows.append((codes[run.key], *["not trained"] * len(present)))
            continue
        rows.append((codes[run.key], *(f"{fmt(float(run.curves[c][0]))} -> {_final(run, c)}" if c in run.curves else "-"
                                       for c in present), _chance_ratio(run)))
    window = inputs.pretrain[0].window if inputs.pretrain else 10
    blocks = (*_missing_block(m for r in inputs.pretrain for m in r.missing),
              Table(("code", *present, "patch_disc / chance"), tuple(rows),
                    f"Loss at the first step -> mean of the last {window} steps ± its standard error "
                    "(step-to-step std / sqrt(steps)). patch_disc / chance: the final patch loss over "
                    "`patch_disc_chance`, the loss of predictions that cannot tell the decoded tokens apart; "
                    "near 1, the patch objective has taught the encoder nothing (nor do comparisons of such runs "
                    "measure what the objective learns)."),
              *_image(figures, ERA5_FIGURE, "Seed 000: InfoNCE over optimizer steps for each ERA5 variant in the "
                      "set. Seed 000's exp 15 saw this loss rise with longer training; the pooled-ERA5 "
                      "alternatives should not."),
              *_image(figures, BANDSET_FIGURE, "Seed 001: the S2 bandset variants' InfoNCE and patch "
                      "discrimination loss over steps (the downstream effect is on sample-eurosat below)."))
    return Section(
        "Pretraining losses",
        "Self-supervised LatentMIM losses logged per optimizer step (lower is better). `total` is what is "
        "optimized; `patch_disc` is the per-token patch discrimination of the masked tokens; `info_nce` "
        "contrasts the pooled vectors of the two masked views of each sample (temperature 0.1); "
        "`era5_regression_mse` / `era5_alignment_info_nce` are seed 000's pooled ERA5 objectives. Losses "
        "of experiments with different tokenizations measure different tasks, so compare their trends, "
        "not their levels.", blocks)


TASK_METRIC_TEXT = {
    "knn_accuracy": "share of test chips whose cosine k-nearest-neighbour vote (k = 20) among the training "
                    "chips' embeddings gives the right class",
    "probe_micro_f1": "micro-averaged F1 of a linear probe per pixel (for one label per pixel: pixel accuracy)",
    "probe_miou": "mean over classes of intersection over union of a per-patch linear segmentation probe",
}


def _chance_ratio(run) -> str:
    """Final patch_disc / its chance level, by modality in brackets (modalities the loss never scored left out)."""
    total = patch_chance_ratio(run.curves, run.window)
    if total is None:
        return "-"
    modalities = [c.split("/", 1)[1] for c in run.curves if c.startswith("patch_disc_chance/")]
    ratios = [(m, patch_chance_ratio(run.curves, run.window, m)) for m in modalities]
    return f"{total:.2f} (" + ", ".join(f"{m} {r:.2f}" for m, r in ratios if r is not None) + ")"


def _final(run, column: str) -> str:
    from terrapipe.report.stats import window_mean

    if run.curves is None or column not in run.curves:
        return "not trained" if run.curves is None else "-"
    final = window_mean(run.curves[column], run.window)
    return _pm(final.value, final.spread)


def overview_table(inputs: ReportInputs, tasks: list[str]) -> Table:
    """Every experiment's final losses and downstream metrics side by side, then the encoder-free baselines."""
    codes = experiment_codes(inputs)
    evaluations = {e.key: e for e in inputs.evaluate}
    rows = []
    for run in inputs.pretrain:
        results = evaluations[run.key].tasks
        rows.append((codes[run.key], _final(run, "total"), _final(run, "info_nce"),
                     *(f"{_pm(results[t].values['encoder'], results[t].encoder_spread)} (random "
                       f"{_pm(results[t].values['random_encoder'], results[t].random_encoder_std)})"
                       if t in results else "not evaluated"
                       for t in tasks)))
    for name, label in (("raw_pixels", "raw pixels (baseline)"), ("majority", "majority class (baseline)")):
        first = [next((e.tasks[t].values[name] for e in inputs.evaluate if t in e.tasks), None) for t in tasks]
        rows.append((label, "", "", *(fmt(v) for v in first)))
    metrics = {t: next(e.tasks[t].metric for e in inputs.evaluate if t in e.tasks) for t in tasks}
    return Table(("code", "final total loss", "final InfoNCE", *(f"{t} ({metrics[t]})" for t in tasks)), tuple(rows),
                 "Final losses (mean of the last steps ± standard error) beside each task's metric (± bootstrap std; "
                 "in brackets the same architecture with random weights).")


def downstream_section(inputs: ReportInputs, figures: set[str]) -> Section:
    codes = experiment_codes(inputs)
    missing = [m for e in inputs.evaluate for m in e.missing]
    absent = [e.key for e in inputs.evaluate if not e.tasks]
    tasks = list(dict.fromkeys(t for e in inputs.evaluate for t in e.tasks))
    subsections = []
    for task in tasks:
        runs = [e for e in inputs.evaluate if task in e.tasks]
        metric = runs[0].tasks[task].metric
        rows = tuple((codes[e.key], _pm(r.values["encoder"], r.encoder_spread),
                      _pm(r.values["random_encoder"], r.random_encoder_std),
                      fmt(r.values["raw_pixels"]), fmt(r.values["majority"]),
                      fmt(r.gain_over_random) if r.gain_over_random is not None else "n/a")
                     for e in runs for r in [e.tasks[task]])
        subsections.append(Section(f"sample-{task}", f"`{metric}`: {TASK_METRIC_TEXT.get(metric, metric)}.",
                                   (Table(("code", "pretrained encoder", "random encoder", "raw pixels",
                                           "majority class", "gain over random"), rows),)))
    blocks = (*_missing_block(missing),
              *((Paragraph("Not evaluated: " + ", ".join(f"`{k}`" for k in absent) + "."),) if absent else ()),
              *((overview_table(inputs, tasks),) if tasks else ()),
              *_image(figures, DOWNSTREAM_FIGURE, "Downstream metric per task and experiment (higher is better); "
                      "error bars: bootstrap std over test samples."))
    return Section(
        "Downstream evaluation",
        "Each pretrained encoder is frozen and scored on the sample tasks (stand-ins for m-eurosat, m-so2sat, "
        "PASTIS and MADOS, in their real formats). Baselines, scored the same way: the same architecture with "
        "random weights (random encoder: the mean over several random initializations ± their std, a "
        "run-to-run spread), the raw band values (raw pixels), and always predicting the most frequent "
        "training class (majority class); gain over random = pretrained - random encoder. The pretrained "
        "encoder's ± is the std of its metric over 1000 bootstrap resamples of the test samples (the "
        "evaluation's sampling noise; pixels of PASTIS and MADOS are resampled one by one, so there it is a "
        "lower bound; each experiment is pretrained once, so its seed-to-seed spread is not measured).",
        blocks, tuple(subsections))


def earth4d_section(inputs: ReportInputs, figures: set[str]) -> Section:
    metrics = inputs.earth4d.metrics or {}
    holdouts = metrics.get("holdouts") or {}
    rows = tuple((name, str(h["rows"]), f"{h['earth4d']['mae_over_range_pct']:.2f}",
                  f"{h['knn_geodesic']['mae_over_range_pct']:.2f}", f"{h['mean_embedding']['mae_over_range_pct']:.2f}",
                  fmt(h["earth4d"]["cosine_similarity_mean"]), fmt(h["earth4d"]["r2_uniform_average"]),
                  "yes" if h["earth4d_beats_knn"] else "no") for name, h in holdouts.items())
    blocks = (*_missing_block(inputs.earth4d.missing),
              *((Table(("holdout", "points", "Earth4D", "geodesic kNN", "mean embedding", "Earth4D cosine",
                        "Earth4D R²", "beats kNN"), rows,
                       "100 x MAE / 2 in % (lower is better; DeepEarth's \"MAPE\"), then Earth4D's mean cosine "
                       "similarity and R² (uniform over the 64 dimensions)."),) if rows else ()),
              *_image(figures, EARTH4D_FIGURE, "Error per holdout: Earth4D beside the two baselines."),
              *_image(figures, "earth4d_training_curves.png", "Training curves: MSE, error per holdout and "
                      "learning rate over epochs."),
              *_image(figures, "earth4d_roi_rgb.png", "A region of interest: AlphaEarth (truth) and Earth4D's "
                      "prediction, each 64-D embedding shown as RGB through a PCA fitted on the truth."),
              *_image(figures, "earth4d_roi_error.png", "Per-point error in the region (top of the scale = as "
                      "wrong as the mean embedding)."),
              *_image(figures, "earth4d_roi_rgb_progression.gif", "The RGB map epoch by epoch."),
              *_image(figures, "earth4d_roi_error_progression.gif", "The error map epoch by epoch."))
    return Section(
        "Earth4D -> AlphaEarth (seed 002)",
        "A multi-resolution hash encoding of (latitude, longitude, elevation, time) and an MLP predict the 64-D "
        "AlphaEarth embedding of a place and year. Holdouts: `random` points among the training rows "
        "(interpolation), `spatial_region_k` / `spatial_all` square regions never trained on, `temporal` "
        "the held-out year(s). Baselines: the training mean embedding everywhere, and the mean of the 20 "
        "nearest training points by great-circle distance (location only). One run: no spread.", blocks)


def _classifier_table(mode: str, scores: dict) -> Table:
    baselines = scores["baselines"]
    rows = tuple((group, str(s["n"]), fmt(s.get("unseen_share")), fmt(s.get("top1")), fmt(s.get("top1_all")),
                  fmt(s.get("top5_all")), *(fmt(baselines[b].get(group, {}).get("top1_all")) for b in baselines))
                 for group, s in scores["model"].items())
    note = f" {scores['note']}" if scores.get("note") else ""
    return Table(("split reason", "observations", "unseen-species share", "top-1 (trained species)",
                  "top-1 (all)", "top-5 (all)", *(f"{b} top-1 (all)" for b in baselines)), rows,
                 f"{mode} classifier: {scores['train_rows']} training and {scores['test_rows']} test observations, "
                 f"{scores['species_trained']} species trained.{note}")


def deepearth_section(inputs: ReportInputs, figures: set[str]) -> Section:
    metrics = inputs.deepearth.metrics or {}
    blocks = list(_missing_block(inputs.deepearth.missing))
    blocks += [_classifier_table(mode, scores) for mode, scores in (metrics.get("classifiers") or {}).items()]
    autoencoder = metrics.get("autoencoder") or {}
    if autoencoder.get("reconstruction"):
        rows = tuple((group, str(r["n"]), *(f"{fmt(r[k]['cosine'])} ({fmt(r[k]['mse'])} vs {fmt(r[k]['mse_mean_baseline'])})"
                                            for k in ("language_from_vision", "vision_from_language")))
                     for group, r in autoencoder["reconstruction"].items())
        blocks.append(Table(("split reason", "observations", "language from vision", "vision from language"), rows,
                            "Cross-modal autoencoder: cosine of the reconstruction (MSE vs the training-mean "
                            "baseline's MSE, standardized units)."))
    if autoencoder.get("zero_shot"):
        rows = tuple((reading, among, str(s["n"]), str(s["candidates"]), fmt(s["top1"]), fmt(s["chance_top1"]),
                      fmt(s["top5"]), fmt(s["chance_top5"]))
                     for reading, scores in autoencoder["zero_shot"].items() for among, s in scores.items())
        blocks.append(Table(("reading", "candidates", "observations", "species", "top-1", "chance top-1", "top-5",
                             "chance top-5"), rows,
                            f"Zero-shot: {autoencoder.get('held_out_species', '?')} species never trained on, "
                            "identified from their vision embeddings among the candidates' language embeddings; "
                            "`decoded`: the language embedding decoded from the vision code, nearest by cosine; "
                            "`shared`: the vision code nearest to each species' language code."))
    blocks += _image(figures, DEEPEARTH_FIGURE, "Top-1 per split reason: the two classifiers and the vision "
                     "classifier's baselines.")
    return Section(
        "DeepEarth classifiers (seed 004)",
        "Species classifiers on DeepEarth's spatiotemporal split: trained on observations before the held-out "
        "year outside the test regions, tested on the held-out year (`temporal_test`) and on each spatial "
        "region (`spatial_test_region_k`); `test` is all of them. Top-1 (trained species) ignores test "
        "observations of species absent from training; top-1 (all) counts them as errors. Baselines: the "
        "most frequent training species (majority) and the nearest class centroid of the embeddings. A "
        "vision accuracy p over n observations has a binomial spread sqrt(p(1-p)/n).", tuple(blocks))


def splits_section(inputs: ReportInputs, figures: set[str]) -> Section:
    subsections = []
    for split in inputs.splits:
        blocks = list(_missing_block(split.missing))
        doc = split.document or {}
        stats = doc.get("split_statistics") or {}
        if stats:
            regions = stats.get("spatial_test_count_by_region") or {}
            blocks.append(Table(("total", "train", "test", "temporal test", "spatial test", "per region"),
                                ((str(stats.get("total_observations")), str(stats.get("train_count")),
                                  str(stats.get("test_count")), str(stats.get("temporal_test_count")),
                                  str(stats.get("spatial_test_count")),
                                  ", ".join(f"{k}: {v}" for k, v in regions.items()) or "-"),)))
        strategy = doc.get("split_strategy") or {}
        temporal, spatial = strategy.get("temporal_split") or {}, strategy.get("spatial_split") or {}
        if strategy:
            blocks.append(Paragraph(
                f"Test years: {temporal.get('test_years') or 'none'}. {spatial.get('num_test_regions', '?')} test "
                f"regions of {spatial.get('region_size_km', '?')} km at least {spatial.get('min_distance_km', '?')} "
                "km apart."))
        blocks += _image(figures, f"split_{split.dataset}.png", f"{split.dataset}: train and test points on the map.")
        subsections.append(Section(split.dataset, (doc.get("dataset_info") or {}).get("description", ""), tuple(blocks)))
    return Section(
        "Train/test splits",
        "Every point data set is split the DeepEarth way: held-out years plus square regions far enough apart "
        "that no training point is near a test point. `sites` (the imagery sites) is spatial only; its "
        "train sites alone set the normalization statistics.", (), tuple(subsections))


def quality_section(inputs: ReportInputs) -> Section:
    report = inputs.quality.report
    blocks = list(_missing_block(inputs.quality.missing))
    if report is not None:
        rows = []
        for group, data_sets in (report.get("groups") or {}).items():
            for name, entry in data_sets.items():
                expectations = entry.get("expectations") or []
                failed = [e for e in expectations if not e.get("success")]
                rows.append((group, f"`{name}`", f"`{entry.get('source', '')}`", str(entry.get("rows", "")),
                             str(len(expectations)), str(len(failed)) if "skipped" not in entry else entry["skipped"]))
        total = sum(int(r[4]) for r in rows)
        blocks.append(Paragraph(f"Validation {'passed' if report.get('success') else 'FAILED'}: {len(rows)} data "
                                f"sets, {total} expectations."))
        blocks.append(Table(("group", "data set", "file", "rows", "expectations", "failed"), tuple(rows)))
    if inputs.quality.docs_index is not None:
        blocks.append(Paragraph(f"Every expectation with its observed value: [the Great Expectations Data Docs]"
                                f"({DATA_DOCS_LINK}) (written by `validate`, not tracked by DVC)."))
    return Section(
        "Data quality",
        "Great Expectations suites checked every processed data set before anything trained (stage `validate`): "
        "grids and CRS of the raw files, physical ranges, missing shares, normalization, and that the splits "
        "keep test points out of training.", tuple(blocks))


def build_document(inputs: ReportInputs, findings: list[Finding], figures: set[str]) -> Document:
    """The whole report; images are referenced only when ``figures`` holds them."""
    intro = ("What the pipeline's last `dvc repro` produced for the default experiment set, read from the "
             "stages' result files (stage `report`). Every section says what its numbers mean and which stage "
             "wrote them; where an input is missing, the section names the stage that makes it.",
             "Experiments: " + ", ".join(f"`{k}`" for k in inputs.run) + ".")
    sections = (
        ("Seed hypotheses", "", lambda: hypotheses_section(findings)),
        ("Experiments", "params.yaml", lambda: experiments_section(inputs)),
        ("Pretraining losses", "models/pretrain/", lambda: pretrain_section(inputs, figures)),
        ("Downstream evaluation", "models/evaluate/", lambda: downstream_section(inputs, figures)),
        ("Earth4D -> AlphaEarth (seed 002)", f"{paths.EARTH4D}/", lambda: earth4d_section(inputs, figures)),
        ("DeepEarth classifiers (seed 004)", f"{paths.DEEPEARTH}/", lambda: deepearth_section(inputs, figures)),
        ("Train/test splits", f"{paths.SPLITS}/", lambda: splits_section(inputs, figures)),
        ("Data quality", str(paths.VALIDATION_REPORT), lambda: quality_section(inputs)))
    return Document("terrapipe report", intro, tuple(_guarded(*section) for section in sections))


def _guarded(title: str, source: str, build) -> Section:
    """The section, or one that says its inputs have another format than the report reads (never a crash)."""
    try:
        return build()
    except FORMAT_ERRORS as exc:
        log.warning("report: section %r skipped: %s", title, format_problem(exc))
        return Section(title, "", (Paragraph(
            f"**Could not read `{source}`**: {format_problem(exc)}. Re-run the stage that writes it; if it is current, "
            "that stage and `terrapipe.report` disagree on its format."),))

