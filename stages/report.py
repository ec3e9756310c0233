"""DVC stage report: every result of the default experiment set -> reports/index.html, report.md, figures/.

Reads the pretraining, evaluation, Earth4D, DeepEarth, split and validation outputs; a missing one is
named in its section (with the stage that makes it) instead of failing the report. reports/ is
replaced whole when the report is complete.
"""
import _interpreter  # noqa: F401,I001 - first: re-runs this script with the project's Python if needed
import logging

from terrapipe import paths
from terrapipe.stage import run_stage

log = logging.getLogger("terrapipe")


def main(args):
    from terrapipe.report.build import HTML, write_report

    summary = write_report(args.params_obj)
    for sentence in summary["missing"]:
        log.warning("report: %s", sentence)
    for claim, verdict in summary["verdicts"].items():
        log.info("seed %s -> %s", claim, verdict)
    log.info("report: %s (%d figures)", paths.REPORTS / HTML, len(summary["figures"]))


if __name__ == "__main__":
    run_stage(main, __doc__)
