"""2D images (PNG, TIFF) in and out as one-slice :class:`~medseg.volume.Volume` objects.

How a 2D image maps into a Volume (the Volume conventions, as the DICOM reader places a 2D slice):

* A file's pixels are ``(rows, columns)`` = ``(H, W)``, or ``(H, W, C)`` with samples last. The
  Volume array is indexed ``[i, j, k(, c)]`` with ``i`` = column (x), ``j`` = row (y) and one
  slice ``k``: shape ``(W, H, 1)`` or ``(W, H, 1, C)``. :func:`image_pixels` gives the file's
  ``(H, W[, C])`` back, so ``volume.array[x, y, 0] == pixels[y, x]``.
* Colour is kept: grey -> 3D array, RGB -> 3 channels. An alpha channel is transparency, not a
  measurement: it is dropped (with a warning when some pixels are not opaque) unless
  ``keep_alpha=True``. Grey images stored as RGB stay RGB (three equal channels).
* Placement: the plane as ITK and DICOM place an image without patient geometry: origin 0, rows
  along +x and columns along +y in LPS, so the RAS affine is ``diag(-dx, -dy, 1)``.
* Spacing: a TIFF's resolution tags (ResolutionUnit inch / centimetre, or ImageJ's ``unit`` with
  ResolutionUnit none) give the pixel size in mm. A PNG's pHYs chunk is a print resolution, not
  a sample spacing, and is ignored. Without a stated size the affine counts in pixels and
  ``meta.spacing_known`` is False: nothing downstream reports millimetres for such an image.

Label / instance maps are written with :func:`write_image2d` as single-channel uint16 PNG or
TIFF (uint32 TIFF above 65535) of exactly the image's ``H x W``, atomically.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medseg.errors import InputError, OutputError
from medseg.io.atomic import atomic_path
from medseg.volume import LPS_TO_RAS, Kind, Volume, VolumeMeta

if TYPE_CHECKING:
    from tifffile import TiffFile

log = logging.getLogger(__name__)

PNG_SUFFIXES = (".png",)
TIFF_SUFFIXES = (".tif", ".tiff")
IMAGE2D_SUFFIXES = PNG_SUFFIXES + TIFF_SUFFIXES

#: millimetres per unit of TIFF ResolutionUnit (2 inch, 3 centimetre) and of ImageJ's ``unit``
_TIFF_UNIT_MM = {2: 25.4, 3: 10.0}
_IMAGEJ_UNIT_MM = {
    "mm": 1.0,
    "millimeter": 1.0,
    "cm": 10.0,
    "um": 1e-3,
    "micron": 1e-3,
    "\u00b5m": 1e-3,
    "\u03bcm": 1e-3,
    "microns": 1e-3,
    "nm": 1e-6,
    "inch": 25.4,
}


# ------------------------------------------------------------------------------------ geometry
def image_affine(spacing: tuple[float, float] | None) -> np.ndarray:
    """The RAS affine of a 2D image without patient geometry: ``i`` (column index) along LPS +x,
    ``j`` (row index) along LPS +y, origin 0. ``spacing`` is (row spacing, column spacing) in mm,
    or None for pixel units."""
    row_mm, col_mm = spacing if spacing is not None else (1.0, 1.0)
    if not (row_mm > 0 and col_mm > 0 and np.isfinite(row_mm) and np.isfinite(col_mm)):
        raise InputError(f"pixel spacing must be positive and finite, got {spacing}")
    return LPS_TO_RAS @ np.diag([col_mm, row_mm, 1.0, 1.0])


def volume_from_pixels(
    pixels: np.ndarray,
    spacing: tuple[float, float] | None,
    kind: Kind = "image",
    meta: VolumeMeta | None = None,
    affine: np.ndarray | None = None,
) -> Volume:
    """A one-slice Volume from a file's ``(H, W)`` or ``(H, W, C)`` pixels.

    ``spacing`` (row, column) in mm or None (unknown: pixel units, ``meta.spacing_known`` False).
    ``affine`` overrides the default placement (a DICOM image with patient geometry).
    Promises array shape ``(W, H, 1)`` or ``(W, H, 1, C)``.
    """
    pixels = np.asarray(pixels)
    if pixels.ndim not in (2, 3):
        raise InputError(f"a 2D image needs (rows, columns[, samples]) pixels, got shape {pixels.shape}")
    array = np.swapaxes(pixels, 0, 1)[:, :, None, ...]
    meta = meta or VolumeMeta()
    if spacing is None and meta.spacing_known:
        meta = replace(meta, spacing_known=False)
    volume = Volume(array, image_affine(spacing) if affine is None else affine, "image", meta)
    return volume.as_label() if kind == "label" else volume


def is_2d(volume: Volume) -> bool:
    """True for a one-slice volume (a 2D image): spatial shape ``(W, H, 1)``."""
    return volume.spatial_shape[2] == 1


#: ``meta.extra["format"]`` of the 2D image readers (:func:`read_image2d`, :mod:`medseg.io.dicom.image2d`)
IMAGE2D_FORMATS = frozenset({"png", "tif", "tiff", "dicom"})


def is_image_file_2d(volume: Volume) -> bool:
    """True for a volume read from a 2D image file: PNG, TIFF or a single-frame 2D DICOM image."""
    return is_2d(volume) and volume.meta.extra.get("format") in IMAGE2D_FORMATS


def image_pixels(volume: Volume) -> np.ndarray:
    """The ``(H, W)`` or ``(H, W, C)`` pixels of a one-slice volume, as a file stores them (a view).

    Needs a volume with one slice (InputError otherwise).
    """
    if not is_2d(volume):
        raise InputError(
            f"{volume.meta.source or 'the volume'} has {volume.spatial_shape[2]} slices (shape "
            f"{volume.spatial_shape}); a 2D image has one: write 3D maps as NIfTI"
        )
    return np.swapaxes(np.asarray(volume.array)[:, :, 0, ...], 0, 1)


# ------------------------------------------------------------------------------------ reading
def read_image2d(path: str | Path, kind: Kind = "image", keep_alpha: bool = False) -> Volume:
    """Read a PNG or TIFF 2D image into a one-slice Volume (see the module docstring).

    Needs an existing ``.png``, ``.tif`` or ``.tiff`` file holding one 2D image (grey, grey +
    alpha, RGB, RGBA or palette; TIFF also ImageJ multi-channel). A label (``kind="label"``)
    must be single-channel integers (palette PNGs give their indices). Raises InputError with
    a one-line message otherwise.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise InputError(f"{path} does not exist; check the path")
    try:
        if suffix in PNG_SUFFIXES:
            pixels, spacing = _read_png(path, kind), None
        elif suffix in TIFF_SUFFIXES:
            pixels, spacing = _read_tiff(path)
        else:
            raise InputError(f"{path}: not a 2D image suffix; use one of {', '.join(IMAGE2D_SUFFIXES)}")
    except InputError:
        raise
    except Exception as exc:  # Pillow / tifffile raise many types for corrupt files
        raise InputError(
            f"{path} could not be read as {suffix} ({type(exc).__name__}: {exc}); is the file complete?"
        ) from None
    pixels = _channels(pixels, path, kind, keep_alpha)
    meta = VolumeMeta(source=str(path), extra={"format": suffix.lstrip(".")})
    return volume_from_pixels(pixels, spacing, kind, meta)


