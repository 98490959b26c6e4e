"""Objects of an instance map, measured: one record per instance with its box, size, centroid,
intensity and whether it touches another object (scikit-image ``regionprops``).

Coordinates follow the Volume conventions: voxel indices ``i, j, k`` (for a 2D image ``i`` = column,
``j`` = row, ``k`` = 0, see :mod:`medseg.io.image2d`) and world positions in RAS millimetres from
the affine. World values (``*_mm``) are ``None`` when the image's spacing is unknown
(``meta.spacing_known`` False): pixel units are never reported as millimetres.

* ``box``: ``(i0, j0, k0, i1, j1, k1)``, start inclusive, stop exclusive (numpy slices).
* ``box_mm``: the axis-aligned RAS extent ``(x0, y0, z0, x1, y1, z1)`` of the box's voxel edges
  (all eight corners mapped by the affine; an oblique grid gives the enclosing world box). A
  one-slice image has no thickness: its box lies in the image plane.
* ``size``: pixels (2D: area) or voxels (3D: volume); ``size_mm``: mm² or mm³.
* ``diameter``: the equivalent diameter (circle of the same area, sphere of the same volume), in
  voxels and, from ``size_mm``, in mm (valid for anisotropic spacing too).
* ``touching``: the object shares a face (4-connectivity in 2D, 6 in 3D) with another object.
* ``on_border``: the object's box reaches the edge of the image (along an axis longer than 1).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medseg.errors import GeometryError, InputError

if TYPE_CHECKING:
    from skimage.measure._regionprops import RegionProperties

    from medseg.volume import Volume

#: the JSON file beside a predicted instance map that carries its table (and scores): <case>_objects.json
OBJECTS_JSON_SUFFIX = "_objects.json"


@dataclass(frozen=True)
class ObjectRecord:
    """One measured instance (see the module docstring for every field)."""

    instance: int
    class_value: int
    score: float | None
    size: int
    size_mm: float | None
    diameter: float
    diameter_mm: float | None
    box: tuple[int, int, int, int, int, int]
    box_mm: tuple[float, ...] | None
    centroid: tuple[float, float, float]
    centroid_mm: tuple[float, float, float] | None
    mean_intensity: tuple[float, ...]
    touching: bool
    on_border: bool

    def row(self, dims: int) -> dict[str, object]:
        """A flat dict for CSV/JSON; size columns are ``area_px``/``area_mm2`` (2D) or
        ``volume_voxels``/``volume_mm3`` (3D); ``None`` for unknown values."""
        size_name, size_mm_name = ("area_px", "area_mm2") if dims == 2 else ("volume_voxels", "volume_mm3")
        row: dict[str, object] = {
            "instance": self.instance,
            "class": self.class_value,
            "score": _round(self.score, 6),
            size_name: self.size,
            size_mm_name: _round(self.size_mm, 6),
            "diameter_px": _round(self.diameter, 4),
            "diameter_mm": _round(self.diameter_mm, 6),
        }
        row.update(zip(BOX_COLUMNS, self.box))
        row.update(zip(BOX_MM_COLUMNS, self.box_mm or (None,) * 6))
        row.update(zip(CENTROID_COLUMNS, (round(c, 4) for c in self.centroid)))
        row.update(zip(CENTROID_MM_COLUMNS, self.centroid_mm or (None,) * 3))
        row.update({f"mean_intensity_{c}": _round(v, 6) for c, v in enumerate(self.mean_intensity)})
        row.update({"touching": self.touching, "on_border": self.on_border})
        return row


BOX_COLUMNS = ("box_i0", "box_j0", "box_k0", "box_i1", "box_j1", "box_k1")
BOX_MM_COLUMNS = ("box_x0_mm", "box_y0_mm", "box_z0_mm", "box_x1_mm", "box_y1_mm", "box_z1_mm")
CENTROID_COLUMNS = ("centroid_i", "centroid_j", "centroid_k")
CENTROID_MM_COLUMNS = ("centroid_x_mm", "centroid_y_mm", "centroid_z_mm")


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


@dataclass(frozen=True)
class ObjectTable:
    """The objects of one image or volume. ``dims`` is 2 for a one-slice image, else 3;
    ``spacing_mm`` is None when the spacing is unknown; ``channels`` the image's channel count
    (0 when measured without an image)."""

    case: str
    dims: int
    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float] | None
    channels: int
    objects: tuple[ObjectRecord, ...]

    def columns(self) -> list[str]:
        """The CSV columns, in order (also for an empty table)."""
        size = ["area_px", "area_mm2"] if self.dims == 2 else ["volume_voxels", "volume_mm3"]
        return (
            [
                "instance",
                "class",
                "score",
                *size,
                "diameter_px",
                "diameter_mm",
                *BOX_COLUMNS,
                *BOX_MM_COLUMNS,
                *CENTROID_COLUMNS,
                *CENTROID_MM_COLUMNS,
            ]
            + [f"mean_intensity_{c}" for c in range(self.channels)]
            + ["touching", "on_border"]
        )

    def rows(self) -> list[dict[str, object]]:
        """One flat dict per object (see :meth:`ObjectRecord.row`)."""
        return [o.row(self.dims) for o in self.objects]

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict: the image's geometry and the rows."""
        return {
            "case": self.case,
            "dims": self.dims,
            "shape": list(self.shape),
            "spacing_mm": list(self.spacing_mm) if self.spacing_mm else None,
            "spacing_known": self.spacing_mm is not None,
            "channels": self.channels,
            "count": len(self.objects),
            "objects": self.rows(),
        }


