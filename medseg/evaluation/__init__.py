"""Evaluation of label maps against references: Dice, HD95 and surface Dice (NSD) per class per case.

``evaluate(prediction, reference)`` -> list of CaseScores; ``summarize`` / ``format_summary`` /
``write_metrics_csv`` for the tables; ``class_dice`` for Dice alone (training's periodic
validation). Empty-mask rules are in :mod:`medseg.evaluation.metrics`.
"""

from __future__ import annotations

from medseg.evaluation.evaluate import CaseScores, evaluate, evaluate_pair, evaluate_volumes
from medseg.evaluation.metrics import ClassMetrics, class_dice, class_metrics
from medseg.evaluation.pairs import CasePair, match_cases
from medseg.evaluation.report import ClassSummary, format_summary, metrics_csv, summarize, write_metrics_csv

__all__ = [
    "CasePair",
    "CaseScores",
    "ClassMetrics",
    "ClassSummary",
    "class_dice",
    "class_metrics",
    "evaluate",
    "evaluate_pair",
    "evaluate_volumes",
    "format_summary",
    "match_cases",
    "metrics_csv",
    "summarize",
    "write_metrics_csv",
]
