"""Metrics tables: the per-case CSV and the per-class summary (mean / median, empty-case counts)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg.evaluation.evaluate import CaseScores
from medseg.evaluation.metrics import BOTH, NEITHER
from medseg.io.atomic import atomic_write_text

COLUMNS = ("case", "label", "name", "dice", "hd95_mm", "nsd", "presence", "reference_voxels", "prediction_voxels")


def _number(value: float) -> str:
    return "inf" if math.isinf(value) else ("nan" if math.isnan(value) else f"{value:.6g}")


def metrics_csv(results: Sequence[CaseScores], names: Mapping[int, str] | None = None) -> str:
    """One row per case and class; infinite HD95 written as ``inf``."""
    names = names or {}
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for result in results:
        for m in result.metrics:
            writer.writerow(
                [
                    result.case,
                    m.label,
                    names.get(m.label, ""),
                    _number(m.dice),
                    _number(m.hd95),
                    _number(m.nsd),
                    m.presence,
                    m.ref_voxels,
                    m.pred_voxels,
                ]
            )
    return buffer.getvalue()


def write_metrics_csv(results: Sequence[CaseScores], path: Path, names: Mapping[int, str] | None = None) -> Path:
    """Write :func:`metrics_csv` atomically."""
    atomic_write_text(path, metrics_csv(results, names))
    return Path(path)


@dataclass(frozen=True)
class ClassSummary:
    """One class over all cases. HD95 statistics use the finite values only; ``hd95_inf`` counts
    the cases where exactly one side was empty; ``both_empty`` those where neither had the class."""

    label: int
    cases: int
    dice_mean: float
    dice_median: float
    hd95_mean: float
    hd95_median: float
    hd95_inf: int
    nsd_mean: float
    nsd_median: float
    both_present: int
    both_empty: int
    one_empty: int


def summarize(results: Sequence[CaseScores]) -> list[ClassSummary]:
    """Per-class mean and median of Dice, HD95 (finite values) and NSD, with empty-case counts."""
    labels = sorted({m.label for r in results for m in r.metrics})
    rows = []
    for label in labels:
        ms = [m for r in results for m in r.metrics if m.label == label]
        dice, nsd = np.array([m.dice for m in ms]), np.array([m.nsd for m in ms])
        hd = np.array([m.hd95 for m in ms])
        finite = hd[np.isfinite(hd)]
        stat = lambda a, f: float(f(a)) if a.size else math.nan  # noqa: E731
        both = sum(m.presence == BOTH for m in ms)
        neither = sum(m.presence == NEITHER for m in ms)
        rows.append(
            ClassSummary(
                label,
                len(ms),
                stat(dice, np.mean),
                stat(dice, np.median),
                stat(finite, np.mean),
                stat(finite, np.median),
                int(hd.size - finite.size),
                stat(nsd, np.mean),
                stat(nsd, np.median),
                both,
                neither,
                len(ms) - both - neither,
            )
        )
    return rows


def format_summary(
    rows: Sequence[ClassSummary], names: Mapping[int, str] | None = None, tolerance_mm: float = 1.0
) -> str:
    """A plain-text table of the summary, with a note on empty cases when there are any."""
    names = names or {}
    header = (
        f"{'label':<18} {'cases':>5} {'Dice mean':>9} {'median':>7} {'HD95 mean':>9} {'median':>7} "
        f"{'NSD@' + format(tolerance_mm, 'g') + 'mm':>9} {'median':>7}  empty(both/one)"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        name = f"{r.label} {names.get(r.label, '')}".strip()
        lines.append(
            f"{name:<18} {r.cases:>5} {r.dice_mean:>9.4f} {r.dice_median:>7.4f} {r.hd95_mean:>9.3f} "
            f"{r.hd95_median:>7.3f} {r.nsd_mean:>9.4f} {r.nsd_median:>7.4f}  {r.both_empty}/{r.one_empty}"
        )
    notes = [r for r in rows if r.one_empty or r.both_empty]
    if notes:
        lines.append(
            "Empty masks: both empty -> Dice 1, HD95 0, NSD 1; one empty -> Dice 0, HD95 inf (left out of "
            "the HD95 mean/median), NSD 0."
        )
    return "\n".join(lines)