# ------------------------------------------------------------------------------ measuring
@dataclass(frozen=True)
class _Context:
    """What every record of one map needs: the grid, the units, the touching ids, classes and scores."""

    affine: np.ndarray
    shape: tuple[int, int, int]
    dims: int
    voxel_mm: float | None
    touching: set[int]
    classes: Mapping[int, int]
    scores: Mapping[int, float]
    with_intensity: bool


def measure_objects(
    instances: Volume,
    image: Volume | None = None,
    classes: Mapping[int, int] | None = None,
    scores: Mapping[int, float] | None = None,
    case: str = "",
) -> ObjectTable:
    """Measure every instance (non-zero value) of ``instances``.

    Needs an integer instance map and, when given, ``image`` on the same grid (its channels last,
    mean intensity per channel). ``classes`` / ``scores`` map instance ids to a class (default 1)
    and a score (default None). Promises one record per instance, in increasing id order.
    """
    from skimage.measure import regionprops

    labels = _spatial_labels(instances)
    intensity = _intensity(image, instances) if image is not None else None
    known = instances.meta.spacing_known and (image is None or image.meta.spacing_known)
    context = _Context(
        affine=instances.affine,
        shape=instances.spatial_shape,
        dims=2 if instances.spatial_shape[2] == 1 else 3,
        voxel_mm=abs(float(np.linalg.det(instances.affine[:3, :3]))) if known else None,
        touching=touching_ids(labels),
        classes=classes or {},
        scores=scores or {},
        with_intensity=intensity is not None,
    )
    records = tuple(_record(region, context) for region in regionprops(labels, intensity_image=intensity))
    return ObjectTable(
        case or _case(instances),
        context.dims,
        instances.spatial_shape,
        instances.spacing if known else None,
        _channels(image),
        records,
    )


def _spatial_labels(instances: Volume) -> np.ndarray:
    array = np.asarray(instances.array)
    if array.ndim != 3 or not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
        raise InputError(f"an instance map must be a 3D integer volume, got {array.dtype} with shape {array.shape}")
    if array.size and int(array.min()) < 0:
        raise InputError("an instance map holds non-negative ids (0 = background); found negative values")
    return array.astype(np.int64, copy=False) if array.dtype == np.bool_ else array


def _intensity(image: Volume, instances: Volume) -> np.ndarray:
    if not image.same_grid(instances):
        raise GeometryError(
            f"the image (shape {image.spatial_shape}) and its instance map (shape "
            f"{instances.spatial_shape}) lie on different grids; measure on the image's grid"
        )
    return np.asarray(image.array, dtype=np.float64)


def _channels(image: Volume | None) -> int:
    if image is None:
        return 0
    return 1 if image.array.ndim == 3 else int(image.array.shape[3])


