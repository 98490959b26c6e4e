"""``medseg convert INPUT OUTPUT``: DICOM, DICOM SEG/RTSTRUCT and NIfTI/NRRD/MHA conversions.

* a DICOM folder, series or file -> NIfTI/NRRD/MHA (image volume, RAS affine);
* a DICOM SEG or RTSTRUCT file -> label NIfTI/NRRD/MHA on the grid of the image series it
  refers to (``--reference`` folder, else found by SeriesInstanceUID beside INPUT);
* a NIfTI/NRRD/MHA file -> another of these formats;
* a label NIfTI/NRRD/MHA file -> DICOM SEG (OUTPUT ``.dcm``) referencing ``--reference``;
* a label file, SEG or RTSTRUCT -> 3D Slicer segmentation (OUTPUT ``.seg.nrrd``; overlapping
  segments/ROIs go to further layers, nothing lost).

A SEG or RTSTRUCT becomes one label map (where structures overlap, the later ROI or the higher
segment number wins, and a warning names them) or, with ``--masks``, a 4D file with one mask per
structure (channel ``n - 1`` is structure ``n`` of the ``.json`` sidecar). Label maps get Slicer
and ITK-SNAP colour tables beside them. The output format follows OUTPUT's suffix; every output
is written atomically.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from medseg.cli.options import add_dicom_reader_options

if TYPE_CHECKING:
    from medseg.io.dicom import DicomSeries
    from medseg.io.masks import StructureMasks
    from medseg.volume import Volume

log = logging.getLogger("medseg.convert")

SEG_SUFFIX = ".dcm"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``convert`` subcommand."""
    parser = subparsers.add_parser(
        "convert",
        help="convert DICOM series, DICOM SEG/RTSTRUCT and NIfTI/NRRD/MHA files",
        description="Convert one input to one output file, format by OUTPUT suffix (.nii.gz, .nii, .nrrd, "
        ".mha, .mhd; .dcm writes a DICOM SEG from a label file). INPUT is a DICOM folder or file, "
        "a DICOM SEG or RTSTRUCT file (converted to a label map on its image series), or a "
        "NIfTI/NRRD/MHA file.",
    )
    parser.add_argument(
        "input", type=Path, metavar="INPUT", help="DICOM folder/file, SEG/RTSTRUCT file, or volume file"
    )
    parser.add_argument("output", type=Path, metavar="OUTPUT", help="output file; its suffix picks the format")
    parser.add_argument(
        "--series",
        metavar="SEL",
        help="which DICOM series: index from 'medseg series', SeriesInstanceUID or description "
        "pattern (needed when a folder holds several image series)",
    )
    add_dicom_reader_options(parser)
    parser.add_argument(
        "--reference",
        type=Path,
        metavar="DICOM_FOLDER",
        help="folder holding the image series a SEG/RTSTRUCT refers to (default: search the "
        "folder INPUT is in), or the series to write a DICOM SEG for",
    )
    parser.add_argument(
        "--roi",
        dest="rois",
        action="append",
        metavar="NAME",
        help="RTSTRUCT only: convert this ROI (repeat for several; default all, in file order)",
    )
    parser.add_argument(
        "--masks",
        action="store_true",
        help="SEG/RTSTRUCT only: write one mask per structure (4D, channel n-1 = structure n) so "
        "overlapping ROIs/segments lose nothing",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Convert ``args.input`` to ``args.output``; returns 0 or raises a MedsegError."""
    from medseg.errors import InputError
    from medseg.io.atomic import ensure_writable_dir
    from medseg.io.files import write_volume_file

    source, target = Path(args.input), Path(args.output)
    output_kind = _output_kind(target)
    if not source.exists():
        raise InputError(f"{source} does not exist; check the path")
    kind = input_kind(source)
    _check_masks_option(args, kind)
    ensure_writable_dir(target.parent)
    if output_kind == "seg":
        _write_seg(source, kind, target, args)
        return 0
    if output_kind == "segnrrd":
        _write_seg_nrrd(source, kind, target, args)
        return 0
    volume = _read(source, kind, args)
    write_volume_file(volume, target)
    if volume.kind == "label" and volume.array.ndim == 3 and volume.meta.label_names:
        from medseg.io.colour_tables import write_colour_tables

        write_colour_tables(volume.meta.label_names, target)
    on_series = f" on image series {volume.meta.series_uid}" if kind in ("seg", "rtstruct") else ""
    log.info(
        "wrote %s: %s %s, spacing %s mm, %s%s",
        target,
        volume.kind,
        "x".join(map(str, volume.shape)),
        " x ".join(f"{s:.4g}" for s in volume.spacing),
        volume.orientation,
        on_series,
    )
    return 0


def _output_kind(target: Path) -> str:
    """``"volume"`` or ``"seg"`` from OUTPUT's suffix; ConfigError for anything else."""
    from medseg.errors import ConfigError
    from medseg.io.atomic import full_suffix
    from medseg.io.files import VOLUME_SUFFIXES
    from medseg.io.segnrrd import SEG_NRRD_SUFFIX

    suffix = full_suffix(target).lower()
    if suffix in VOLUME_SUFFIXES:
        return "volume"
    if suffix == SEG_SUFFIX:
        return "seg"
    if suffix == SEG_NRRD_SUFFIX:
        return "segnrrd"
    raise ConfigError(
        f"cannot tell the output format of {target.name!r}; end OUTPUT with one of "
        f"{', '.join(VOLUME_SUFFIXES)} (or .dcm for a DICOM SEG, .seg.nrrd for a Slicer segmentation)"
    )


def _check_masks_option(args: argparse.Namespace, kind: str) -> None:
    """``--masks`` needs a SEG or RTSTRUCT input."""
    from medseg.errors import ConfigError

    if getattr(args, "masks", False) and kind not in ("seg", "rtstruct"):
        raise ConfigError("--masks needs a DICOM SEG or RTSTRUCT file as INPUT (one mask per segment or ROI)")


def input_kind(path: Path) -> str:
    """What INPUT is: ``"volume"`` file, ``"seg"``, ``"rtstruct"`` or other ``"dicom"`` (file/folder)."""
    from medseg.io.files import is_volume_file
    from medseg.io.rtstruct import RTSTRUCT_SOP_CLASS
    from medseg.io.seg import SEG_SOP_CLASSES

    if path.is_dir():
        return "dicom"
    if is_volume_file(path):
        return "volume"
    sop_class = _sop_class(path)
    if sop_class in SEG_SOP_CLASSES:
        return "seg"
    if sop_class == RTSTRUCT_SOP_CLASS:
        return "rtstruct"
    return "dicom"


def _sop_class(path: Path) -> str:
    """SOPClassUID of a DICOM file ('' when unreadable; the DICOM loader reports why)."""
    import pydicom

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, force=True, specific_tags=["SOPClassUID"])
        return str(header.get("SOPClassUID", ""))
    except Exception:  # not DICOM or damaged: left to the loader's one-line error
        return ""


