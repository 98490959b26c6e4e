"""``medseg predict``: segment scans with trained model folders (see docs/inference.md)."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from medseg.cli.options import add_prediction_options, output_options, predict_options
from medseg.pretrained import resolve_model_path

if TYPE_CHECKING:
    from medseg.cases import Discovery, InputCase
    from medseg.inference import CaseResult, OutputOptions, Predictor

log = logging.getLogger("medseg.predict")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``predict`` parser."""
    p = subparsers.add_parser(
        "predict",
        help="segment scans (NIfTI/NRRD/MHA files, folders, DICOM exports, CSV manifests) with trained models",
        description="Segment scans with one model folder or an ensemble of them. Writes, per case, the "
        "label volume on the exact source grid, statistics, a QC picture and (DICOM input) a DICOM SEG.",
    )
    p.add_argument(
        "-m",
        "--model",
        action="append",
        required=True,
        type=resolve_model_path,
        metavar="MODEL",
        help="trained model folder, a shipped model name (hippocampus), or a 'medseg export' folder for the ONNX backends; repeat for an ensemble",
    )
    p.add_argument(
        "-i",
        "--input",
        required=True,
        type=Path,
        metavar="INPUT",
        help="a volume file, a folder of them (searched recursively), a DICOM series folder or export, "
        "or a CSV manifest (case,image[,...])",
    )
    p.add_argument("-o", "--output", required=True, type=Path, metavar="OUTDIR", help="output folder")
    add_prediction_options(p)
    p.set_defaults(func=run)


@dataclass
class RunRecord:
    """What a run did so far: finished cases, failed cases, and why it stopped early (None: it did not)."""

    load_seconds: float = 0.0
    results: list[CaseResult] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)
    aborted: str | None = None


def run(args: argparse.Namespace) -> int:
    """Check the options and find the cases, load the models once, predict every case, write the manifest.

    The manifest is written whatever happens once the models are loaded: it lists the cases done
    before a run ends early (disk full, an internal error, Ctrl-C) and why it ended.
    """
    from medseg.errors import MedsegError
    from medseg.inference import Predictor
    from medseg.inference.loading import folder_kind, read_spec
    from medseg.inference.outputs import MANIFEST_NAME
    from medseg.io.atomic import ensure_writable_dir

    started = time.perf_counter()
    options = predict_options(args)
    for folder in args.model:
        folder_kind(folder)
    spec = read_spec(args.model[0])
    outputs = output_options(args, spec.labels)
    cases = find_cases(args.input, args.output, args.series, spec.in_channels)
    ensure_writable_dir(args.output)
    with Predictor.from_folders(args.model, options) as predictor:
        record = RunRecord(load_seconds=time.perf_counter() - started)
        try:
            _predict_all(predictor, cases, args.output, outputs, args.quiet, record)
        finally:
            _write_manifest(predictor, outputs, record, cases, args, started)
    log.info(
        "segmented %d of %d case(s) into %s in %.1f s (manifest: %s)",
        len(record.results),
        len(cases),
        args.output,
        time.perf_counter() - started,
        MANIFEST_NAME,
    )
    if record.failures and len(cases) == 1:
        raise MedsegError(record.failures[0]["error"])
    return 3 if record.failures else 0


def _write_manifest(
    predictor: Predictor,
    outputs: OutputOptions,
    record: RunRecord,
    cases: list[InputCase],
    args: argparse.Namespace,
    started: float,
) -> None:
    """Write ``medseg_run.json`` for what ``record`` holds; when the run ended early, say why and
    which cases did not run. A manifest that cannot be written while another error ends the run is
    logged, so that error is the one reported."""
    from medseg.errors import MedsegError
    from medseg.inference.outputs import MANIFEST_NAME, build_manifest, write_json

    timings = {"load_models": record.load_seconds, "total": time.perf_counter() - started}
    manifest = build_manifest(
        predictor,
        outputs,
        record.results,
        record.failures,
        timings,
        _scrubbed([str(args.input)], cases),
        _scrubbed(["medseg", *sys.argv[1:]], cases),
    )
    if record.aborted:
        finished = {r.case_id for r in record.results} | {f["case_id"] for f in record.failures}
        manifest["aborted"] = record.aborted
        manifest["not_run"] = [c.case_id for c in cases if c.case_id not in finished]
    try:
        write_json(manifest, args.output / MANIFEST_NAME)
    except MedsegError as exc:
        if record.aborted is None:
            raise
        log.error("the manifest could not be written either: %s", exc)


