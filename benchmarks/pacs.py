"""Archive throughput: series per hour from Orthanc (DICOMweb, DIMSE) against the same series from a
folder, on localhost, and where the time goes (query, retrieve, decode, predict, write, push).

    python -m benchmarks.pacs [--crops 20] [--no-tcia] [--out DIR]

Two sets of real DICOM series, each run three ways with the shipped hippocampus model, one worker:

* ``tcia``: the four whole-brain MR series of TCIA Brain-Tumor-Progression PGBM-003
  (../shared/data/dicom_tcia_brain_tumor_progression, 22 slices of 320 x 280): prediction dominates;
* ``crops``: ``--crops`` MSD hippocampus crops (../shared/data/msd_hippocampus) written as DICOM
  MR series (tests/dicom_factory.py): prediction is cheap, so the archive's share shows.

The ways: ``medseg batch FOLDER`` (no push: the SEG stays on disk), and ``medseg batch URL
--push-to URL`` over DICOMweb and over DIMSE against an Orthanc started on free ports
(tests/orthanc.py; Debian's ``orthanc`` + ``orthanc-dicomweb``), and over DIMSE against a second
Orthanc started with ``TCP_NODELAY=1`` (DCMTK's switch for Nagle's algorithm). Series per hour count the whole
run (worker start-up and model load included); the three ways run in turn, ``--repeats`` rounds,
and the fastest round of each is kept (the machine may be shared). Query is the discovery
(folder: reading headers; archive: series query + per-instance headers), timed on its own; the
other stages are the per-series means the ledger records. Prints the table and writes the ``pacs`` section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.repo import shared_data
from benchmarks.report import add_no_doc_option, machine_line, update_section

PREDICT = ("preprocess", "network", "inverse", "postprocess")
COLUMNS = ("query", "retrieve", "decode", "predict", "write", "push")
#: the stages an archive adds to a series (its own cost, whatever the model)
ARCHIVE = ("query", "retrieve", "push")


def write_crops(data: Path, n: int, folder: Path) -> Path:
    """The first ``n`` hippocampus crops (sorted) as DICOM MR series under ``folder`` (one patient each)."""
    from tests.dicom_factory import write_mr_series

    images = sorted((data / "imagesTr").glob("*.nii.gz"))[:n]
    if len(images) < n:
        raise SystemExit(f"{data}/imagesTr has {len(images)} images, fewer than --crops {n}")
    for number, image in enumerate(images, start=1):
        write_mr_series(
            image,
            folder / image.name.split(".")[0],
            patient_name="Bench^Mark",
            patient_id=f"B{number:03d}",
            description="hippocampus crop",
        )
    return folder


def run(source: object, out: Path, push: object | None) -> dict:
    """One ``medseg batch`` run in this process (worker processes as usual); wall seconds and ledger figures."""
    from medseg.batch.inference_engine import PredictEngine
    from medseg.batch.runner import BatchOptions
    from medseg.batch.session import ArchiveOptions, run_session
    from medseg.cases import SelectionRules
    from medseg.inference import OutputOptions, PredictOptions
    from medseg.pretrained import resolve_model_path

    model = resolve_model_path("hippocampus")
    engine = PredictEngine((model,), PredictOptions(device="cpu"), OutputOptions())
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    result = run_session(
        source,
        lambda: engine,
        BatchOptions(outdir=out, progress=False),
        SelectionRules(),
        archive=ArchiveOptions(push_to=push),
    )  # type: ignore[arg-type]
    seconds = time.perf_counter() - start
    if result.exit_code != 0:
        raise SystemExit(f"the benchmark batch into {out} failed (exit {result.exit_code}); see {result.report_html}")
    return {"seconds": seconds, **ledger_figures(out)}


def ledger_figures(out: Path) -> dict:
    """Done series and mean seconds per stage (retrieve, decode, predict, write, push) from the ledger."""
    from medseg.batch.ledger import Ledger

    with Ledger(out / "ledger.sqlite") as ledger:
        rows = [r for r in ledger.rows() if r.status == "done"]
        pushes = [p.seconds or 0.0 for p in ledger.pushes()]
    mean = lambda values: statistics.mean(values) if values else None  # noqa: E731
    return {
        "done": len(rows),
        "retrieve": mean([r.timings["retrieve"] for r in rows if "retrieve" in r.timings]),
        "decode": mean([r.timings.get("read", 0.0) for r in rows]),
        "predict": mean([sum(r.timings.get(k, 0.0) for k in PREDICT) for r in rows]),
        "write": mean([r.timings.get("write", 0.0) for r in rows]),
        "push": mean(pushes),
    }


def query_seconds(source: object) -> float:
    """Seconds one discovery of ``source`` takes (folder: headers read; archive: query + headers)."""
    from medseg.cases import discover_cases

    start = time.perf_counter()
    discover_cases(source)  # type: ignore[arg-type]
    return time.perf_counter() - start


def measure(name: str, folder: Path, work: Path, repeats: int) -> dict[str, dict]:
    """The ways for the series in ``folder``, ``repeats`` rounds in turn (the Orthancs up for all of them,
    so every way runs beside the same idle archives); the fastest round of each way is kept."""
    from tests.orthanc import Orthanc

    archives = [
        Orthanc(work / f"{name}-orthanc").start(),
        Orthanc(work / f"{name}-orthanc-nodelay", env={"TCP_NODELAY": "1"}).start(),
    ]
    try:
        files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
        for archive in archives:
            archive.upload(files)
        ways = _ways(folder, *archives)
        best: dict[str, dict] = {"load": {"before": os.getloadavg()[0]}}
        for _ in range(repeats):
            for way, (source, push) in ways.items():
                figures = {**run(source, work / f"{name}-{way}", push), "query": query_seconds(source)}
                if way not in best or figures["seconds"] < best[way]["seconds"]:
                    best[way] = figures
        best["load"]["after"] = os.getloadavg()[0]
    finally:
        for archive in archives:
            archive.stop()
    return best


def _ways(folder: Path, orthanc: object, nodelay: object) -> dict[str, tuple[object, object | None]]:
    """Source and push target of each way: a folder, DICOMweb, DIMSE, DIMSE with TCP_NODELAY=1 in Orthanc."""
    from medseg.pacs import ArchiveSource, load_settings

    ways: dict[str, tuple[object, object | None]] = {"folder": (folder, None)}
    for way, url in (
        ("DICOMweb", orthanc.dicomweb_url),
        ("DIMSE", orthanc.dimse_url),  # type: ignore[attr-defined]
        ("DIMSE, Orthanc with TCP_NODELAY=1", nodelay.dimse_url),
    ):  # type: ignore[attr-defined]
        settings = load_settings(url, env={})
        ways[way] = (ArchiveSource(settings), settings)
    return ways


def markdown(sets: dict[str, tuple[str, dict[str, dict]]], machine: str, repeats: int) -> str:
    """The docs/benchmarks.md section."""
    lines = [
        "## Archive throughput (`python -m benchmarks.pacs`)",
        "",
        "Series per hour with the shipped hippocampus model (1 worker, CPU), from a folder and from an Orthanc "
        "1.10 archive on localhost (DICOMweb: QIDO-RS, WADO-RS metadata + retrieval, STOW-RS; DIMSE: C-FIND, "
        "C-GET, C-STORE), each archive run pushing one SEG per series back and verifying it. Whole runs timed "
        "(worker start-up and model load included), the ways run in turn beside the same idle Orthanc, the "
        f"fastest of {repeats} rounds kept; stages are per-series means in seconds of that round, query timed "
        "on its own. " + machine,
        "",
    ]
    for label, results in sets.values():
        load = results["load"]
        lines += [
            f"**{label}** (1-minute load average {load['before']:.1f} before, {load['after']:.1f} after, "
            f"on {os.cpu_count()} CPUs)",
            "",
            "| source | series | series/hour | wall s | " + " | ".join(COLUMNS) + " | archive s/series |",
            "|---|---:|---:|---:|" + "---:|" * (len(COLUMNS) + 1),
        ]
        for way, r in results.items():
            if way == "load":
                continue
            per_series = {
                c: (r.get(c) / r["done"] if c == "query" else r.get(c)) for c in COLUMNS if r.get(c) is not None
            }
            cells = [_cell(per_series.get(c)) for c in COLUMNS]
            cells.append(_cell(sum(per_series.get(c, 0.0) for c in ARCHIVE)) if way != "folder" else "n/a")
            lines.append(
                f"| {way} | {r['done']} | {3600 * r['done'] / r['seconds']:.0f} | {r['seconds']:.1f} | "
                + " | ".join(cells)
                + " |"
            )
        folder = results["folder"]
        web = results.get("DICOMweb")
        if web:
            lines += ["", f"DICOMweb vs folder: {web['seconds'] / folder['seconds']:.2f}x the wall time."]
        lines.append("")
    lines.append(
        'Query is per series (the discovery\'s time divided by the series count); "archive s/series" is '
        "query + retrieve + push, what the archive adds to each series whatever the model. Predict "
        "dominates the whole-brain series and follows the load of the machine (shared with other work: "
        "compare ways by the archive column, not by small differences in wall time). Orthanc's DICOM stack "
        "(DCMTK) leaves Nagle's algorithm on unless `TCP_NODELAY=1` is in its environment; every instance "
        "of a C-GET then waits for a delayed TCP acknowledgement (about 40-50 ms each), which the last row "
        "shows without."
    )
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def main(argv: list[str] | None = None) -> int:
    """Run both sets three ways, print the table, write docs/benchmarks.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crops", type=int, default=20, help="hippocampus crops written as DICOM series (default 20)")
    parser.add_argument("--no-tcia", action="store_true", help="skip the four whole-brain TCIA series")
    parser.add_argument(
        "--repeats", type=int, default=2, help="rounds of the three ways; the fastest is kept (default 2)"
    )
    parser.add_argument("--out", type=Path, help="work folder (default: a temporary folder, removed after)")
    add_no_doc_option(parser)
    args = parser.parse_args(argv)
    from tests.orthanc import missing_reason

    reason = missing_reason()
    if reason:
        raise SystemExit(f"this benchmark needs Orthanc: {reason}")
    work = args.out or Path(tempfile.mkdtemp(prefix="medseg-pacs-bench-"))
    try:
        crops = write_crops(shared_data("msd_hippocampus"), args.crops, work / "crops")
        run(crops / sorted(p.name for p in crops.iterdir())[0], work / "warm-up", None)  # ONNX/OpenVINO export cached
        sets = {
            "crops": (
                f"{args.crops} hippocampus crops as DICOM MR series (about 35 x 50 x 36 voxels)",
                measure("crops", crops, work, args.repeats),
            )
        }
        if not args.no_tcia:
            tcia = shared_data("dicom_tcia_brain_tumor_progression", "dicom")
            sets["tcia"] = (
                "4 whole-brain MR series, TCIA Brain-Tumor-Progression PGBM-003 (22 slices of 320 x 280)",
                measure("tcia", tcia, work, args.repeats),
            )
    finally:
        if args.out is None:
            shutil.rmtree(work, ignore_errors=True)
    text = markdown(sets, machine_line(), args.repeats)
    print(text)
    if not args.no_doc:
        update_section("pacs", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