def _case(volume: Volume) -> str:
    name = Path(volume.meta.source or "").name
    return name.split(".")[0] if name else ""


def _record(region: RegionProperties, ctx: _Context) -> ObjectRecord:
    iid, size = int(region.label), int(region.area)
    box = tuple(int(v) for v in region.bbox)
    centroid = tuple(float(c) for c in region.centroid)
    size_mm = size * ctx.voxel_mm if ctx.voxel_mm is not None else None
    known = ctx.voxel_mm is not None
    score = ctx.scores.get(iid)
    return ObjectRecord(
        instance=iid,
        class_value=int(ctx.classes.get(iid, 1)),
        score=None if score is None else float(score),
        size=size,
        size_mm=size_mm,
        diameter=equivalent_diameter(size, ctx.dims),
        diameter_mm=equivalent_diameter(size_mm, ctx.dims) if size_mm is not None else None,
        box=box,  # type: ignore[arg-type]
        box_mm=world_box(box, ctx.affine, ctx.dims) if known else None,
        centroid=centroid,  # type: ignore[arg-type]
        centroid_mm=_world(np.asarray(centroid), ctx.affine) if known else None,
        mean_intensity=tuple(float(v) for v in np.atleast_1d(region.intensity_mean)) if ctx.with_intensity else (),
        touching=iid in ctx.touching,
        on_border=any(n > 1 and (box[a] == 0 or box[a + 3] == n) for a, n in enumerate(ctx.shape)),
    )


def equivalent_diameter(size: float, dims: int) -> float:
    """Diameter of the circle (2D) or sphere (3D) with this area / volume."""
    return 2.0 * math.sqrt(size / math.pi) if dims == 2 else (6.0 * size / math.pi) ** (1.0 / 3.0)


def _world(point: np.ndarray, affine: np.ndarray) -> tuple[float, float, float]:
    x, y, z = (affine @ np.append(point, 1.0))[:3]
    return round(float(x), 4), round(float(y), 4), round(float(z), 4)


def world_box(box: tuple[int, ...], affine: np.ndarray, dims: int) -> tuple[float, ...]:
    """The RAS extent (x0, y0, z0, x1, y1, z1) of a voxel box's edges; a 2D box stays in its plane."""
    low = np.asarray(box[:3], dtype=np.float64) - 0.5
    high = np.asarray(box[3:], dtype=np.float64) - 0.5
    if dims == 2:
        low[2] = high[2] = 0.0
    corners = np.array([(*corner, 1.0) for corner in itertools.product(*zip(low, high))])
    world = (affine @ corners.T)[:3]
    return tuple(round(float(v), 4) for v in (*world.min(axis=1), *world.max(axis=1)))


def touching_ids(labels: np.ndarray) -> set[int]:
    """Ids of the objects that share a face with a different object (background excluded)."""
    found: list[np.ndarray] = []
    for axis in range(labels.ndim):
        a = np.take(labels, np.arange(labels.shape[axis] - 1), axis=axis)
        b = np.take(labels, np.arange(1, labels.shape[axis]), axis=axis)
        mask = (a != b) & (a > 0) & (b > 0)
        found.extend((a[mask], b[mask]))
    return {int(v) for v in np.unique(np.concatenate(found))} if found else set()


def instance_boxes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ids and boxes ``(n, 2 * ndim)`` (start inclusive, stop exclusive per axis) of every instance."""
    from skimage.measure import regionprops

    regions = regionprops(np.asarray(labels))
    ids = np.array([r.label for r in regions], dtype=np.int64)
    boxes = np.array([r.bbox for r in regions], dtype=np.float64).reshape(len(regions), 2 * labels.ndim)
    return ids, boxes


def read_object_scores(path: Path) -> dict[int, float] | None:
    """Scores by instance id from an objects JSON (``{"objects": [{"instance", "score"}, ...]}``);
    None when the file does not exist or lists no scores. InputError for an unreadable file."""
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        scores = {
            int(o["instance"]): float(o["score"]) for o in payload.get("objects", []) if o.get("score") is not None
        }
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise InputError(
            f"{path} cannot be read as an objects table ({type(exc).__name__}: {exc}); fix or remove it"
        ) from None
    return scores or None
