"""Training logs: a CSV with one row per epoch, optional TensorBoard scalars, a PNG of the curves.

The CSV is rewritten from the run's history (kept in the checkpoint) after every epoch, so after
a kill and ``--resume`` it never holds rows the resumed run does not know about.
TensorBoard is used only when the ``tensorboard`` package is importable.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from medseg.io.atomic import atomic_path, atomic_write_text

log = logging.getLogger(__name__)


def write_log_csv(path: Path, rows: Sequence[Mapping[str, float]]) -> Path:
    """Write ``rows`` (dicts of numbers) as CSV, columns in first-seen order; empty cells for gaps."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(v) for k, v in row.items()})
    atomic_write_text(path, buffer.getvalue())
    return path


def read_log_csv(path: Path) -> list[dict[str, float]]:
    """Rows of a CSV written by :func:`write_log_csv` (empty cells dropped)."""
    with open(path, newline="", encoding="utf-8") as handle:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(handle)]


def _fmt(value: float) -> str:
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 1e15):
        return str(int(value))
    return f"{value:.6g}"


class TensorBoard:
    """Scalars to TensorBoard under ``folder`` when the package is installed; otherwise a no-op."""

    def __init__(self, folder: Path) -> None:
        self.writer = None
        try:
            import tensorboard  # noqa: F401  (torch.utils.tensorboard needs it)
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.debug("tensorboard is not installed; logging to CSV only")
            return
        self.writer = SummaryWriter(log_dir=str(folder))

    def log(self, row: Mapping[str, float], step: int) -> None:
        if self.writer is None:
            return
        for key, value in row.items():
            if key not in ("epoch", "iteration") and math.isfinite(value):
                self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


#: instance-model validation columns plotted beside (instead of) Dice, with their legend names
INSTANCE_CURVES = {"val_dsb_score": "DSB score", "val_ap50": "AP@0.5"}


def plot_curves(rows: Sequence[Mapping[str, float]], path: Path) -> Path | None:
    """Save a PNG of training loss, validation Dice (columns ``dice_*``; instance models: DSB score
    and AP@0.5) and lr per epoch (matplotlib Agg)."""
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.6))
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.14, top=0.9, wspace=0.25)
    loss_ax, dice_ax, lr_ax = fig.subplots(1, 3)
    epochs = [r["epoch"] for r in rows]
    loss_ax.plot(epochs, [r.get("train_loss", math.nan) for r in rows], label="train loss")
    loss_ax.set(xlabel="epoch", title="loss")
    keys = list(dict.fromkeys(k for r in rows for k in r if k.startswith("dice_") or k in INSTANCE_CURVES))
    for key in keys:
        points = [(r["epoch"], r[key]) for r in rows if key in r]
        dice_ax.plot(*zip(*points), marker="o", ms=3, label=INSTANCE_CURVES.get(key, key[5:]))
    dice_ax.set(
        xlabel="epoch",
        title="validation DSB score / AP@0.5" if keys and keys[0] in INSTANCE_CURVES else "validation Dice",
        ylim=(0, 1),
    )
    if dice_ax.lines:
        dice_ax.legend(fontsize=8)
    lr_ax.plot(epochs, [r.get("lr", math.nan) for r in rows])
    lr_ax.set(xlabel="epoch", title="learning rate")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    return path
