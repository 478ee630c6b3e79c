"""`sagan report`: Table 1, figures and the run history as Markdown and HTML."""
from __future__ import annotations

import argparse

from sagan.params import Params

HELP = "Table 1, figures and run history as md + html"
PARAM_KEYS = ("report", "mlflow")  # mlflow: the run-history table reads the experiment


def run(params: Params, args: argparse.Namespace) -> None:
    from sagan.report.build import build_report

    build_report(params)
