"""The one image object of medseg: a voxel array and its geometry, carried together everywhere.

Convention (named once, converted only at the boundaries):

* ``array`` is indexed ``[i, j, k]`` (optionally ``[i, j, k, c]`` for frames/channels), the same
  index order as nibabel. ``i`` runs along the DICOM row direction (columns of a slice), ``j``
  along the column direction (rows of a slice), ``k`` along the slice normal.
* ``affine`` maps voxel indices ``(i, j, k, 1)`` to **RAS+** world coordinates in millimetres
  (nibabel's convention: +x = Right, +y = Anterior, +z = Superior). DICOM and SimpleITK use
  LPS+; :data:`LPS_TO_RAS` converts between the two at those boundaries only.

A ``Volume`` is immutable: its array is read-only and every operation returns a new Volume.
Labels (``kind == "label"``) must hold integers, so they can never be interpolated by mistake.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from medseg.errors import GeometryError, InputError

if TYPE_CHECKING:  # heavy or optional imports only for type checkers
    import nibabel as nib
    import SimpleITK as sitk
    from monai.data import MetaTensor

Kind = Literal["image", "label"]

#: Multiply an LPS affine by this (on the left) to get the RAS affine, and vice versa.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class VolumeMeta:
    """Where a volume came from. All fields are optional; none affects geometry.

    ``rescale`` is ``(slope, intercept)`` when a DICOM rescale was applied to the pixel values,
    ``None`` when no rescale was applied. ``label_names`` maps label values to names.
    ``spacing_known`` is False when the source did not say how large a voxel is (a PNG, a TIFF
    without resolution tags, a DICOM without PixelSpacing): the affine then counts in pixels, not
    millimetres, and nothing downstream may report its sizes or positions as millimetres.
    """

    modality: str | None = None
    series_uid: str | None = None
    description: str | None = None
    rescale: tuple[float, float] | None = None
    source: str | None = None
    label_names: Mapping[int, str] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    spacing_known: bool = True


def _readonly(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view


@dataclass(frozen=True)
class Volume:
    """A 3D (or 3D + frames/channels) voxel array with its voxel-to-RAS affine.

    Needs: ``array`` with 3 or 4 dimensions; ``affine`` a finite 4x4 matrix whose last row is
    ``[0, 0, 0, 1]`` and whose 3x3 part is invertible; integer ``array`` when ``kind`` is "label".
    Promises: the stored array is read-only; the affine is a float64 copy.
    """

    array: np.ndarray
    affine: np.ndarray
    kind: Kind = "image"
    meta: VolumeMeta = field(default_factory=VolumeMeta)

    def __post_init__(self) -> None:
        array = np.asarray(self.array)
        affine = np.array(self.affine, dtype=np.float64)
        if array.ndim not in (3, 4):
            raise InputError(
                f"a volume needs 3 dimensions (or 4 with frames/channels last), got shape "
                f"{array.shape}; pass a 3D image"
            )
        if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
            raise GeometryError(f"the affine must be a finite 4x4 matrix, got {affine.shape}")
        if not np.allclose(affine[3], [0, 0, 0, 1]):
            raise GeometryError(f"the affine's last row must be [0, 0, 0, 1], got {affine[3]}")
        if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
            raise GeometryError("the affine is singular (a zero spacing or parallel axes)")
        if self.kind not in ("image", "label"):
            raise ValueError(f"kind must be 'image' or 'label', got {self.kind!r}")
        if self.kind == "label" and not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
            raise InputError(
                f"a label volume must hold integers, got {array.dtype}; "
                "convert with Volume.as_label() which checks the values are whole numbers"
            )
        affine.flags.writeable = False
        object.__setattr__(self, "array", _readonly(array))
        object.__setattr__(self, "affine", affine)

    # ---------------------------------------------------------------- geometry
    @property
    def shape(self) -> tuple[int, ...]:
        """The array shape, ``(I, J, K)`` or ``(I, J, K, C)``."""
        return tuple(self.array.shape)

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """The first three dimensions of the array."""
        return tuple(self.array.shape[:3])

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along i, j, k (column norms of the affine)."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def direction(self) -> np.ndarray:
        """Unit direction cosines (RAS) of the i, j, k axes, as the columns of a 3x3 matrix."""
        return self.affine[:3, :3] / np.asarray(self.spacing)

    @property
    def origin(self) -> tuple[float, float, float]:
        """RAS position in mm of voxel (0, 0, 0)'s centre."""
        return tuple(float(v) for v in self.affine[:3, 3])  # type: ignore[return-value]

    @property
    def orientation(self) -> str:
        """Closest axis codes, e.g. ``"RAS"`` or ``"LPS"`` (nibabel's ``aff2axcodes``)."""
        import nibabel as nib

        return "".join(nib.aff2axcodes(self.affine))

    def same_grid(self, other: Volume, atol: float = 1e-3) -> bool:
        """True when ``other`` has the same spatial shape and an affine equal within ``atol``."""
        return self.spatial_shape == other.spatial_shape and bool(np.allclose(self.affine, other.affine, atol=atol))

    def require_3d(self) -> Volume:
        """Return self if it is 3D; raise a clear error for 4D input (or squeeze a length-1 4th axis)."""
        if self.array.ndim == 3:
            return self
        if self.array.shape[3] == 1:
            return self.with_array(self.array[..., 0])
        raise InputError(
            f"expected a 3D volume but {self.meta.source or 'the input'} has shape {self.shape} "
            "(4D: several frames or channels); extract one 3D volume first"
        )

    # ---------------------------------------------------------------- derivation
    def with_array(self, array: np.ndarray, kind: Kind | None = None, **meta: Any) -> Volume:
        """A new Volume on the same grid with another array (same first three dims)."""
        array = np.asarray(array)
        if array.shape[:3] != self.spatial_shape:
            raise GeometryError(f"new array shape {array.shape} does not match the grid {self.spatial_shape}")
        new_meta = replace(self.meta, **meta) if meta else self.meta
        return Volume(array, self.affine, kind or self.kind, new_meta)

    def with_meta(self, **meta: Any) -> Volume:
        """A new Volume with some metadata fields replaced."""
        return replace(self, meta=replace(self.meta, **meta))

    def as_label(self, dtype: Any = None) -> Volume:
        """This volume as a label map; fails if any value is not a whole number."""
        array = self.array
        if not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
            if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
                raise InputError(
                    f"{self.meta.source or 'the volume'} holds non-integer values; "
                    "a label map must contain whole numbers only"
                )
            top = float(array.max(initial=0))
            dtype = dtype or (np.uint8 if array.min(initial=0) >= 0 and top < 256 else np.int32)
        array = array.astype(dtype or array.dtype, copy=False)
        return Volume(array, self.affine, "label", self.meta)

    # ---------------------------------------------------------------- conversions
    def to_nibabel(self) -> nib.Nifti1Image:
        """A NIfTI-1 image with this affine as both qform and sform (codes 1, aligned)."""
        import nibabel as nib

        img = nib.Nifti1Image(np.asarray(self.array), self.affine)
        img.set_qform(self.affine, code=1)
        img.set_sform(self.affine, code=1)
        if self.kind == "label":
            img.header.set_intent("label")
        return img

    @classmethod
    def from_nibabel(
        cls, img: nib.spatialimages.SpatialImage, kind: Kind = "image", meta: VolumeMeta | None = None
    ) -> Volume:
        """Wrap a nibabel image; the array keeps its stored dtype (scaling applied if any)."""
        header = img.header
        slope, inter = header.get_slope_inter() if hasattr(header, "get_slope_inter") else (None, None)
        if slope is None or (slope == 1 and (inter or 0) == 0):
            array = np.asanyarray(img.dataobj)
        else:
            array = np.asarray(img.get_fdata(dtype=np.float32))
        return cls(array, img.affine, kind, meta or VolumeMeta())

    def to_sitk(self) -> sitk.Image:
        """A SimpleITK image (LPS origin/direction) with the same voxels and geometry."""
        import SimpleITK as sitk

        array = np.asarray(self.array)
        is_vector = array.ndim == 4
        zyx = np.ascontiguousarray(np.moveaxis(array[..., :], (0, 1, 2), (2, 1, 0)))
        image = sitk.GetImageFromArray(zyx, isVector=is_vector)
        lps = LPS_TO_RAS @ self.affine
        spacing = np.linalg.norm(lps[:3, :3], axis=0)
        image.SetSpacing([float(s) for s in spacing])
        image.SetOrigin([float(v) for v in lps[:3, 3]])
        image.SetDirection([float(v) for v in (lps[:3, :3] / spacing).ravel()])
        return image

    @classmethod
    def from_sitk(cls, image: sitk.Image, kind: Kind = "image", meta: VolumeMeta | None = None) -> Volume:
        """Wrap a 3D SimpleITK image (scalar or vector pixels)."""
        import SimpleITK as sitk

        if image.GetDimension() != 3:
            raise InputError(f"expected a 3D image, got {image.GetDimension()}D of size {image.GetSize()}")
        zyx = sitk.GetArrayFromImage(image)
        array = np.moveaxis(zyx, (0, 1, 2), (2, 1, 0))
        spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
        direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
        lps = np.eye(4)
        lps[:3, :3] = direction * spacing
        lps[:3, 3] = image.GetOrigin()
        return cls(array, LPS_TO_RAS @ lps, kind, meta or VolumeMeta())

    def to_monai(self) -> MetaTensor:
        """A channel-first MONAI ``MetaTensor`` (C, I, J, K) with the RAS affine in its meta."""
        import torch
        from monai.data import MetaTensor
        from monai.utils import SpaceKeys

        array = np.asarray(self.array)
        chw = array[None] if array.ndim == 3 else np.moveaxis(array, 3, 0)
        tensor = torch.from_numpy(np.array(chw, copy=True, order="C"))
        return MetaTensor(
            tensor,
            affine=torch.tensor(np.array(self.affine), dtype=torch.float64),
            meta={"space": SpaceKeys.RAS, "filename_or_obj": self.meta.source or ""},
        )

    @classmethod
    def from_monai(cls, tensor: MetaTensor, kind: Kind = "image", meta: VolumeMeta | None = None) -> Volume:
        """Wrap a channel-first MetaTensor (1 channel -> 3D volume, more -> channels last)."""
        from monai.utils import SpaceKeys

        space = tensor.meta.get("space", SpaceKeys.RAS)
        affine = np.asarray(tensor.affine, dtype=np.float64)
        if str(space).upper().endswith("LPS"):
            affine = LPS_TO_RAS @ affine
        array = tensor.detach().cpu().numpy()
        array = array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, 3)
        return cls(array, affine, kind, meta or VolumeMeta())