def _png_bit_depth_and_colour(path: Path) -> tuple[int, int]:
    """Bit depth and colour type from the PNG IHDR chunk (bytes 24 and 25 of the file)."""
    with open(path, "rb") as handle:
        head = handle.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n":
        raise InputError(f"{path} is not a PNG file (bad signature); check the file")
    return head[24], head[25]


def _read_png(path: Path, kind: Kind) -> np.ndarray:
    """PNG pixels: Pillow, except 16-bit colour (Pillow reduces it to 8 bits) through SimpleITK."""
    from PIL import Image

    depth, colour = _png_bit_depth_and_colour(path)
    if depth == 16 and colour in (2, 6):  # 16-bit RGB / RGBA
        import SimpleITK as sitk

        return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    if depth == 16 and colour == 4:
        raise InputError(
            f"{path} is a 16-bit grey + alpha PNG, which no reader here decodes losslessly; save it as TIFF"
        )
    with Image.open(path) as image:
        if image.mode == "P" and kind == "image":
            image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        elif image.mode == "1":
            image = image.convert("L")
        return np.asarray(image)


def _read_tiff(path: Path) -> tuple[np.ndarray, tuple[float, float] | None]:
    """TIFF pixels (first series, samples / ImageJ channels last) and the stated spacing."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        axes, data = series.axes, series.asarray()
        spacing = _tiff_spacing(tif)
    if axes in ("CYX", "SYX"):
        data, axes = np.moveaxis(data, 0, -1), "YXS"
    if axes not in ("YX", "YXS"):
        raise InputError(
            f"{path} holds a {axes} image of shape {data.shape}; medseg reads 2D TIFF images (YX, with "
            "optional samples): save one 2D image per file, or a 3D stack as NIfTI"
        )
    return data, spacing


def _tiff_spacing(tif: TiffFile) -> tuple[float, float] | None:
    """(row, column) pixel size in mm from XResolution/YResolution and the unit; None when unstated."""
    tags = tif.pages.first.tags
    x_res, y_res, unit_tag = tags.get("XResolution"), tags.get("YResolution"), tags.get("ResolutionUnit")
    if x_res is None or y_res is None:
        return None
    unit = int(unit_tag.value) if unit_tag is not None else 2  # TIFF 6.0 default: inch
    unit_mm = _TIFF_UNIT_MM.get(unit)
    if unit_mm is None:
        ij_unit = str((tif.imagej_metadata or {}).get("unit", "")).strip().lower()
        unit_mm = _IMAGEJ_UNIT_MM.get(ij_unit)
    per_unit = [_rational(x_res.value), _rational(y_res.value)]
    if unit_mm is None or not all(v > 0 for v in per_unit):
        return None
    return unit_mm / per_unit[1], unit_mm / per_unit[0]


def _rational(value: tuple[int, int] | float) -> float:
    if isinstance(value, tuple):
        return value[0] / value[1] if value[1] else 0.0
    return float(value)


def _channels(pixels: np.ndarray, path: Path, kind: Kind, keep_alpha: bool) -> np.ndarray:
    """Drop (or keep) the alpha sample; squeeze one sample; labels must be single-channel."""
    if pixels.ndim == 3 and pixels.shape[2] in (2, 4) and not keep_alpha:
        alpha = pixels[..., -1]
        opaque = np.iinfo(alpha.dtype).max if np.issubdtype(alpha.dtype, np.integer) else 1.0
        if alpha.size and alpha.min() < opaque:
            log.warning("%s: the alpha channel has transparent pixels; it is dropped (colour kept as stored)", path)
        pixels = pixels[..., :-1]
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    if kind == "label" and pixels.ndim != 2:
        raise InputError(
            f"{path} has {pixels.shape[2]} colour channels; a label map must be one channel of integers "
            "(a grey, 16-bit or palette image)"
        )
    return pixels


# ------------------------------------------------------------------------------------ writing
def write_image2d(volume: Volume, path: str | Path) -> Path:
    """Write a one-slice volume as PNG or TIFF (by suffix) with exactly its ``H x W``, atomically.

    Label volumes are written single-channel as uint16 (PNG, TIFF) or uint32 (TIFF, above 65535).
    Images keep uint8/uint16 (PNG: grey, RGB, RGBA) or any dtype (TIFF). A TIFF gets resolution
    tags in centimetres when ``meta.spacing_known``. Raises OutputError for what the format
    cannot hold (several slices, negative labels, >65535 labels in PNG, float PNG).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE2D_SUFFIXES:
        raise OutputError(f"{path}: cannot write {suffix!r} as a 2D image; use one of {', '.join(IMAGE2D_SUFFIXES)}")
    if not is_2d(volume):
        raise OutputError(
            f"{path}: a {suffix} file holds one 2D image, but the volume has shape {volume.spatial_shape}; "
            "write 3D maps as .nii.gz"
        )
    pixels = _label_pixels(volume, path) if volume.kind == "label" else image_pixels(volume)
    with atomic_path(path) as tmp:
        if suffix in PNG_SUFFIXES:
            _write_png(pixels, tmp, path)
        else:
            _write_tiff(pixels, tmp, _written_spacing(volume))
    return path