def _read(source: Path, kind: str, args: argparse.Namespace) -> Volume:
    """The 3D volume INPUT stands for (image, or label map for SEG/RTSTRUCT/labelled files)."""
    from medseg.io.files import read_volume_file

    if kind == "volume":
        names = read_label_names(source)
        volume = read_volume_file(source, kind="label" if names else "image").require_3d()
        return volume.with_meta(label_names=names) if names else volume
    if kind in ("seg", "rtstruct"):
        return _read_labels(source, kind, args)
    from medseg.io.dicom import load_volume

    return load_volume(
        source,
        select=args.series,
        resample=args.resample,
        allow_missing_slices=args.allow_missing_slices,
        values=args.values,
    ).require_3d()


def _read_labels(source: Path, kind: str, args: argparse.Namespace) -> Volume:
    """A SEG or RTSTRUCT rasterised onto the image series it refers to (4D masks with ``--masks``)."""
    if getattr(args, "masks", False):
        return _read_masks(source, kind, args).masks
    from medseg.io.rtstruct import open_rtstruct, read_rtstruct, referenced_series_uids
    from medseg.io.seg import read_seg, seg_referenced_series_uids

    if kind == "seg":
        series = reference_series(source, seg_referenced_series_uids(source), args)
        return read_seg(source, series)
    series = reference_series(source, referenced_series_uids(open_rtstruct(source)), args)
    return read_rtstruct(source, series, args.rois)