def find_cases(input_path: Path, outdir: Path, series: str | None, channels: int) -> list[InputCase]:
    """The cases of ``-i`` (as ``medseg batch`` finds them, readable ids); logs what is skipped and why.

    Raises InputError when the input is missing or nothing in it can be segmented, ConfigError
    when OUTDIR is, or lies inside, the input folder, is the folder of an input file, or when an
    output would overwrite an input or another case's output (:mod:`medseg.cases.overwrite`).
    """
    from medseg.cases import check_output_outside_input, check_planned_outputs, discover_cases
    from medseg.errors import InputError
    from medseg.inference.outputs import MANIFEST_NAME, planned_outputs

    if not input_path.exists():
        raise InputError(f"input {input_path} does not exist; check the -i path")
    check_output_outside_input(input_path, outdir)
    found = discover_cases(input_path, series=series, channels=channels)
    _log_skipped(found)
    if not found.cases:
        raise InputError(f"nothing to segment in {input_path}: {_redacted(found.why_nothing(), found)}")
    check_planned_outputs(
        found.cases,
        lambda case: planned_outputs(outdir, case.case_id),
        {outdir / MANIFEST_NAME: f"run manifest {MANIFEST_NAME}"},
    )
    return list(found.cases)


def _log_skipped(found: Discovery) -> None:
    for item in found.skipped:
        log.info("skipped %s: %s", item.case_id, _redacted(item.reason, found))


def _redacted(text: str, found: Discovery) -> str:
    from medseg.cases.privacy import redact

    return redact(text, found.redact_terms())


def _scrubbed(texts: list[str], cases: list[InputCase]) -> list[str]:
    """``texts`` (paths, command words) with the patient names of ``cases`` redacted, for the manifest."""
    from medseg.cases.privacy import redact

    terms = tuple(sorted({term for case in cases for term in case.redact}, key=len, reverse=True))
    return [redact(text, terms) for text in texts]


def _predict_all(
    predictor: Predictor, cases: list[InputCase], out_dir: Path, options: OutputOptions, quiet: bool, record: RunRecord
) -> None:
    """Predict every case into ``record``; one bad case is logged and recorded, the others go on.

    An output that cannot be written (disk full, file-size limit: OutputError) ends the run, as
    does an internal error or Ctrl-C; ``record.aborted`` then says why.
    """
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from medseg.cases.privacy import redacting_logs
    from medseg.errors import MedsegError, OutputError
    from medseg.inference import predict_case
    from medseg.inference.outputs import MANIFEST_NAME

    with logging_redirect_tqdm():
        for case in tqdm(cases, unit="case", desc="predict", disable=quiet or len(cases) < 2):
            try:
                with redacting_logs(case.redact):
                    record.results.append(predict_case(predictor, case, out_dir, options))
            except OutputError as exc:
                error = _fail(record, case, str(exc))
                record.aborted = f"stopped at case {case.case_id}: {error}"
                raise OutputError(f"{error} ({len(record.results)} case(s) done before; see {MANIFEST_NAME})") from None
            except MedsegError as exc:
                error = _fail(record, case, str(exc))
                if len(cases) > 1:  # a single case's error is the run's one-line error
                    log.error("%s: %s", case.case_id, error)
            except BaseException as exc:
                why = (
                    "interrupted"
                    if isinstance(exc, KeyboardInterrupt)
                    else f"internal error: {type(exc).__name__}: {exc}"
                )
                record.aborted = f"stopped at case {case.case_id}: {_fail(record, case, why)}"
                raise


def _fail(record: RunRecord, case: InputCase, error: str) -> str:
    """Record ``case`` as failed with ``error`` (patient names removed); returns the recorded text."""
    from medseg.cases.privacy import redact

    error = redact(error, case.redact)
    record.failures.append({"case_id": case.case_id, "source": redact(case.describe(), case.redact), "error": error})
    return error
