"""`sagan report`: Table 1, figures and the run history as Markdown and HTML."""
from __future__ import annotations

import argparse

from sagan import paths
from sagan.params import Params

HELP = "Table 1, figures and run history as md + html"
PARAM_KEYS = ("report", "mlflow")  # mlflow: the run-history table reads the experiment


def run(params: Params, args: argparse.Namespace) -> None:
    from sagan.report.build import build_report
    from sagan.study.summary import params_spread, report_sections

    spread = params_spread(params)
    build_report(params, paths.RUN, report_sections(relative_to=paths.REPORTS_DIR),
                 spread.table_row() if spread else None)
