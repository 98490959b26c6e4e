"""The prediction options of ``medseg predict`` and ``medseg batch``, written once.

:func:`add_prediction_options` registers them on a command's parser (series choice, inference,
outputs, post-processing); :func:`predict_options` and :func:`output_options` turn the parsed
arguments into the library's :class:`~medseg.inference.PredictOptions` and
:class:`~medseg.inference.OutputOptions` (with its :class:`~medseg.inference.PostprocessOptions`).
The choices are the library's own (:mod:`medseg.choices`). Heavy imports stay inside the
functions that build options, so registering the options keeps ``medseg --help`` instant.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import TYPE_CHECKING

from medseg.choices import BACKENDS, DEVICES, DICOM_VALUES, EXECUTORS, LARGEST_COMPONENT_MODES, PRECISIONS, TTA_MODES

if TYPE_CHECKING:
    from medseg.inference import OutputOptions, PredictOptions


def add_dicom_reader_options(parser: argparse.ArgumentParser) -> None:
    """Add how DICOM series are read (``--resample``, ``--allow-missing-slices``, ``--values``): the
    options of :func:`medseg.io.dicom.load_series`, shared by predict, batch and convert."""
    parser.add_argument(
        "--resample",
        action="store_true",
        help="resample DICOM series with gantry tilt, gaps or uneven slice spacing onto a regular grid "
        "(default: refuse them with the reason; no DICOM SEG is written for resampled series)",
    )
    parser.add_argument(
        "--allow-missing-slices",
        action="store_true",
        help="load the readable files of a DICOM series some of whose files cannot be read (truncated, "
        "unreadable, malformed), reporting them, instead of refusing it; a gap they leave is then "
        "refused unless --resample",
    )
    parser.add_argument(
        "--values",
        choices=DICOM_VALUES,
        default="rescaled",
        help="DICOM voxel values: 'rescaled' (default, stored values through RescaleSlope/Intercept) or "
        "'real-world' (Philips scale slopes / RealWorldValueMapping, as dcm2niix; see docs/dicom.md)",
    )


def add_prediction_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--series``, the DICOM reader options (``--resample``, ``--allow-missing-slices``,
    ``--values``), the inference, output and post-processing options to ``parser``."""
    parser.add_argument(
        "--series",
        metavar="SEL",
        help="DICOM series to segment: index or UID (as 'medseg series' lists them), or a description "
        "pattern (one series per study); default: every image series the selection rules keep",
    )
    add_dicom_reader_options(parser)
    _add_inference_options(parser.add_argument_group("inference"))
    _add_output_options(parser.add_argument_group("outputs"))
    _add_postprocess_options(parser.add_argument_group("post-processing"))


def _add_inference_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--tta", choices=TTA_MODES, default="off", help="mirroring test-time augmentation (default off)")
    group.add_argument(
        "--device", choices=DEVICES, default="auto", help="auto: CUDA when a GPU is visible, else the CPU"
    )
    group.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        type=_backend,
        help="inference runtime; auto: OpenVINO on the CPU when installed (exported once, cached), else torch",
    )
    group.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="auto: bf16 where the device runs it natively, fp16 on other CUDA GPUs, else fp32",
    )
    group.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="CPU threads of each predicting process (default: the usable CPUs, shared among batch workers)",
    )
    group.add_argument(
        "--overlap", type=float, default=0.5, metavar="F", help="sliding-window tile overlap (default 0.5)"
    )
    group.add_argument("--tiles-per-batch", type=int, metavar="N", help="tiles per network call (default 2 CPU, 4 GPU)")
    group.add_argument(
        "--fast",
        action="store_true",
        help="argmax on the preprocessed grid, then nearest-neighbour back (less memory, faster)",
    )
    group.add_argument(
        "--strict",
        action="store_true",
        help="refuse a case that does not suit the model's training data (modality, intensities, "
        "spacing, size, predicted volumes) instead of segmenting it with warnings",
    )


def _add_output_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--save-probabilities", action="store_true", help="also write 4D class probabilities")
    group.add_argument("--no-seg", action="store_true", help="no DICOM SEG for DICOM input")
    group.add_argument("--no-qc", action="store_true", help="no QC picture")
    group.add_argument(
        "--rtstruct",
        action="store_true",
        help='also a DICOM RTSTRUCT for DICOM input (needs rt-utils: pip install "medseg[rtstruct]")',
    )
    group.add_argument("--seg-nrrd", action="store_true", help="also a 3D Slicer segmentation (.seg.nrrd)")
    group.add_argument("--no-viewer", action="store_true", help="no interactive NiiVue viewer page per case")


def _add_postprocess_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--largest-component",
        choices=LARGEST_COMPONENT_MODES,
        default="auto",
        help="keep the largest component per class (auto: where the model's validation found it helps)",
    )
    group.add_argument("--min-size", type=float, default=0.0, metavar="MM3", help="remove components under MM3 mm^3")
    group.add_argument("--fill-holes", action="store_true", help="fill enclosed holes in every class")
    group.add_argument("--remap", default="", metavar="A:B,...", help="map label values, e.g. 2:1,3:0")
    group.add_argument(
        "--instances",
        default="",
        metavar="CLASSES",
        help="write an instance map + table for these classes (values or names, comma-separated)",
    )


def _backend(value: str) -> str:
    """``--backend`` value; an executor name gets a pointer to ``--executor`` (argparse then checks the choices)."""
    if value in EXECUTORS:
        raise argparse.ArgumentTypeError(
            f"{value!r} is a batch executor, not an inference backend: use --executor {value}; "
            f"--backend is the runtime, one of {', '.join(BACKENDS)}"
        )
    return value


def predict_options(args: argparse.Namespace) -> PredictOptions:
    """How the network runs, from the arguments :func:`add_prediction_options` added.

    Raises ConfigError for values the parser cannot check (threads, overlap, tiles per batch).
    """
    from medseg.errors import ConfigError
    from medseg.inference import PredictOptions

    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {args.threads}")
    return PredictOptions(
        device=args.device,
        backend=args.backend,
        precision=args.precision,
        tta=args.tta,
        overlap=args.overlap,
        tiles_per_batch=args.tiles_per_batch,
        fast=args.fast,
        threads=args.threads,
        strict=args.strict,
    )


def output_options(args: argparse.Namespace, labels: Mapping[int, str]) -> OutputOptions:
    """What is written per case, from the arguments :func:`add_prediction_options` added.

    Needs the model's ``labels`` (value -> name) to resolve ``--instances`` names. Raises
    ConfigError for a bad ``--remap``, ``--min-size`` or ``--instances`` value, and for
    ``--rtstruct`` without rt-utils installed.
    """
    from medseg.inference import OutputOptions, PostprocessOptions
    from medseg.inference.postprocess import parse_remap

    if args.rtstruct:
        from medseg.io.rtstruct_writer import require_rt_utils

        require_rt_utils()
    post = PostprocessOptions(
        largest_component=args.largest_component,
        min_size_mm3=args.min_size,
        fill_holes=args.fill_holes,
        remap=parse_remap(args.remap),
        instances=parse_classes(args.instances, labels),
    )
    return OutputOptions(
        dicom_seg=not args.no_seg,
        probabilities=args.save_probabilities,
        qc=not args.no_qc,
        postprocess=post,
        resample=args.resample,
        rtstruct=args.rtstruct,
        seg_nrrd=args.seg_nrrd,
        viewer=not args.no_viewer,
        allow_missing_slices=args.allow_missing_slices,
        values=args.values,
    )


def parse_classes(text: str, labels: Mapping[int, str]) -> tuple[int, ...]:
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
