"""Post-processing of label maps: pure numpy/scipy.ndimage functions on arrays with a spacing.

Connected components use full (26 in 3D) connectivity. Every function returns a new array and
leaves its input untouched. Work is done inside each structure's bounding box, so large
volumes with small structures stay fast.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from medseg.choices import LARGEST_COMPONENT_MODES
from medseg.errors import ConfigError

#: the key of model.json's post-processing decision (classes validation found it helps for)
MODEL_LARGEST_COMPONENT_KEY = "keep_largest_component"


@dataclass(frozen=True)
class PostprocessOptions:
    """What to do to the predicted labels before writing them.

    ``largest_component``: ``auto`` keeps only the largest component of the classes the model's
    validation found it helps (``spec.postprocessing["keep_largest_component"]``), ``on`` for every
    foreground class, ``off`` never. ``min_size_mm3`` removes smaller components (0 = keep all).
    ``remap`` maps label values to new ones (0 deletes). ``instances`` lists classes to split
    into instances (an extra output).
    """

    largest_component: str = "auto"
    min_size_mm3: float = 0.0
    fill_holes: bool = False
    remap: Mapping[int, int] = field(default_factory=dict)
    instances: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.largest_component not in LARGEST_COMPONENT_MODES:
            raise ConfigError(
                f"unknown largest-component mode {self.largest_component!r}; "
                f"choose one of {', '.join(LARGEST_COMPONENT_MODES)}"
            )
        if self.min_size_mm3 < 0:
            raise ConfigError(f"--min-size must be >= 0 mm3, got {self.min_size_mm3}")


def _structure(ndim: int) -> np.ndarray:
    from scipy import ndimage

    return ndimage.generate_binary_structure(ndim, ndim)


def _foreground_classes(labels: np.ndarray, classes: Iterable[int] | None) -> list[int]:
    present = [int(v) for v in np.unique(labels) if v != 0]
    return present if classes is None else [c for c in present if c in set(int(c) for c in classes)]


def _class_boxes(labels: np.ndarray) -> dict[int, tuple[slice, ...]]:
    """Bounding box (tuple of slices) of every non-zero value, found in one pass."""
    from scipy import ndimage

    if labels.size == 0 or labels.max() <= 0 or labels.min() < 0:
        values = [int(v) for v in np.unique(labels) if v != 0]
        return {v: ndimage.find_objects((labels == v).astype(np.int32))[0] for v in values}
    boxes = ndimage.find_objects(labels.astype(np.int64, copy=False))
    return {i + 1: box for i, box in enumerate(boxes) if box is not None}


def _class_masks(
    labels: np.ndarray, classes: Iterable[int] | None
) -> Iterator[tuple[int, tuple[slice, ...], np.ndarray]]:
    """``(value, box, mask)`` for each present foreground class (restricted to ``classes``):
    the class's bounding box and its boolean mask inside that box."""
    boxes = _class_boxes(labels)
    for value in _foreground_classes(labels, classes):
        box = boxes[value]
        yield value, box, labels[box] == value


def _components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Component map (int32) and voxel counts per component (index 0 = background)."""
    from scipy import ndimage

    components, n = ndimage.label(mask, structure=_structure(mask.ndim))
    return components, np.bincount(components.ravel(), minlength=n + 1)


def keep_largest_component(labels: np.ndarray, classes: Iterable[int] | None = None) -> np.ndarray:
    """Keep only the largest connected component of each listed class (all classes if None)."""
    out = labels.copy(order="K")
    for _, box, mask in _class_masks(labels, classes):
        components, counts = _components(mask)
        if len(counts) <= 2:
            continue
        keep = int(np.argmax(counts[1:])) + 1
        region = out[box]
        region[mask & (components != keep)] = 0
    return out


def voxel_volume_mm3(spacing: Sequence[float]) -> float:
    """Volume of one voxel in mm^3."""
    return float(np.prod(np.asarray(spacing, dtype=np.float64)))


def remove_small_components(
    labels: np.ndarray, spacing: Sequence[float], min_size_mm3: float, classes: Iterable[int] | None = None
) -> np.ndarray:
    """Set components smaller than ``min_size_mm3`` to background (per class)."""
    if min_size_mm3 <= 0:
        return labels.copy(order="K")
    min_voxels = min_size_mm3 / voxel_volume_mm3(spacing)
    out = labels.copy(order="K")
    for _, box, mask in _class_masks(labels, classes):
        components, counts = _components(mask)
        small = counts < min_voxels
        small[0] = False
        if small.any():
            out[box][small[components]] = 0
    return out


def fill_holes(labels: np.ndarray, classes: Iterable[int] | None = None) -> np.ndarray:
    """Fill enclosed background holes inside each class (holes holding another class are kept)."""
    from scipy import ndimage

    out = labels.copy(order="K")
    for value, box, mask in _class_masks(labels, classes):
        filled = ndimage.binary_fill_holes(mask)
        region = out[box]
        region[filled & ~mask & (region == 0)] = value
    return out


def remap_labels(labels: np.ndarray, mapping: Mapping[int, int]) -> np.ndarray:
    """Replace label values by ``mapping`` (values absent from the mapping stay); 0 deletes."""
    if not mapping:
        return labels.copy(order="K")
    if any(int(k) < 0 or int(v) < 0 for k, v in mapping.items()):
        raise ConfigError(f"label remap values must be >= 0, got {dict(mapping)}")
    top = max(int(labels.max(initial=0)), *(int(k) for k in mapping))
    table = np.arange(top + 1, dtype=np.int64)
    for src, dst in mapping.items():
        table[int(src)] = int(dst)
    dtype = np.uint8 if table.max() < 256 else np.uint16 if table.max() < 65536 else np.int32
    return table[labels].astype(dtype)


def remap_names(names: Mapping[int, str], mapping: Mapping[int, int]) -> dict[int, str]:
    """Label names after :func:`remap_labels`: a target keeps its own name, else takes the source's."""
    out = {int(k): v for k, v in names.items() if int(mapping.get(int(k), int(k))) == int(k)}
    for src, dst in mapping.items():
        if int(dst) != 0 and int(dst) not in out:
            out[int(dst)] = names.get(int(src), f"label_{dst}")
    return dict(sorted(out.items()))


