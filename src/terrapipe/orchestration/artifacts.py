"""Keyed Prefect artifacts from the pipeline's outputs: the report, a metrics table, training progress and
the data-quality summary. Keyed artifacts are the ones the UI's Artifacts page lists (latest per key).

The builders are pure (files in, Markdown or table rows out) so tests read them without a server; the
``publish_*`` functions hand them to Prefect inside a flow or task run.
"""
from __future__ import annotations

import re
from pathlib import Path

from terrapipe import paths
from terrapipe.orchestration.project import experiment_metrics, read_json

REPORT_KEY, METRICS_KEY, PROGRESS_KEY, QUALITY_KEY = "report", "metrics", "training-progress", "data-quality"


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key from free text: lowercase letters, digits and dashes only."""
    key = re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")
    if not key:
        raise ValueError(f"no artifact key can be made from {parts!r}")
    return key


def _number(value):
    return round(value, 4) if isinstance(value, float) else value


def metrics_rows(metrics_by_experiment: dict[str, dict]) -> list[dict]:
    """One row per experiment: final pretraining losses, then each task's encoder score and gain over random.

    ``metrics_by_experiment``: key -> {"pretrain": pretrain metrics.json, "evaluate": evaluate metrics.json}.
    Every row has the same columns (missing values empty), as a table artifact needs.
    """
    rows = []
    for key, found in metrics_by_experiment.items():
        row = {"experiment": key}
        pretrain = found.get("pretrain") or {}
        row["steps"] = pretrain.get("steps")
        for name, value in (pretrain.get("final") or {}).items():
            row[f"final {name}"] = _number(value)
        for task, result in ((found.get("evaluate") or {}).get("tasks") or {}).items():
            row[f"{task} {result.get('metric', 'score')}"] = _number(result.get("encoder"))
            row[f"{task} gain over random"] = _number(result.get("gain_over_random"))
        rows.append(row)
    columns = list(dict.fromkeys(c for row in rows for c in row))
    return [{c: row.get(c) for c in columns} for row in rows]


def quality_markdown(report: dict | None, docs: Path, failure: str | None = None) -> str:
    """The data-quality summary: verdict, expectations per group, the failed ones, a link to the Data Docs."""
    docs = Path(docs).resolve()
    link = f"[Data Docs]({docs.as_uri()})" if docs.is_file() else f"Data Docs: not built ({docs} is missing)"
    lines = ["# Data quality", ""]
    if failure is not None:
        lines += ["**Validation failed: nothing trains on this data.**", "", "```", failure.strip(), "```", ""]
    if report is None:
        return "\n".join(lines + [link, ""])
    if failure is None:
        lines += [f"**{'All expectations passed.' if report.get('success') else 'Some expectations failed.'}**", ""]
    lines += ["| group | data sets | expectations | failed |", "|---|---|---|---|"]
    failed = []
    for group, datasets in (report.get("groups") or {}).items():
        results = [(name, e) for name, ds in datasets.items() for e in ds.get("expectations", [])]
        bad = [(name, e) for name, e in results if not e.get("success")]
        failed += [(group, name, e) for name, e in bad]
        lines.append(f"| {group} | {len(datasets)} | {len(results)} | {len(bad)} |")
    if failed:
        lines += ["", "Failed expectations:", ""]
        lines += [f"- {group} / {name}: {e.get('expectation')} on `{e.get('column')}` "
                  f"({e.get('unexpected_count')} of {e.get('element_count')} rows): {e.get('why', '')}"
                  for group, name, e in failed]
    return "\n".join(lines + ["", link, ""])


def publish_quality(root: Path = Path("."), failure: str | None = None) -> None:
    """data/quality/report.json (or the validate failure) as the ``data-quality`` Markdown artifact."""
    from prefect.artifacts import create_markdown_artifact

    report = None if failure is not None else read_json(Path(root) / paths.VALIDATION_REPORT)
    create_markdown_artifact(key=QUALITY_KEY, markdown=quality_markdown(report, Path(root) / paths.DATA_DOCS /
                                                                        "index.html", failure),
                             description="validate: Great Expectations results and the Data Docs")


def publish_report(root: Path = Path("."), key: str = REPORT_KEY) -> bool:
    """reports/report.md as a Markdown artifact; False when the project has no report yet."""
    from prefect.artifacts import create_markdown_artifact

    report = Path(root) / paths.REPORTS / "report.md"
    if not report.is_file():
        return False
    create_markdown_artifact(key=key, markdown=report.read_text(), description=f"{report} (and index.html beside it)")
    return True


def publish_metrics(experiments: list[str], root: Path = Path("."), key: str = METRICS_KEY,
                    found: dict[str, dict] | None = None) -> list[dict]:
    """The metrics table artifact of ``experiments`` (read from their metrics.json unless ``found`` is given)."""
    from prefect.artifacts import create_table_artifact

    rows = metrics_rows(found if found is not None else {k: experiment_metrics(k, root) for k in experiments})
    create_table_artifact(key=key, table=rows, description="final pretraining losses and downstream scores "
                          "(models/pretrain/KEY/metrics.json, models/evaluate/KEY/metrics.json)")
    return rows


class Progress:
    """The ``training-progress`` artifact: share of the experiments whose training and evaluation finished."""

    def __init__(self, total: int, key: str = PROGRESS_KEY):
        from prefect.artifacts import create_progress_artifact

        self.total, self.done = total, 0
        self.id = create_progress_artifact(progress=0.0, key=key,
                                           description=f"experiments trained and evaluated (of {total})")

    def advance(self) -> float:
        from prefect.artifacts import update_progress_artifact

        self.done += 1
        progress = 100.0 * self.done / self.total
        update_progress_artifact(artifact_id=self.id, progress=progress)
        return progress