def _label_pixels(volume: Volume, path: Path) -> np.ndarray:
    pixels = image_pixels(volume)
    if pixels.ndim != 2:
        raise OutputError(f"{path}: a label map has one channel, got shape {pixels.shape}")
    low, high = (int(pixels.min()), int(pixels.max())) if pixels.size else (0, 0)
    if low < 0:
        raise OutputError(f"{path}: label maps hold non-negative values, found {low}")
    if high <= 65535:
        return pixels.astype(np.uint16)
    if path.suffix.lower() in PNG_SUFFIXES:
        raise OutputError(f"{path}: {high} labels do not fit a 16-bit PNG; write .tif (uint32) or .nii.gz")
    return pixels.astype(np.uint32)


def _write_png(pixels: np.ndarray, tmp: Path, path: Path) -> None:
    from PIL import Image

    if pixels.dtype not in (np.uint8, np.uint16) or (pixels.dtype == np.uint16 and pixels.ndim != 2):
        raise OutputError(
            f"{path}: PNG holds 8-bit grey/RGB(A) or 16-bit grey, got {pixels.dtype} "
            f"with shape {pixels.shape}; write .tif or .nii.gz"
        )
    if pixels.ndim == 3 and pixels.shape[2] not in (3, 4):
        raise OutputError(f"{path}: PNG holds 1, 3 or 4 channels, got {pixels.shape[2]}; write .tif")
    Image.fromarray(np.ascontiguousarray(pixels)).save(tmp, format="PNG")


def _write_tiff(pixels: np.ndarray, tmp: Path, spacing: tuple[float, float] | None) -> None:
    import tifffile

    photometric = "rgb" if pixels.ndim == 3 and pixels.shape[2] in (3, 4) else "minisblack"
    resolution, unit = None, None
    if spacing is not None:  # pixels per centimetre across (columns) and down (rows)
        resolution, unit = (10.0 / spacing[1], 10.0 / spacing[0]), "CENTIMETER"
    tifffile.imwrite(
        tmp,
        np.ascontiguousarray(pixels),
        photometric=photometric,
        compression="zlib",
        resolution=resolution,
        resolutionunit=unit,
    )


def _written_spacing(volume: Volume) -> tuple[float, float] | None:
    """(row, column) spacing in mm to record in a TIFF, None when unknown."""
    if not volume.meta.spacing_known:
        return None
    col_mm, row_mm, _ = volume.spacing
    return row_mm, col_mm