def parse_remap(text: str) -> dict[int, int]:
    """``"3:1,4:0"`` -> ``{3: 1, 4: 0}``; a ConfigError shows the expected form."""
    mapping: dict[int, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            src, dst = (int(v) for v in item.split(":"))
        except ValueError:
            raise ConfigError(f"bad --remap item {item!r}; write pairs like 3:1,4:0") from None
        mapping[src] = dst
    return mapping


def largest_component_classes(mode: str, model_postprocessing: Mapping, labels: Mapping[int, str]) -> list[int]:
    """Classes to reduce to their largest component under ``mode`` (auto uses the model's choice)."""
    if mode == "off":
        return []
    if mode == "on":
        return sorted(int(k) for k in labels if int(k) != 0)
    return sorted(int(c) for c in model_postprocessing.get(MODEL_LARGEST_COMPONENT_KEY, []) or [])


def postprocess(
    labels: np.ndarray,
    spacing: Sequence[float],
    options: PostprocessOptions,
    largest_classes: Sequence[int] = (),
) -> np.ndarray:
    """Apply, in order: largest component, small-component removal, hole filling, remapping."""
    out = keep_largest_component(labels, largest_classes) if largest_classes else labels.copy(order="K")
    if options.min_size_mm3 > 0:
        out = remove_small_components(out, spacing, options.min_size_mm3)
    if options.fill_holes:
        out = fill_holes(out)
    return remap_labels(out, options.remap) if options.remap else out


@dataclass(frozen=True)
class Instance:
    """One connected component of a class. ``bbox`` is (start, stop) voxel indices per axis
    (stop exclusive); ``centroid_mm`` is the RAS world position of its centre of mass."""

    instance_id: int
    class_value: int
    class_name: str
    voxels: int
    volume_ml: float
    centroid_mm: tuple[float, float, float]
    bbox: tuple[tuple[int, int], ...]

    def row(self) -> dict:
        """A flat dict for CSV/JSON tables."""
        (i0, i1), (j0, j1), (k0, k1) = self.bbox
        x, y, z = self.centroid_mm
        return {
            "instance": self.instance_id,
            "class": self.class_value,
            "name": self.class_name,
            "voxels": self.voxels,
            "volume_ml": round(self.volume_ml, 4),
            "centroid_x_mm": round(x, 2),
            "centroid_y_mm": round(y, 2),
            "centroid_z_mm": round(z, 2),
            "bbox_i": f"{i0}-{i1}",
            "bbox_j": f"{j0}-{j1}",
            "bbox_k": f"{k0}-{k1}",
        }


def instance_map(
    labels: np.ndarray, affine: np.ndarray, classes: Sequence[int], names: Mapping[int, str] | None = None
) -> tuple[np.ndarray, list[Instance]]:
    """Split the listed classes into connected components numbered 1..N (class by class, largest first).

    Needs a 3D label array and its voxel->RAS affine. Returns an instance map (uint16, or int32
    beyond 65535 instances) on the same grid, and one :class:`Instance` per component.
    """
    from scipy import ndimage

    names = names or {}
    out = np.zeros(labels.shape, dtype=np.int32)
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    instances: list[Instance] = []
    for value, box, mask in _class_masks(labels, classes):
        offset = np.array([s.start for s in box])
        components, counts = _components(mask)
        order = np.argsort(-counts[1:], kind="stable") + 1
        index = list(range(1, len(counts)))
        centres = ndimage.center_of_mass(np.ones(components.shape), components, index)
        comp_boxes = ndimage.find_objects(components)
        table = np.zeros(len(counts), dtype=np.int32)
        table[order] = np.arange(len(instances) + 1, len(instances) + 1 + len(order))
        inside = components > 0
        out[box][inside] = table[components[inside]]
        for comp in order:
            iid = int(table[comp])
            centre = np.asarray(centres[comp - 1]) + offset
            world = affine @ np.append(centre, 1.0)
            bb = tuple((int(s.start + o), int(s.stop + o)) for s, o in zip(comp_boxes[comp - 1], offset))
            instances.append(
                Instance(
                    iid,
                    value,
                    names.get(value, f"label_{value}"),
                    int(counts[comp]),
                    float(counts[comp]) * voxel_ml,
                    (float(world[0]), float(world[1]), float(world[2])),
                    bb,
                )
            )
    dtype = np.uint16 if len(instances) < 65536 else np.int32
    return out.astype(dtype), instances
