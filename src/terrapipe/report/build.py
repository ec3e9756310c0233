"""Inputs -> reports/: collect the result files, judge the hypotheses, draw the figures, write both documents.

The whole folder is built in a temporary sibling and renamed into place (terrapipe.atomic), so a failed
report leaves the previous one and a reader never sees figures from one run beside text from another.
"""
from __future__ import annotations

from pathlib import Path

from terrapipe import paths

HTML, MARKDOWN = "index.html", "report.md"


def write_report(params, root: Path = Path("."), out_dir: Path | None = None) -> dict:
    """Write ``out_dir`` (default reports/ under ``root``); return a summary (files, verdicts, missing inputs)."""
    from terrapipe.atomic import atomic_path
    from terrapipe.report.collect import collect, describe_missing
    from terrapipe.report.document import FIGURES_DIR, build_document, image_files, to_html, to_markdown
    from terrapipe.report.figures import draw_all
    from terrapipe.report.hypotheses import findings

    inputs = collect(Path(root), params)
    judged = findings(inputs)
    with atomic_path(Path(out_dir or Path(root) / paths.REPORTS), directory=True) as tmp:
        figures = draw_all(inputs, tmp / FIGURES_DIR)
        document = build_document(inputs, judged, figures)
        (tmp / MARKDOWN).write_text(to_markdown(document))
        (tmp / HTML).write_text(to_html(document))
    missing = [m for part in (*inputs.pretrain, *inputs.evaluate, inputs.earth4d, inputs.deepearth, *inputs.splits,
                              inputs.quality) for m in part.missing]
    return {"figures": sorted(image_files(document)), "verdicts": {f"{f.seed}: {f.claim}": f.verdict for f in judged},
            "missing": describe_missing(missing)}
