"""The end-of-batch summary: ``summary.csv`` and a static ``report.html`` in the output folder.

Both are made from the ledger only. Per case: status, label volumes (ml) and mean ± sd of the
source image per label (from the inference stats), the object count of instance models, the QC thumbnail and the case's NiiVue viewer
page (linked relatively, so the folder can be moved or zipped), timings, the input's suitability
warnings and the error. No patient names: the ledger never holds them, and with pseudonymised
names the source paths and series UIDs are left out too.

The page lists failures first and filters rows by status (a few lines of inline script, so it
works opened from file://). A viewer panel at the top shows one case at a time; a case's "view"
link loads it there. Label colours are the palette's (:mod:`medseg.io.palette`), as in the QC
pictures, the viewer, the DICOM SEG and the colour tables.
"""

from __future__ import annotations

import contextlib
import csv
import html
import io
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from medseg.batch.ledger import CaseRow, Ledger
from medseg.io.atomic import atomic_write_text
from medseg.io.palette import colour_hex, label_colour

SUMMARY_NAME = "summary.csv"
REPORT_NAME = "report.html"
TIMING_KEYS = ("read", "preprocess", "network", "inverse", "write")
_STATUS_COLOURS = {
    "done": "#1a7f37",
    "failed": "#cf222e",
    "skipped": "#6e7781",
    "running": "#9a6700",
    "pending": "#9a6700",
}
#: Row order of the report: failures first.
STATUS_ORDER = ("failed", "running", "pending", "done", "skipped")
VIEWER_FRAME = "medseg-viewer"


def label_rows(stats: Mapping) -> list[dict[str, Any]]:
    """The per-label rows of a case's inference stats (``[{"label", "name", "volume_ml", ...}]``).

    Reads the ``labels`` list that inference writes; a ``{"volumes_ml": {name: ml}}`` mapping is
    accepted too (rows without label values then).
    """
    volumes = stats.get("volumes_ml")
    if isinstance(volumes, Mapping):
        return [{"name": str(k), "volume_ml": float(v)} for k, v in volumes.items() if isinstance(v, (int, float))]
    labels = stats.get("labels")
    items = labels.values() if isinstance(labels, Mapping) else labels if isinstance(labels, list) else []
    return [
        dict(item, name=str(item.get("name", item.get("label", "?"))))
        for item in items
        if isinstance(item, Mapping) and isinstance(item.get("volume_ml"), (int, float))
    ]


def label_volumes(stats: Mapping) -> dict[str, float]:
    """Volumes in ml per label name from a case's inference stats (empty when it has none)."""
    return {row["name"]: float(row["volume_ml"]) for row in label_rows(stats)}


def _output(row: CaseRow, name: str) -> str | None:
    """Relative path (from the output folder) of the case's output ``name``, if it has one."""
    return next((o.path for o in row.outputs if o.name == name), None)


def case_warnings(stats: Mapping) -> list[str]:
    """The suitability warnings inference recorded for a case (``stats["warnings"]``: messages)."""
    items = stats.get("warnings")
    return (
        [str(w.get("message", "")) if isinstance(w, Mapping) else str(w) for w in items]
        if isinstance(items, list)
        else []
    )


def qc_image(row: CaseRow) -> str | None:
    """Relative path (from the output folder) of the case's QC PNG, if inference wrote one (an
    output named ``qc...`` first: a 2D instance map is a PNG too)."""
    named = [o for o in row.outputs if o.name.lower().startswith("qc")]
    for output in named or row.outputs:
        if output.name.lower().startswith("qc") or output.path.lower().endswith(".png"):
            return output.path
    return None


def object_count(stats: Mapping) -> int | None:
    """The number of objects an instance model found (``stats["objects"]``), None for other models."""
    count = stats.get("objects")
    return int(count) if isinstance(count, (int, float)) and not isinstance(count, bool) else None


def _has_objects(rows: Iterable[CaseRow]) -> bool:
    return any(object_count(row.stats) is not None for row in rows)


def viewer_page(row: CaseRow) -> str | None:
    """Relative path (from the output folder) of the case's viewer page, if inference wrote one."""
    return _output(row, "viewer")


def ordered_rows(rows: Iterable[CaseRow]) -> list[CaseRow]:
    """Rows with failures first, then by :data:`STATUS_ORDER`, keeping the ledger order within a status."""
    rank = {status: n for n, status in enumerate(STATUS_ORDER)}
    return sorted(rows, key=lambda r: rank.get(r.status, len(rank)))


def _label_columns(rows: Iterable[CaseRow]) -> list[tuple[str, int | None]]:
    """``(name, label value or None)`` of every label met, in order of first appearance."""
    columns: dict[str, int | None] = {}
    for row in rows:
        for item in label_rows(row.stats):
            value = item.get("label")
            if item["name"] not in columns or columns[item["name"]] is None:
                columns[item["name"]] = int(value) if isinstance(value, int) and value > 0 else None
    return list(columns.items())


