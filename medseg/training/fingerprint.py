"""Dataset fingerprint: the statistics the planner decides from.

Per case (on the closest-RAS axes, as preprocessing will see them): voxel spacing and shape;
per channel a sample of foreground intensities (voxels with label > 0); per class the voxel
count and volume (mL). Pooled: intensity percentiles 0.5 / 50 / 99.5, mean, std, min, max per
channel, class frequencies, and per foreground class the range of its volume per case
(``label_volume_ml``, which inference compares predictions with, see
:mod:`medseg.inference.suitability`). Cases are read with :func:`medseg.training.dataset.read_case`, so the dataset checks
run here too and a bad case stops planning with its name.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from medseg.model.preprocess import canonical_geometry
from medseg.training.dataset import Case, DatasetSpec, read_case

if TYPE_CHECKING:
    from medseg.model.plan import Plan
    from medseg.training.cache import CaseCache

log = logging.getLogger(__name__)

#: foreground intensities sampled per case and channel (nnU-Net samples 10,000)
SAMPLES_PER_CASE = 10_000


@dataclass(frozen=True)
class ChannelStats:
    """Foreground intensity statistics of one channel, pooled over the sampled voxels."""

    p00_5: float
    median: float
    p99_5: float
    mean: float
    std: float
    min: float
    max: float

    @classmethod
    def of(cls, values: np.ndarray) -> ChannelStats:
        """Statistics of a 1D sample (all zeros when the sample is empty)."""
        if values.size == 0:
            return cls(0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0)
        v = values.astype(np.float64)
        low, mid, high = np.percentile(v, [0.5, 50.0, 99.5])
        return cls(float(low), float(mid), float(high), float(v.mean()), float(v.std()), float(v.min()), float(v.max()))


@dataclass(frozen=True, eq=False)
class Fingerprint:
    """Statistics of ``n_sampled`` of a dataset's ``n_cases`` cases (all unless subsampled).

    ``spacings`` and ``shapes`` are (n_sampled, 3) along canonical axes; ``class_voxels`` counts
    voxels per label value over the sampled cases; ``class_volumes_ml`` holds per foreground
    class its volume in each sampled case (0 where absent; empty when not measured).
    """

    n_cases: int
    spacings: np.ndarray
    shapes: np.ndarray
    channels: tuple[str, ...]
    intensities: tuple[ChannelStats, ...]
    class_voxels: dict[int, int]
    class_volumes_ml: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def n_sampled(self) -> int:
        """Number of cases the statistics were computed from."""
        return int(len(self.spacings))

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary (what ``plan.json`` stores under ``fingerprint``)."""
        total = max(1, sum(self.class_voxels.values()))
        return {
            "n_cases": self.n_cases,
            "n_cases_sampled": self.n_sampled,
            "spacing": _range(self.spacings, float),
            "shape": _range(self.shapes, int),
            "intensity": [
                {"channel": name, **{k: round(v, 6) for k, v in vars(stats).items()}}
                for name, stats in zip(self.channels, self.intensities)
            ],
            "class_frequency": {str(k): round(v / total, 8) for k, v in sorted(self.class_voxels.items())},
            **({"label_volume_ml": label_volume_summary(self.class_volumes_ml)} if self.class_volumes_ml else {}),
        }


def label_volume_summary(volumes: Mapping[int, Sequence[float] | np.ndarray]) -> dict[str, dict[str, float]]:
    """``{"1": {"min", "median", "max"}, ...}`` in mL from each foreground class's volume per case.

    Needs one value per case and class (0 where the class is absent). Promises rounded JSON-ready
    numbers, classes in increasing order.
    """
    summary = {}
    for value, per_case in sorted(volumes.items()):
        v = np.asarray(per_case, dtype=np.float64)
        if v.size:
            summary[str(value)] = {
                "min": round(float(v.min()), 4),
                "median": round(float(np.median(v)), 4),
                "max": round(float(v.max()), 4),
            }
    return summary


