"""DICOM RT Structure Sets (RTSTRUCT) out: a label map as one ROI per label, contoured by rt-utils.

rt-utils (``pip install "medseg[rtstruct]"``) traces each slice of a label's mask with OpenCV
and writes closed planar contours through the centres of the edge voxels, referencing every
source instance. medseg's reader (:func:`medseg.io.rtstruct.read_rtstruct`) counts voxel centres
on an outer contour as inside, so the contours read back as the same voxels.

rt-utils builds its pixel-to-patient matrix from the first slice, a constant slice step and
square pixels (it scales the row direction by the row spacing), so series with other pixels,
resampled series and multi-frame images are refused with the reason.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medseg.errors import ConfigError, GeometryError, InputError
from medseg.io.atomic import atomic_path
from medseg.io.palette import label_colour
from medseg.volume import Volume

if TYPE_CHECKING:
    import pydicom

    from medseg.io.dicom import DicomSeries

log = logging.getLogger(__name__)


def rtstruct_skip_reason(labels: Volume, source: DicomSeries) -> str | None:
    """Why ``labels`` cannot be written as an RTSTRUCT on ``source`` (None when it can)."""
    if not np.asarray(labels.array).any():
        return "the segmentation is empty"
    if source.resampled:
        return "the series was resampled onto a regular grid, so its voxels are no DICOM slices"
    if len(source.datasets) != source.volume.spatial_shape[2]:
        return "the series is a multi-frame image; rt-utils contours single-frame slices only"
    spacing = [float(v) for v in source.datasets[0].PixelSpacing]
    if abs(spacing[0] - spacing[1]) > 1e-4 * max(spacing):
        return f"its pixels are not square ({spacing[0]} x {spacing[1]} mm), which rt-utils cannot contour exactly"
    return None


def write_rtstruct(
    labels: Volume, source: DicomSeries, path: str | Path, names: Mapping[int, str] | None = None, label: str = "medseg"
) -> Path:
    """Write every label value present in ``labels`` as one ROI of an RTSTRUCT on ``source``.

    Needs a 3D label Volume on exactly ``source.volume``'s grid with some foreground, and a
    source series for which :func:`rtstruct_skip_reason` finds nothing (else InputError /
    GeometryError). ROI ``n`` is named from ``names`` (else ``labels.meta.label_names``, else
    ``label n``) and coloured from :mod:`medseg.io.palette`. Written atomically.
    """
    labels = labels.require_3d()
    if not labels.same_grid(source.volume):
        raise GeometryError(
            f"the labels (shape {labels.spatial_shape}) are not on the grid of series {source.info.uid} "
            f"(shape {source.volume.spatial_shape}); resample them onto the series first (nearest neighbour)"
        )
    reason = rtstruct_skip_reason(labels, source)
    if reason:
        raise InputError(f"no RTSTRUCT can be written for series {source.info.uid}: {reason}")
    names = dict(names or labels.meta.label_names or {})
    structure_set = _build(labels, source, names, label)
    with atomic_path(path) as tmp, _quiet():
        structure_set.save(str(tmp))
    return Path(path)


def _build(labels: Volume, source: DicomSeries, names: Mapping[int, str], label: str):  # -> rt_utils.RTStruct
    """The rt-utils structure set with one ROI per present label value, slices in rt-utils' order."""
    rt_utils, ds_helper, image_helper = require_rt_utils()
    order = np.argsort([image_helper.get_slice_position(ds) for ds in source.datasets], kind="stable")
    datasets = [source.datasets[k] for k in order]
    array = np.asarray(labels.array)
    with _quiet():
        structure_set = rt_utils.RTStruct(datasets, ds_helper.create_rtstruct_dataset(datasets))
        _describe(structure_set.ds, label)
        for value in sorted(int(v) for v in np.unique(array) if v > 0):
            mask = np.transpose(array == value, (1, 0, 2))[:, :, order]  # (rows, columns, slices)
            structure_set.add_roi(
                mask=np.ascontiguousarray(mask),
                color=list(label_colour(value)),
                name=str(names.get(value, f"label {value}"))[:64],
            )
    return structure_set


def _describe(ds: pydicom.Dataset, label: str) -> None:
    """Say who made the structure set (rt-utils fills in its authors' institution)."""
    from medseg.version import __version__

    ds.Manufacturer = "medseg"
    ds.ManufacturerModelName = label[:64]
    ds.SoftwareVersions = __version__
    ds.InstitutionName = ""
    ds.StructureSetLabel = label[:16]
    ds.SeriesDescription = f"{label} structures"[:64]


def require_rt_utils():
    """The rt-utils modules, or a one-line ConfigError saying how to install them."""
    try:
        import rt_utils
        from rt_utils import ds_helper, image_helper
    except ImportError as exc:
        raise ConfigError(
            f'RTSTRUCT output needs rt-utils ({exc}); install it with: pip install "medseg[rtstruct]"'
        ) from None
    return rt_utils, ds_helper, image_helper


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """rt-utils prints progress and pydicom warns (and logs) about the transfer-syntax attributes
    rt-utils sets: keep all of it out of the user's output."""
    pydicom_log = logging.getLogger("pydicom")
    level = pydicom_log.level
    pydicom_log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        pydicom_log.setLevel(level)