def _read_masks(source: Path, kind: str, args: argparse.Namespace) -> StructureMasks:
    """One mask per SEG segment or RTSTRUCT ROI; says which structures overlap."""
    from medseg.io.rtstruct import open_rtstruct, read_rtstruct_masks, referenced_series_uids
    from medseg.io.seg import read_seg_masks, seg_referenced_series_uids

    if kind == "seg":
        structures = read_seg_masks(source, reference_series(source, seg_referenced_series_uids(source), args))
    else:
        series = reference_series(source, referenced_series_uids(open_rtstruct(source)), args)
        structures = read_rtstruct_masks(source, series, args.rois)
    what = "segments" if kind == "seg" else "ROIs"
    message = structures.overlap_message(what)
    log.info(
        "%s: %d %s, one mask each%s",
        source,
        len(structures.names),
        what,
        f"; {message} (kept in every mask)" if message else "; none overlap",
    )
    return structures


def _write_seg_nrrd(source: Path, kind: str, target: Path, args: argparse.Namespace) -> None:
    """A label file, SEG or RTSTRUCT as a 3D Slicer segmentation (overlaps in further layers)."""
    from medseg.io.files import read_volume_file
    from medseg.io.segnrrd import write_labels_seg_nrrd, write_masks_seg_nrrd

    if kind in ("seg", "rtstruct"):
        write_masks_seg_nrrd(_read_masks(source, kind, args), target)
    elif kind == "volume":
        labels = read_volume_file(source, kind="label").require_3d()
        write_labels_seg_nrrd(labels, target, read_label_names(source) or None)
    else:
        from medseg.errors import ConfigError

        raise ConfigError("a .seg.nrrd OUTPUT needs a label NIfTI/NRRD/MHA file, a DICOM SEG or an RTSTRUCT as INPUT")
    log.info("wrote Slicer segmentation %s", target)


def reference_series(source: Path, uids: Sequence[str], args: argparse.Namespace) -> DicomSeries:
    """Load the image series ``uids`` names, from ``--reference`` or the folder INPUT is in.

    ``--series`` overrides the match by UID. Never guesses: a missing or ambiguous series is a
    one-line DicomError naming the UIDs and the folder searched.
    """
    from medseg.errors import DicomError
    from medseg.io.dicom import discover_series, load_series, select_series

    folder = Path(args.reference) if args.reference else source.parent
    infos = discover_series(folder)
    if args.series:
        info = select_series(infos, args.series)
    else:
        matches = [i for i in infos if i.is_image and (i.series_instance_uid or i.uid) in uids]
        if not uids:
            raise DicomError(
                f"{source} does not name the image series it refers to; pass --reference FOLDER and --series SEL"
            )
        if not matches:
            raise DicomError(
                f"{source} refers to image series {', '.join(uids)}, which is not in {folder}; "
                "pass --reference with the folder holding that series"
            )
        if len(matches) > 1:
            raise DicomError(
                f"image series {uids[0]} in {folder} was split into {len(matches)} parts; "
                f"choose one with --series: {', '.join(m.label for m in matches)}"
            )
        info = matches[0]
    log.debug("reference image series %s", info.label)
    return load_series(info, resample=args.resample, min_slices=1)


def _write_seg(source: Path, kind: str, target: Path, args: argparse.Namespace) -> None:
    """Write a label file as a DICOM SEG on the ``--reference`` series."""
    from medseg.errors import ConfigError
    from medseg.io.dicom import discover_series, load_series, select_series
    from medseg.io.files import read_volume_file
    from medseg.io.seg import write_seg

    if kind != "volume":
        raise ConfigError("a .dcm OUTPUT (DICOM SEG) needs a label NIfTI/NRRD/MHA file as INPUT")
    if not args.reference:
        raise ConfigError(
            "writing a DICOM SEG needs --reference DICOM_FOLDER holding the image series the labels lie on"
        )
    labels = read_volume_file(source, kind="label").require_3d()
    series = load_series(select_series(discover_series(args.reference), args.series), min_slices=1)
    write_seg(labels, series, target, read_label_names(source) or None)
    log.info("wrote DICOM SEG %s referencing series %s", target, series.info.label)


def read_label_names(path: Path) -> dict[int, str]:
    """Label names from the ``<name>.json`` sidecar medseg writes beside label files (else {})."""
    from medseg.io.files import sidecar_path

    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        return {}
    try:
        labels = json.loads(sidecar.read_text(encoding="utf-8")).get("labels", {})
        return {int(value): str(name) for value, name in labels.items() if int(value) > 0}
    except (ValueError, AttributeError, TypeError):
        log.warning("ignoring %s: not a label-name sidecar", sidecar)
        return {}