def cached_label_volumes(cache: CaseCache, plan: Plan) -> dict[str, dict[str, float]]:
    """:func:`label_volume_summary` of the labels in a training cache (on the plan's grid: voxels x
    the target voxel volume), for plans made without it (``[plan] file``, older plans)."""
    voxel_ml = float(np.prod(plan.target_spacing)) / 1000.0
    classes = [c for c in plan.labels if c != 0]
    volumes: dict[int, list[float]] = {c: [] for c in classes}
    for case_id in cache.case_ids:
        _, label = cache.load(case_id)
        counts = np.bincount(np.asarray(label).ravel(), minlength=max(classes) + 1)
        for c in classes:
            volumes[c].append(float(counts[c]) * voxel_ml)
    return label_volume_summary(volumes)


def _range(values: np.ndarray, kind: type) -> dict[str, list]:
    return {
        "median": [kind(v) for v in np.median(values, axis=0)],
        "min": [kind(v) for v in values.min(axis=0)],
        "max": [kind(v) for v in values.max(axis=0)],
    }


@dataclass(frozen=True, eq=False)
class _CaseStats:
    spacing: tuple[float, ...]
    shape: tuple[int, ...]
    samples: tuple[np.ndarray, ...]
    class_voxels: dict[int, int]


def compute_fingerprint(
    spec: DatasetSpec,
    max_cases: int | None = None,
    samples_per_case: int = SAMPLES_PER_CASE,
    seed: int = 0,
    workers: int = 2,
) -> Fingerprint:
    """Read (up to ``max_cases``, spread evenly over the dataset) cases and pool their statistics.

    Needs labelled cases (foreground = label > 0). Deterministic for a given ``seed``.
    """
    cases = _pick(spec.cases, max_cases)
    rng_seeds = np.random.SeedSequence(seed).spawn(len(cases))

    def one(index: int) -> _CaseStats:
        return _case_stats(cases[index], spec, samples_per_case, np.random.default_rng(rng_seeds[index]))

    if workers > 1 and len(cases) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            stats = list(pool.map(one, range(len(cases))))
    else:
        stats = [one(i) for i in range(len(cases))]
    counts: dict[int, int] = {}
    for s in stats:
        for k, v in s.class_voxels.items():
            counts[k] = counts.get(k, 0) + v
    foreground = sorted(k for k in counts if k != 0)
    volumes = {
        k: np.array([s.class_voxels.get(k, 0) * float(np.prod(s.spacing)) / 1000.0 for s in stats]) for k in foreground
    }
    intensities = tuple(
        ChannelStats.of(np.concatenate([s.samples[c] for s in stats])) for c in range(len(spec.channels))
    )
    return Fingerprint(
        n_cases=len(spec.cases),
        spacings=np.array([s.spacing for s in stats], dtype=np.float64),
        shapes=np.array([s.shape for s in stats], dtype=np.int64),
        channels=spec.channels,
        intensities=intensities,
        class_voxels=dict(sorted(counts.items())),
        class_volumes_ml=volumes,
    )


def _pick(cases: tuple[Case, ...], max_cases: int | None) -> list[Case]:
    if max_cases is None or max_cases >= len(cases):
        return list(cases)
    if max_cases < 1:
        from medseg.errors import ConfigError

        raise ConfigError(f"max_cases must be at least 1, got {max_cases}")
    index = np.unique(np.linspace(0, len(cases) - 1, max_cases).round().astype(int))
    log.info("fingerprint from %d of %d cases", len(index), len(cases))
    return [cases[i] for i in index]


def _case_stats(case: Case, spec: DatasetSpec, samples: int, rng: np.random.Generator) -> _CaseStats:
    images, label = read_case(case, spec)
    shape, spacing = canonical_geometry(images[0].affine, images[0].spatial_shape)
    if label is None:
        from medseg.errors import InputError

        raise InputError(f"case {case.id} has no label; planning needs labelled cases")
    label_array = np.asarray(label.array)
    foreground = np.flatnonzero(label_array.ravel() > 0)
    pick = foreground if foreground.size <= samples else rng.choice(foreground, samples, replace=False)
    drawn = tuple(np.asarray(image.array).ravel()[pick].astype(np.float64) for image in images)
    counts = np.bincount(label_array.ravel().astype(np.intp))
    return _CaseStats(spacing, shape, drawn, {int(k): int(v) for k, v in enumerate(counts) if v})