def summary_csv(rows: list[CaseRow], pseudonymised: bool) -> str:
    """The summary table as CSV text (one row per case): volume and mean intensity per label."""
    labels = [name for name, _ in _label_columns(rows)]
    header = ["case", "status", "kind"] + ([] if pseudonymised else ["source", "series_uid"])
    header += ["modality", "description", "n_slices", "attempts", "seconds"]
    header += [f"t_{k}" for k in TIMING_KEYS] + [f"volume_ml_{name}" for name in labels]
    header += [f"intensity_mean_{name}" for name in labels]
    objects = _has_objects(rows)
    header += ["objects"] if objects else []
    header += ["model_id", "model_version", "outputs", "warnings", "error"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        by_name = {item["name"]: item for item in label_rows(row.stats)}
        values: list[object] = [row.case_id, row.status, row.kind]
        values += [] if pseudonymised else [row.source, row.series_uid or ""]
        values += [row.modality or "", "" if pseudonymised else row.description or "", row.n_slices or "", row.attempts]
        values += [_num(row.seconds)] + [_num(row.timings.get(k)) for k in TIMING_KEYS]
        values += [_num(by_name.get(name, {}).get("volume_ml")) for name in labels]
        values += [_num(by_name.get(name, {}).get("intensity_mean")) for name in labels]
        values += [_count(object_count(row.stats))] if objects else []
        values += [
            row.model_id or "",
            row.model_version or "",
            ";".join(o.path for o in row.outputs),
            " | ".join(case_warnings(row.stats)),
            row.error or "",
        ]
        writer.writerow(values)
    return buffer.getvalue()


def _count(value: int | None) -> str:
    return "" if value is None else str(value)


def _num(value: object, digits: int = 3) -> str:
    return "" if value is None else f"{float(value):.{digits}f}"  # type: ignore[arg-type]


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; }
table { border-collapse: collapse; } th, td { border: 1px solid #d0d7de; padding: 4px 8px; vertical-align: top; }
th { background: #f6f8fa; position: sticky; top: 0; z-index: 1; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.num small { color: #57606a; display: block; }
td.err { max-width: 40em; font-family: monospace; font-size: 90%; } img { max-width: 200px; }
.swatch { display: inline-block; width: 0.8em; height: 0.8em; border: 1px solid #444; margin-right: 4px; vertical-align: -1px; }
#filters label { margin-right: 1em; } #viewer-panel iframe { width: 100%; height: 480px; border: 1px solid #d0d7de; }
#viewer-panel p { margin: 0.3em 0; }
"""

_SCRIPT = """
(function () {
  function apply() {
    var shown = {};
    document.querySelectorAll('#filters input').forEach(function (box) { shown[box.value] = box.checked; });
    document.querySelectorAll('tbody tr').forEach(function (row) {
      row.style.display = shown[row.dataset.status] === false ? 'none' : '';
    });
  }
  document.querySelectorAll('#filters input').forEach(function (box) { box.addEventListener('change', apply); });
  document.querySelectorAll('a[data-case]').forEach(function (link) {
    link.addEventListener('click', function () {
      document.body.dataset.viewer = 'loading';
      var name = document.getElementById('viewer-case'); if (name) name.textContent = link.dataset.case;
    });
  });
  window.addEventListener('message', function (event) {
    if (event.data && event.data.medsegViewer === 'ready') {
      document.body.dataset.viewer = 'ready';
      document.body.dataset.viewerCase = event.data.caseId;
    }
  });
})();
"""


def report_html(rows: list[CaseRow], pseudonymised: bool, title: str = "medseg batch report") -> str:
    """A self-contained HTML page (thumbnails and viewer pages linked relatively) summarising every case."""
    rows = ordered_rows(rows)
    labels = _label_columns(rows)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    models = sorted({f"{r.model_id} ({r.model_version})" for r in rows if r.model_id})
    head = "".join(
        f"<th>{html.escape(h)}</th>" for h in ["case", "status", "QC", "viewer", *([] if pseudonymised else ["source"])]
    )
    head += "".join(
        f"<th>{_swatch(value)}{html.escape(name)} (ml)<br><small>mean ± sd</small></th>" for name, value in labels
    )
    objects = _has_objects(rows)
    head += "<th>objects</th>" if objects else ""
    head += "<th>time (s)</th><th>warnings</th><th>error</th>"
    body = "\n".join(_html_row(row, [n for n, _ in labels], pseudonymised, objects) for row in rows)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_STYLE}</style></head><body data-viewer="none">
<h1>{html.escape(title)}</h1>
<p>{len(rows)} case(s): {html.escape(summary)}. Model: {html.escape(", ".join(models) or "n/a")}.
Written {html.escape(time.strftime("%Y-%m-%d %H:%M:%S"))}.</p>
{_viewer_panel(rows)}
<p id="filters">Show: {_filters(counts)}</p>
<table><thead><tr>{head}</tr></thead><tbody>
{body}
</tbody></table>
<script>{_SCRIPT}</script></body></html>
"""


def _swatch(value: int | None) -> str:
    return f'<span class="swatch" style="background:{colour_hex(label_colour(value))}"></span>' if value else ""


def _filters(counts: Mapping[str, int]) -> str:
    """One checkbox per status present, failures first."""
    statuses = [s for s in STATUS_ORDER if s in counts] + sorted(set(counts) - set(STATUS_ORDER))
    return " ".join(
        f'<label><input type="checkbox" value="{html.escape(s)}" checked> {html.escape(s)} ({counts[s]})</label>'
        for s in statuses
    )


def _viewer_panel(rows: list[CaseRow]) -> str:
    """The embedded viewer, showing the first case that has a viewer page (nothing when none has)."""
    first = next((r for r in rows if viewer_page(r)), None)
    if first is None:
        return ""
    page = html.escape(viewer_page(first) or "")
    return (
        f'<div id="viewer-panel"><p>Viewer: <strong id="viewer-case">{html.escape(first.case_id)}</strong> '
        f'(pick another case with its "view" link)</p>'
        f'<iframe name="{VIEWER_FRAME}" src="{page}" title="NiiVue viewer"></iframe></div>'
    )


def _html_row(row: CaseRow, labels: list[str], pseudonymised: bool, objects: bool = False) -> str:
    by_name = {item["name"]: item for item in label_rows(row.stats)}
    qc = qc_image(row)
    thumb = (
        f'<a href="{html.escape(qc)}"><img src="{html.escape(qc)}" alt="QC of {html.escape(row.case_id)}"></a>'
        if qc
        else ""
    )
    page = viewer_page(row)
    view = (
        (
            f'<a href="{html.escape(page)}" target="{VIEWER_FRAME}" data-case="{html.escape(row.case_id)}">view</a> · '
            f'<a href="{html.escape(page)}" target="_blank">open</a>'
        )
        if page
        else ""
    )
    colour = _STATUS_COLOURS.get(row.status, "#000")
    cells = [
        f"<td>{html.escape(row.case_id)}</td>",
        f'<td style="color:{colour}">{html.escape(row.status)}</td>',
        f"<td>{thumb}</td>",
        f"<td>{view}</td>",
    ]
    if not pseudonymised:
        cells.append(f"<td>{html.escape(row.source)}</td>")
    cells += [f'<td class="num">{_label_cell(by_name.get(n))}</td>' for n in labels]
    if objects:
        cells.append(f'<td class="num">{_count(object_count(row.stats))}</td>')
    cells.append(f'<td class="num">{_num(row.seconds)}</td>')
    cells.append(f'<td class="err">{"<br>".join(html.escape(w) for w in case_warnings(row.stats))}</td>')
    cells.append(f'<td class="err">{html.escape(row.error or "")}</td>')
    return f'<tr data-status="{html.escape(row.status)}">' + "".join(cells) + "</tr>"


def _label_cell(item: Mapping[str, Any] | None) -> str:
    """Volume (ml) and, when known, mean ± sd of the image inside the label."""
    if not item:
        return ""
    text = _num(item.get("volume_ml"))
    if isinstance(item.get("intensity_mean"), (int, float)):
        text += f"<small>{_num(item['intensity_mean'], 1)} ± {_num(item.get('intensity_std'), 1)}</small>"
    return text


def write_reports(ledger: Ledger, outdir: Path, pseudonymised: bool) -> tuple[Path, Path]:
    """Write ``summary.csv`` and ``report.html`` atomically; returns their paths.

    When some case has a viewer page, the viewer assets are (re)installed in ``outdir`` too.
    """
    rows = ledger.rows()
    csv_path, html_path = Path(outdir) / SUMMARY_NAME, Path(outdir) / REPORT_NAME
    if any(viewer_page(r) for r in rows):
        _install_viewer_assets(Path(outdir))
    atomic_write_text(csv_path, summary_csv(rows, pseudonymised))
    atomic_write_text(html_path, report_html(rows, pseudonymised))
    return csv_path, html_path


def _install_viewer_assets(outdir: Path) -> None:
    """Make sure the viewer pages find their shared assets in ``outdir`` (they were installed per
    case; this repairs a folder whose assets were deleted). A missing bundle is left as it is."""
    from medseg.viewer import ViewerUnavailable, install_assets

    with contextlib.suppress(ViewerUnavailable):
        install_assets(outdir)


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
