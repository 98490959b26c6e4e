"""Object statistics of an instance dataset: what planning an instance model decides from.

Per image (:class:`ImageObjects`, measured by :func:`medseg.evaluation.objects.measure_objects`):
the object count, each object's size (pixels / voxels; mm² / mm³ when the spacing is known),
equivalent diameter, box extent along ``i, j, k`` (for anchor sizes and aspect ratios), how many
objects touch another one, and a sample of every channel's values over the whole image and over
the objects (for per-channel normalisation).

Pooled (:meth:`ObjectFingerprint.summary`): count per image (min, median, mean, max, total); size,
diameter and box-extent percentiles 5 / 50 / 95; the touching fraction (touching objects / all
objects); per-channel intensity statistics (:class:`~medseg.training.fingerprint.ChannelStats`)
of the images and of their objects; image shapes and spacings. Millimetre figures are ``None``
unless every sampled image states its spacing.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from medseg.errors import InputError
from medseg.evaluation.objects import measure_objects
from medseg.training.dataset import Case, DatasetSpec, read_case
from medseg.training.fingerprint import SAMPLES_PER_CASE, ChannelStats

if TYPE_CHECKING:
    from medseg.volume import Volume

log = logging.getLogger(__name__)

PERCENTILES = (5.0, 50.0, 95.0)


@dataclass(frozen=True, eq=False)
class ImageObjects:
    """The objects of one image; arrays hold one value (``box_extents``: one row) per object."""

    case: str
    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float] | None
    sizes: np.ndarray
    sizes_mm: np.ndarray | None
    diameters: np.ndarray
    box_extents: np.ndarray
    touching: int
    image_samples: tuple[np.ndarray, ...]
    object_samples: tuple[np.ndarray, ...]

    @property
    def count(self) -> int:
        """Number of objects."""
        return int(self.sizes.size)


def image_objects(
    case: str, channels: list[Volume], instances: Volume, samples: int, rng: np.random.Generator
) -> ImageObjects:
    """Measure one image: its instance map and its channel images (each 3D, on the map's grid)."""
    table = measure_objects(instances, None, case=case)
    objects = table.objects
    boxes = np.array([o.box for o in objects], dtype=np.int64).reshape(-1, 6)
    labels = np.asarray(instances.array).ravel()
    inside = np.flatnonzero(labels > 0)
    every = rng.choice(labels.size, min(samples, labels.size), replace=False)
    picked = inside if inside.size <= samples else rng.choice(inside, samples, replace=False)
    values = [np.asarray(c.array).ravel() for c in channels]
    return ImageObjects(
        case=case,
        shape=instances.spatial_shape,
        spacing_mm=table.spacing_mm,
        sizes=np.array([o.size for o in objects], dtype=np.int64),
        sizes_mm=np.array([o.size_mm for o in objects], dtype=np.float64) if table.spacing_mm else None,
        diameters=np.array([o.diameter for o in objects], dtype=np.float64),
        box_extents=boxes[:, 3:] - boxes[:, :3],
        touching=sum(o.touching for o in objects),
        image_samples=tuple(v[every].astype(np.float64) for v in values),
        object_samples=tuple(v[picked].astype(np.float64) for v in values),
    )


@dataclass(frozen=True, eq=False)
class ObjectFingerprint:
    """Object statistics of ``len(images)`` of a dataset's ``n_cases`` cases."""

    n_cases: int
    channels: tuple[str, ...]
    images: tuple[ImageObjects, ...]

    @property
    def counts(self) -> np.ndarray:
        """Objects per image."""
        return np.array([im.count for im in self.images], dtype=np.int64)

    @property
    def touching_fraction(self) -> float:
        """Share of all objects that touch another object (0 when there are no objects)."""
        total = int(self.counts.sum())
        return sum(im.touching for im in self.images) / total if total else 0.0

    def pooled(self, name: str) -> np.ndarray:
        """One per-object array (``sizes``, ``sizes_mm``, ``diameters``, ``box_extents``) over all images."""
        arrays = [getattr(im, name) for im in self.images]
        if any(a is None for a in arrays):
            raise ValueError(f"{name} is unknown for images without a stated spacing")
        width = arrays[0].shape[1:] if arrays else ()
        return np.concatenate(arrays) if arrays else np.zeros((0, *width))

    def intensity(self, objects: bool) -> tuple[ChannelStats, ...]:
        """Per-channel statistics of the sampled pixels of the images (``objects=False``) or objects."""
        field = "object_samples" if objects else "image_samples"
        return tuple(
            ChannelStats.of(np.concatenate([getattr(im, field)[c] for im in self.images]))
            for c in range(len(self.channels))
        )

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary (see the module docstring)."""
        counts = self.counts
        known = all(im.spacing_mm is not None for im in self.images)
        shapes = np.array([im.shape for im in self.images], dtype=np.int64)
        return {
            "n_cases": self.n_cases,
            "n_images": len(self.images),
            "dims": 2 if bool(np.all(shapes[:, 2] == 1)) else 3,
            "spacing_known": known,
            "spacing_mm": _spread(np.array([im.spacing_mm for im in self.images])) if known else None,
            "shape": _spread(shapes),
            "objects_per_image": {
                "min": int(counts.min()),
                "median": float(np.median(counts)),
                "mean": round(float(counts.mean()), 3),
                "max": int(counts.max()),
                "total": int(counts.sum()),
            },
            "size_voxels": _percentiles(self.pooled("sizes")),
            "size_mm": _percentiles(self.pooled("sizes_mm")) if known else None,
            "diameter_voxels": _percentiles(self.pooled("diameters")),
            "box_extent_voxels": _percentiles(self.pooled("box_extents")),
            "touching_fraction": round(self.touching_fraction, 6),
            "intensity": [
                {"channel": name, "image": _stats(i), "objects": _stats(o)}
                for name, i, o in zip(self.channels, self.intensity(False), self.intensity(True))
            ],
        }


def _percentiles(values: np.ndarray) -> dict[str, Any]:
    """Percentiles 5/50/95 (per column for 2D arrays); empty lists when there are no objects."""
    if values.shape[0] == 0:
        return {f"p{p:g}": [] for p in PERCENTILES}
    result = np.percentile(values.astype(np.float64), PERCENTILES, axis=0)
    return {f"p{p:g}": np.round(r, 4).tolist() for p, r in zip(PERCENTILES, result)}


def _spread(values: np.ndarray) -> dict[str, list[float]]:
    return {
        "median": np.median(values, axis=0).tolist(),
        "min": values.min(axis=0).tolist(),
        "max": values.max(axis=0).tolist(),
    }


def _stats(stats: ChannelStats) -> dict[str, float]:
    return {k: round(v, 6) for k, v in vars(stats).items()}


def compute_object_fingerprint(
    spec: DatasetSpec,
    max_cases: int | None = None,
    samples_per_case: int = SAMPLES_PER_CASE,
    seed: int = 0,
    workers: int = 2,
) -> ObjectFingerprint:
    """Measure the labelled cases of an instance dataset (up to ``max_cases``, spread evenly).

    Needs ``spec.instances`` and at least one labelled case; deterministic for a given ``seed``.
    """
    if not spec.instances:
        raise InputError(
            f"dataset {spec.name!r} holds label maps, not instance maps; object statistics need "
            'an images/ + labels/ instance folder or "instances": true in dataset.json'
        )
    cases = _pick([c for c in spec.cases if c.label is not None], max_cases)
    if not cases:
        raise InputError(f"dataset {spec.name!r} has no labelled case; object statistics need instance maps")
    seeds = np.random.SeedSequence(seed).spawn(len(cases))

    def one(n: int) -> ImageObjects:
        channels, label = read_case(cases[n], spec)
        if label is None:  # cannot happen: only labelled cases are picked
            raise InputError(f"case {cases[n].id} has no label")
        return image_objects(cases[n].id, channels, label, samples_per_case, np.random.default_rng(seeds[n]))

    if workers > 1 and len(cases) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            images = list(pool.map(one, range(len(cases))))
    else:
        images = [one(n) for n in range(len(cases))]
    return ObjectFingerprint(len(spec.cases), spec.channels, tuple(images))


def _pick(cases: list[Case], max_cases: int | None) -> list[Case]:
    if max_cases is None or max_cases >= len(cases):
        return cases
    if max_cases < 1:
        raise InputError(f"max_cases must be at least 1, got {max_cases}")
    index = np.unique(np.linspace(0, len(cases) - 1, max_cases).round().astype(int))
    log.info("object fingerprint from %d of %d labelled cases", len(index), len(cases))
    return [cases[i] for i in index]
