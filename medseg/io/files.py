"""Volume files: NIfTI (nibabel, gzip by ISA-L), NRRD and MHA/MHD (SimpleITK), and 2D PNG/TIFF images
(one-slice volumes, :mod:`medseg.io.image2d`). Reading (headers checked first, :mod:`medseg.io.limits`)
and atomic writing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from medseg.errors import InputError, MedsegError, OutputError, printable
from medseg.io.atomic import atomic_path, atomic_write_text, full_suffix
from medseg.io.image2d import IMAGE2D_SUFFIXES, read_image2d, write_image2d
from medseg.io.nifti import load_nifti, save_nifti
from medseg.io.sitk_io import read_sitk
from medseg.io.walk import os_reason
from medseg.volume import Kind, Volume, VolumeMeta

NIFTI_SUFFIXES = (".nii", ".nii.gz")
SITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
VOLUME_SUFFIXES = NIFTI_SUFFIXES + SITK_SUFFIXES + IMAGE2D_SUFFIXES


def has_volume_suffix(path: Path) -> bool:
    """True when the name of ``path`` ends like a NIfTI, NRRD, MHA/MHD, PNG or TIFF file (no file access)."""
    return full_suffix(path).lower() in VOLUME_SUFFIXES


def is_volume_file(path: Path) -> bool:
    """True when ``path`` is a file named like a NIfTI, NRRD, MHA/MHD, PNG or TIFF file."""
    return has_volume_suffix(path) and path.is_file()


def read_volume_file(path: str | Path, kind: Kind = "image") -> Volume:
    """Read a NIfTI/NRRD/MHA file, or a PNG/TIFF 2D image, into a Volume.

    Needs an existing file with a known suffix. Refuses (InputError, one line) complex voxels and
    headers that claim more voxel data than the file holds or than the size limit allows, before
    allocating it (:mod:`medseg.io.limits`). Promises finite values (NaN/Inf are refused with the
    count), the file's own affine (2D images: see :mod:`medseg.io.image2d`), and integer dtype for
    ``kind="label"``.
    """
    path = Path(path)
    _check_exists(path)
    suffix = full_suffix(path).lower()
    meta = VolumeMeta(source=str(path))
    if suffix in IMAGE2D_SUFFIXES:
        volume = read_image2d(path, kind=kind)
        _check_finite(volume, path)
        return volume
    try:
        if suffix in NIFTI_SUFFIXES:
            volume = Volume.from_nibabel(load_nifti(path), meta=meta)
        elif suffix in SITK_SUFFIXES:
            volume = Volume.from_sitk(read_sitk(path), meta=meta)
        else:
            raise InputError(
                f"{path}: unknown volume format {suffix!r}; use one of {', '.join(VOLUME_SUFFIXES)} or a DICOM folder"
            )
    except MedsegError:
        raise
    except MemoryError:
        raise InputError(f"{path}: not enough memory to read it; free memory or use a machine with more") from None
    except Exception as exc:  # nibabel/SimpleITK raise many types for corrupt files
        raise InputError(f"{path} could not be read as {suffix} ({_reason(exc)}); is the file complete?") from None
    _check_finite(volume, path)
    return volume.as_label() if kind == "label" else volume


def _check_exists(path: Path) -> None:
    """InputError when ``path`` is missing or the system refuses it (e.g. longer than the path limit)."""
    try:
        exists = path.exists()
    except OSError as exc:
        raise InputError(f"{path} cannot be used ({os_reason(exc)}); move it to a shorter or readable path") from None
    if not exists:
        raise InputError(f"{path} does not exist; check the path")


def _reason(exc: BaseException) -> str:
    """What a reader said, in one line (of a multi-line ITK message the last, which says why); its
    type when it said nothing."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return printable(lines[-1] if lines else "", 200) or type(exc).__name__


def _check_finite(volume: Volume, path: Path) -> None:
    array = volume.array
    if np.issubdtype(array.dtype, np.floating):
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise InputError(f"{path} holds {bad} NaN/Inf voxel(s); fix or mask them before segmenting")


def write_volume_file(volume: Volume, path: str | Path) -> Path:
    """Write ``volume`` atomically to NIfTI (qform and sform set), NRRD, MHA, or PNG/TIFF (one-slice
    volumes, :func:`medseg.io.image2d.write_image2d`) by suffix.

    A label volume written as NIfTI also gets a JSON sidecar ``<name>.json`` with its label
    names when ``volume.meta.label_names`` is set. Returns the written path.
    """
    path = Path(path)
    suffix = full_suffix(path).lower()
    if suffix not in VOLUME_SUFFIXES:
        raise OutputError(f"{path}: cannot write {suffix!r}; use one of {', '.join(VOLUME_SUFFIXES)}")
    if suffix in IMAGE2D_SUFFIXES:
        write_image2d(volume, path)
    else:
        with atomic_path(path) as tmp:
            if suffix in NIFTI_SUFFIXES:
                save_nifti(volume.to_nibabel(), tmp)
            else:
                import SimpleITK as sitk

                sitk.WriteImage(volume.to_sitk(), str(tmp), useCompression=True)
    if volume.kind == "label" and volume.meta.label_names:
        write_label_sidecar(volume, sidecar_path(path))
    return path


def sidecar_path(path: Path) -> Path:
    """``case.nii.gz`` -> ``case.json`` (the label-name sidecar beside a label file)."""
    return path.with_name(path.name[: -len(full_suffix(path))] + ".json")


def write_label_sidecar(volume: Volume, path: Path) -> None:
    """Write ``{"labels": {"0": "background", ...}}`` for a label volume's names, atomically."""
    names = {str(int(k)): str(v) for k, v in sorted((volume.meta.label_names or {}).items())}
    payload = {"labels": names, "source_series_uid": volume.meta.series_uid}
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
