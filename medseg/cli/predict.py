"""``medseg predict``: segment scans with trained model folders (see docs/inference.md)."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from medseg.pretrained import resolve_model_path

log = logging.getLogger("medseg.predict")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``predict`` parser."""
    p = subparsers.add_parser(
        "predict", help="segment scans (NIfTI/NRRD/MHA files, folders, DICOM exports) with trained models",
        description="Segment scans with one model folder or an ensemble of them. Writes, per case, the "
        "label volume on the exact source grid, statistics, a QC picture and (DICOM input) a DICOM SEG.",
    )
    p.add_argument("-m", "--model", action="append", required=True, type=resolve_model_path, metavar="MODEL",
                   help="trained model folder, a shipped model name (hippocampus), or a 'medseg export' folder for the ONNX backends; repeat for an ensemble")
    p.add_argument("-i", "--input", required=True, type=Path, metavar="INPUT",
                   help="a volume file, a folder of them, a DICOM series folder or a scanner export")
    p.add_argument("-o", "--output", required=True, type=Path, metavar="OUTDIR", help="output folder")
    p.add_argument("--resample", action="store_true",
                   help="resample DICOM series with gantry tilt, gaps or uneven slice spacing onto a regular grid "
                   "(default: refuse them with the reason; no DICOM SEG is written for resampled series)")
    p.add_argument("--series", metavar="SEL", help="DICOM series to segment: index, UID or description pattern "
                   "(default: every image series)")
    run_group = p.add_argument_group("inference")
    run_group.add_argument("--tta", choices=("off", "all"), default="off", help="mirroring test-time augmentation")
    run_group.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    run_group.add_argument("--backend", choices=("auto", "torch", "onnxruntime", "openvino"), default="auto",
                           help="auto: OpenVINO on the CPU when installed (exported once, cached), else torch")
    run_group.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                           help="auto: bf16 on CPUs with native bf16, fp16 on CUDA, else fp32")
    run_group.add_argument("--threads", type=int, help="CPU threads (default: all available)")
    run_group.add_argument("--overlap", type=float, default=0.5, help="sliding-window tile overlap (default 0.5)")
    run_group.add_argument("--tiles-per-batch", type=int, help="tiles per network call (default 2 CPU, 4 GPU)")
    run_group.add_argument("--fast", action="store_true",
                           help="argmax on the preprocessed grid, then nearest-neighbour back (less memory, faster)")
    out = p.add_argument_group("outputs")
    out.add_argument("--save-probabilities", action="store_true", help="also write 4D class probabilities")
    out.add_argument("--no-seg", action="store_true", help="no DICOM SEG for DICOM input")
    out.add_argument("--no-qc", action="store_true", help="no QC picture")
    out.add_argument("--rtstruct", action="store_true", help="also write a DICOM RTSTRUCT for DICOM input (needs medseg[rtstruct])")
    out.add_argument("--seg-nrrd", action="store_true", help="also write a 3D Slicer segmentation (.seg.nrrd)")
    out.add_argument("--no-viewer", action="store_true", help="no interactive viewer page per case")
    post = p.add_argument_group("post-processing")
    post.add_argument("--largest-component", choices=("auto", "on", "off"), default="auto",
                      help="keep the largest component per class (auto: where the model's validation found it helps)")
    post.add_argument("--min-size", type=float, default=0.0, metavar="MM3", help="remove components under MM3 mm^3")
    post.add_argument("--fill-holes", action="store_true", help="fill enclosed holes in every class")
    post.add_argument("--remap", default="", metavar="A:B,...", help="map label values, e.g. 2:1,3:0")
    post.add_argument("--instances", default="", metavar="CLASSES",
                      help="write an instance map + table for these classes (values or names, comma-separated)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the models once, predict every case, write outputs and the run manifest."""
    from medseg.errors import InputError, MedsegError
    from medseg.inference import OutputOptions, PostprocessOptions, PredictOptions, Predictor, find_sources
    from medseg.inference.loading import folder_kind
    from medseg.inference.outputs import MANIFEST_NAME, build_manifest, write_json
    from medseg.inference.postprocess import parse_remap
    from medseg.io.atomic import ensure_writable_dir

    started = time.perf_counter()
    options = PredictOptions(device=args.device, backend=args.backend, precision=args.precision, tta=args.tta,
                             overlap=args.overlap, tiles_per_batch=args.tiles_per_batch, fast=args.fast,
                             threads=args.threads)
    remap = parse_remap(args.remap)
    for folder in args.model:
        folder_kind(folder)
    if not args.input.exists():
        raise InputError(f"input {args.input} does not exist; check the -i path")
    if args.rtstruct:
        from medseg.io.rtstruct_writer import require_rt_utils

        require_rt_utils()
    ensure_writable_dir(args.output)
    with Predictor.from_folders(args.model, options) as predictor:
        load_seconds = time.perf_counter() - started
        post = PostprocessOptions(largest_component=args.largest_component, min_size_mm3=args.min_size,
                                  fill_holes=args.fill_holes, remap=remap,
                                  instances=parse_classes(args.instances, predictor.labels))
        output_options = OutputOptions(dicom_seg=not args.no_seg, probabilities=args.save_probabilities, resample=args.resample,
                                       qc=not args.no_qc, postprocess=post, rtstruct=args.rtstruct,
                                       seg_nrrd=args.seg_nrrd, viewer=not args.no_viewer)
        cases = find_sources(args.input, args.series, predictor.in_channels)
        results, failures = _predict_all(predictor, cases, args.output, output_options, args.quiet)
        timings = {"load_models": load_seconds, "total": time.perf_counter() - started}
        manifest = build_manifest(predictor, output_options, results, failures, timings, [str(args.input)],
                                  ["medseg", *sys.argv[1:]])
    write_json(manifest, args.output / MANIFEST_NAME)
    log.info("segmented %d of %d case(s) into %s in %.1f s (manifest: %s)", len(results), len(cases), args.output,
             timings["total"], MANIFEST_NAME)
    if failures and len(cases) == 1:
        raise MedsegError(failures[0]["error"])
    return 3 if failures else 0


def _predict_all(predictor, cases, out_dir: Path, options, quiet: bool):
    """Predict every case; one bad case is logged and recorded, the others go on."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from medseg.errors import MedsegError
    from medseg.inference import predict_case

    results, failures = [], []
    with logging_redirect_tqdm():
        for case in tqdm(cases, unit="case", desc="predict", disable=quiet or len(cases) < 2):
            try:
                results.append(predict_case(predictor, case, out_dir, options))
            except MedsegError as exc:
                log.error("%s: %s", case.case_id, exc)
                failures.append({"case_id": case.case_id, "source": case.describe(), "error": str(exc)})
    return results, failures


def parse_classes(text: str, labels: dict[int, str]) -> tuple[int, ...]:
    """``"1,tumour"`` -> label values, names resolved with the model's labels (ConfigError if unknown)."""
    from medseg.errors import ConfigError

    by_name = {name.lower(): value for value, name in labels.items()}
    values = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        if item.isdigit():
            values.append(int(item))
        elif item.lower() in by_name:
            values.append(by_name[item.lower()])
        else:
            choices = ", ".join(f"{v}={n}" for v, n in labels.items() if v)
            raise ConfigError(f"--instances: unknown class {item!r}; the model's classes are {choices}")
    return tuple(values)
