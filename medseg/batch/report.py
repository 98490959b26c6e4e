"""The end-of-batch summary: ``summary.csv`` and a static ``report.html`` in the output folder.

Both are made from the ledger only. Per case: status, label volumes (ml, from the inference
stats), the QC thumbnail written by inference (linked relatively, so the folder can be moved or
zipped), timings, the input's suitability warnings and the error. No patient names: the ledger never holds them, and with
pseudonymised names the source paths and series UIDs are left out too.
"""

from __future__ import annotations

import csv
import html
import io
import time
from pathlib import Path
from typing import Iterable, Mapping

from medseg.batch.ledger import CaseRow, Ledger
from medseg.io.atomic import atomic_write_text

SUMMARY_NAME = "summary.csv"
REPORT_NAME = "report.html"
TIMING_KEYS = ("read", "preprocess", "network", "inverse", "write")
_STATUS_COLOURS = {"done": "#1a7f37", "failed": "#cf222e", "skipped": "#6e7781", "running": "#9a6700", "pending": "#9a6700"}


def label_volumes(stats: Mapping) -> dict[str, float]:
    """Volumes in ml per label name from a case's inference stats (empty when it has none).

    Reads the ``labels`` list that inference writes (``[{"name": ..., "volume_ml": ...}, ...]``);
    a ``{"volumes_ml": {name: ml}}`` mapping is accepted too.
    """
    volumes = stats.get("volumes_ml")
    if isinstance(volumes, Mapping):
        return {str(k): float(v) for k, v in volumes.items() if isinstance(v, (int, float))}
    labels = stats.get("labels")
    items = labels.values() if isinstance(labels, Mapping) else labels if isinstance(labels, list) else []
    result = {}
    for item in items:
        if isinstance(item, Mapping) and isinstance(item.get("volume_ml"), (int, float)):
            result[str(item.get("name", item.get("label", "?")))] = float(item["volume_ml"])
    return result


def case_warnings(stats: Mapping) -> list[str]:
    """The suitability warnings inference recorded for a case (``stats["warnings"]``: messages)."""
    items = stats.get("warnings")
    return [str(w.get("message", "")) if isinstance(w, Mapping) else str(w) for w in items] if isinstance(items, list) else []


def qc_image(row: CaseRow) -> str | None:
    """Relative path (from the output folder) of the case's QC PNG, if inference wrote one."""
    for output in row.outputs:
        if output.name.lower().startswith("qc") or output.path.lower().endswith(".png"):
            return output.path
    return None


def _label_names(rows: Iterable[CaseRow]) -> list[str]:
    names: list[str] = []
    for row in rows:
        for name in label_volumes(row.stats):
            if name not in names:
                names.append(name)
    return names


def summary_csv(rows: list[CaseRow], pseudonymised: bool) -> str:
    """The summary table as CSV text (one row per case)."""
    labels = _label_names(rows)
    header = ["case", "status", "kind"] + ([] if pseudonymised else ["source", "series_uid"])
    header += ["modality", "description", "n_slices", "attempts", "seconds"]
    header += [f"t_{k}" for k in TIMING_KEYS] + [f"volume_ml_{name}" for name in labels]
    header += ["model_id", "model_version", "outputs", "warnings", "error"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        volumes = label_volumes(row.stats)
        values = [row.case_id, row.status, row.kind] + ([] if pseudonymised else [row.source, row.series_uid or ""])
        values += [row.modality or "", "" if pseudonymised else row.description or "", row.n_slices or "", row.attempts]
        values += [_num(row.seconds)] + [_num(row.timings.get(k)) for k in TIMING_KEYS]
        values += [_num(volumes.get(name)) for name in labels]
        values += [row.model_id or "", row.model_version or "", ";".join(o.path for o in row.outputs),
                   " | ".join(case_warnings(row.stats)), row.error or ""]
        writer.writerow(values)
    return buffer.getvalue()


def _num(value: object) -> str:
    return "" if value is None else f"{float(value):.3f}"  # type: ignore[arg-type]


def report_html(rows: list[CaseRow], pseudonymised: bool, title: str = "medseg batch report") -> str:
    """A self-contained HTML page (thumbnails linked relatively) summarising every case."""
    labels = _label_names(rows)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    models = sorted({f"{r.model_id} ({r.model_version})" for r in rows if r.model_id})
    head = "".join(f"<th>{html.escape(h)}</th>" for h in
                   ["case", "status", "QC", *([] if pseudonymised else ["source"]), *(f"{n} (ml)" for n in labels), "time (s)", "warnings", "error"])
    body = "\n".join(_html_row(row, labels, pseudonymised) for row in rows)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; }} th, td {{ border: 1px solid #d0d7de; padding: 4px 8px; vertical-align: top; }}
th {{ background: #f6f8fa; position: sticky; top: 0; }} td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
td.err {{ max-width: 40em; font-family: monospace; font-size: 90%; }} img {{ max-width: 200px; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{len(rows)} case(s): {html.escape(summary)}. Model: {html.escape(", ".join(models) or "n/a")}.
Written {html.escape(time.strftime("%Y-%m-%d %H:%M:%S"))}.</p>
<table><thead><tr>{head}</tr></thead><tbody>
{body}
</tbody></table></body></html>
"""


def _html_row(row: CaseRow, labels: list[str], pseudonymised: bool) -> str:
    volumes = label_volumes(row.stats)
    qc = qc_image(row)
    thumb = f'<a href="{html.escape(qc)}"><img src="{html.escape(qc)}" alt="QC of {html.escape(row.case_id)}"></a>' if qc else ""
    colour = _STATUS_COLOURS.get(row.status, "#000")
    cells = [f"<td>{html.escape(row.case_id)}</td>", f'<td style="color:{colour}">{html.escape(row.status)}</td>', f"<td>{thumb}</td>"]
    if not pseudonymised:
        cells.append(f"<td>{html.escape(row.source)}</td>")
    cells += [f'<td class="num">{_num(volumes.get(n))}</td>' for n in labels]
    cells.append(f'<td class="num">{_num(row.seconds)}</td>')
    cells.append(f'<td class="err">{"<br>".join(html.escape(w) for w in case_warnings(row.stats))}</td>')
    cells.append(f'<td class="err">{html.escape(row.error or "")}</td>')
    return "<tr>" + "".join(cells) + "</tr>"


def write_reports(ledger: Ledger, outdir: Path, pseudonymised: bool) -> tuple[Path, Path]:
    """Write ``summary.csv`` and ``report.html`` atomically; returns their paths."""
    rows = ledger.rows()
    csv_path, html_path = Path(outdir) / SUMMARY_NAME, Path(outdir) / REPORT_NAME
    atomic_write_text(csv_path, summary_csv(rows, pseudonymised))
    atomic_write_text(html_path, report_html(rows, pseudonymised))
    return csv_path, html_path


def write_pseudonym_map(path: Path, items: Iterable[tuple[str, str, str, str, str]]) -> Path:
    """Write (merging with an existing file) the mapping CSV ``case,patient_id,study_uid,series_uid,source``.

    This file re-identifies pseudonymised results: keep it apart from anything shared.
    """
    header = ["case", "patient_id", "study_uid", "series_uid", "source"]
    merged: dict[str, list[str]] = {}
    if Path(path).is_file():
        with open(path, newline="", encoding="utf-8") as handle:
            for record in csv.DictReader(handle):
                merged[record["case"]] = [record.get(h, "") for h in header]
    for item in items:
        merged[item[0]] = [str(v or "") for v in item]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(merged[k] for k in sorted(merged))
    atomic_write_text(path, buffer.getvalue())
    return Path(path)
