"""Does an input suit the model? Each case is compared with the model's training data.

The plan of a model folder carries the training dataset's fingerprint (``plan.fingerprint``,
written by :mod:`medseg.training.fingerprint`): spacing and shape ranges along the canonical
axes, foreground intensity statistics per channel and, from this version on, the volume of
each class per training case (``label_volume_ml``). :func:`check_input` runs before the
network, :func:`check_labels` on its prediction; each returns one :class:`Finding` per problem.
The predictor records them (``Prediction.warnings``, the case statistics, the run manifest,
the batch ledger) and, with ``strict``, refuses the case (:class:`UnsuitableInputError`).

The rules (general, from the fingerprint and the plan only; a rule whose statistics the plan
lacks is skipped, see docs/inference.md):

* ``constant``: an image (channel) with one value, or with 99 % of its voxels on one value
  (its 0.5 and 99.5 percentiles equal).
* ``modality``: the input's DICOM Modality (when known) differs from the modality the plan's
  channel names (MRI/MR/T1/T2/FLAIR/ADC..., CT) or its ``ct`` normalisation say.
* ``intensity``: for channels whose values are used in absolute units (``ct`` and ``none``
  normalisation), fewer than 1 % of the voxels inside the training foreground's 0.5-99.5
  percentile range; for channels of non-negative training data (foreground minimum >= 0),
  more than 5 % of the voxels negative (a per-image z-score hides the scale, not this).
* ``spacing``: a voxel spacing more than 2x outside the training spacing range on an axis.
* ``size``: an extent (mm) more than 2x beyond the largest training image, or under half the
  smallest, on an axis (without shape statistics: under half the network's patch).
* ``volume``: a predicted class volume more than 3x outside the training range of that class's
  volume per case (below a third of the smallest, which includes none at all when every
  training case has the class, or above three times the largest).

Intensity statistics come from an even subsample of at most :data:`SAMPLE_VOXELS` voxels.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from medseg.errors import InputError
from medseg.model.preprocess import canonical_geometry

if TYPE_CHECKING:
    from medseg.model.plan import Plan
    from medseg.volume import Volume

#: spacing more than this factor outside the training spacing range warns
SPACING_FACTOR = 2.0
#: extent more than this factor beyond the training images' extents warns
EXTENT_FACTOR = 2.0
#: predicted class volume more than this factor outside the training volume range warns
VOLUME_FACTOR = 3.0
#: absolute-unit channels: warn when fewer voxels than this lie in the training foreground range
IN_RANGE_FRACTION = 0.01
#: non-negative training data: warn when more voxels than this are negative
NEGATIVE_FRACTION = 0.05
#: voxels sampled (evenly strided) for the intensity rules
SAMPLE_VOXELS = 1_000_000

#: DICOM Modality values an image series may carry (others, e.g. OT, say nothing about the image)
IMAGE_MODALITIES = frozenset({"CT", "MR", "PT", "NM", "US", "CR", "DX", "MG", "XA", "RF", "OP", "SM"})
#: channel names (upper case, letters and digits only) that mean MR
MR_CHANNELS = frozenset(
    {
        "MR",
        "MRI",
        "T1",
        "T1W",
        "T1C",
        "T1CE",
        "T1GD",
        "T2",
        "T2W",
        "T2STAR",
        "FLAIR",
        "PD",
        "PDW",
        "ADC",
        "DWI",
        "SWI",
        "DIXON",
    }
)


@dataclass(frozen=True)
class Finding:
    """One reason an input may not suit the model: the rule (``check``) and a one-line message."""

    check: str
    message: str

    def to_dict(self) -> dict[str, str]:
        """``{"check": ..., "message": ...}`` for JSON files and the batch ledger."""
        return {"check": self.check, "message": self.message}


class UnsuitableInputError(InputError):
    """A case refused under ``strict`` because its input does not suit the model."""


def refuse(findings: Sequence[Finding]) -> UnsuitableInputError:
    """The one-line error for a refused case (every finding, separated by ``;``)."""
    return UnsuitableInputError(
        "the input does not suit the model (--strict): "
        + "; ".join(f.message for f in findings)
        + "; check the input, or run without --strict to segment it anyway"
    )


# ---------------------------------------------------------------------- before the network
def check_input(images: Sequence[Volume], plan: Plan, spatial_dims: int = 3) -> list[Finding]:
    """Findings for one case's channel images (all on one grid) against ``plan`` and its fingerprint.

    Needs one Volume per plan channel. Promises at most one finding per rule and channel.
    """
    findings: list[Finding] = []
    for index, image in enumerate(images):
        prefix = f"channel {index + 1} ({plan.channels[index]}): " if len(images) > 1 else ""
        sample = intensity_sample(image.array)
        found = _constant(sample)
        if found is None:
            found = _intensity(sample, plan, index)
        findings += [Finding(f.check, prefix + f.message) for f in (_modality(image, plan, index), found) if f]
    if images and images[0].meta.spacing_known:
        findings += _geometry(images[0], plan, spatial_dims)
    return findings


def intensity_sample(array: np.ndarray, limit: int = SAMPLE_VOXELS) -> np.ndarray:
    """The finite values of an even strided subsample (at most about ``limit`` voxels) as float64."""
    array = np.asarray(array)
    step = max(1, math.ceil((array.size / limit) ** (1.0 / max(array.ndim, 1))))
    sample = np.asarray(array[(slice(None, None, step),) * array.ndim], dtype=np.float64).ravel()
    return sample[np.isfinite(sample)]


def _constant(sample: np.ndarray) -> Finding | None:
    if sample.size == 0:
        return Finding("constant", "the image holds no finite values: there is nothing to segment")
    low, high = float(sample.min()), float(sample.max())
    if low == high:
        return Finding("constant", f"the image is constant (every voxel is {low:g}): there is nothing to segment")
    p_low, p_high = np.percentile(sample, [0.5, 99.5])
    if p_low == p_high:
        share = float(np.mean(sample == p_low))
        return Finding("constant", f"the image is nearly constant ({100 * share:.1f}% of the voxels are {p_low:g})")
    return None


def channel_modality(name: str, scheme: str) -> str | None:
    """``"CT"`` or ``"MR"`` for a plan channel (its name, or a ``ct`` normalisation); None when unknown."""
    key = re.sub(r"[^A-Z0-9]", "", name.upper())
    if key.startswith("CT") or scheme == "ct":
        return "CT"
    if key in MR_CHANNELS or key.startswith("MR"):
        return "MR"
    return None


def _modality(image: Volume, plan: Plan, index: int) -> Finding | None:
    expected = channel_modality(plan.channels[index], plan.normalization[index].scheme)
    given = (image.meta.modality or "").upper().strip()
    if expected is None or given not in IMAGE_MODALITIES or given == expected:
        return None
    return Finding(
        "modality",
        f"the image is {given} (DICOM Modality) but the model was trained on {expected} ({plan.channels[index]})",
    )


def _channel_stats(plan: Plan, index: int) -> Mapping[str, Any] | None:
    stats = plan.fingerprint.get("intensity") or []
    return stats[index] if index < len(stats) and isinstance(stats[index], Mapping) else None


def _intensity(sample: np.ndarray, plan: Plan, index: int) -> Finding | None:
    """Absolute-unit channels against the training foreground range; non-negative data against negatives."""
    stats = _channel_stats(plan, index)
    if stats is None or not {"p00_5", "p99_5", "min"} <= set(stats):
        return None
    low, high = float(stats["p00_5"]), float(stats["p99_5"])
    if plan.normalization[index].scheme in ("ct", "none"):
        inside = float(np.mean((sample >= low) & (sample <= high)))
        if inside < IN_RANGE_FRACTION:
            return Finding(
                "intensity",
                f"only {100 * inside:.2f}% of the voxels lie in the training foreground "
                f"range [{low:g}, {high:g}] (other units or modality?)",
            )
    if float(stats["min"]) >= 0:
        negative = float(np.mean(sample < 0))
        if negative > NEGATIVE_FRACTION:
            return Finding(
                "intensity",
                f"{100 * negative:.0f}% of the voxels are negative (minimum "
                f"{float(sample.min()):g}) but the training images had none "
                "(another modality or units?)",
            )
    return None


def _geometry(image: Volume, plan: Plan, spatial_dims: int) -> list[Finding]:
    """Spacing and extent (mm) along the canonical axes against the training ranges."""
    shape, spacing = canonical_geometry(image.affine, image.spatial_shape)
    extent = np.asarray(shape, dtype=np.float64) * np.asarray(spacing)
    ranges = _training_ranges(plan)
    findings = []
    if ranges is not None:
        (s_min, s_max), (e_min, e_max) = ranges
        if np.any(spacing > SPACING_FACTOR * s_max) or np.any(spacing < s_min / SPACING_FACTOR):
            findings.append(
                Finding(
                    "spacing",
                    f"voxel spacing {_mm(spacing)} mm is more than {SPACING_FACTOR:g}x "
                    f"outside the training range {_range_mm(s_min, s_max)} mm",
                )
            )
        if np.any(extent > EXTENT_FACTOR * e_max):
            findings.append(
                Finding(
                    "size",
                    f"the image spans {_mm(extent, 0)} mm, more than {EXTENT_FACTOR:g}x the "
                    f"largest training image ({_mm(e_max, 0)} mm)",
                )
            )
        elif np.any(extent < e_min / EXTENT_FACTOR):
            findings.append(
                Finding(
                    "size",
                    f"the image spans {_mm(extent, 0)} mm, less than 1/{EXTENT_FACTOR:g} of "
                    f"the smallest training image ({_mm(e_min, 0)} mm)",
                )
            )
        return findings
    patch = _patch_mm(plan, spatial_dims)
    if np.any(extent < patch / EXTENT_FACTOR):
        findings.append(
            Finding(
                "size",
                f"the image spans {_mm(extent, 0)} mm, less than 1/{EXTENT_FACTOR:g} of the "
                f"network's patch ({_mm(patch, 0)} mm)",
            )
        )
    return findings


def _training_ranges(plan: Plan) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None:
    """((spacing min, max), (extent min, max)) per canonical axis from the fingerprint, or None.

    Extents are bounded from the shape and spacing ranges (smallest shape x finest spacing,
    largest shape x coarsest spacing), a range at least as wide as the training images' own.
    """
    fp = plan.fingerprint
    try:
        s_min, s_max = (np.asarray(fp["spacing"][k], dtype=np.float64) for k in ("min", "max"))
        n_min, n_max = (np.asarray(fp["shape"][k], dtype=np.float64) for k in ("min", "max"))
    except (KeyError, TypeError, ValueError):
        return None
    if not all(a.shape == (3,) for a in (s_min, s_max, n_min, n_max)):
        return None
    return (s_min, s_max), (n_min * s_min, n_max * s_max)


def _patch_mm(plan: Plan, spatial_dims: int) -> np.ndarray:
    """The network's patch in mm per canonical axis (a 2D model's slice axis: no lower bound)."""
    patch = np.zeros(3)
    config = plan.config(spatial_dims)
    axes = range(3) if spatial_dims == 3 else plan.in_plane_axes
    for axis, size in zip(axes, config.patch_size):
        patch[axis] = size * plan.target_spacing[axis]
    return patch


def _mm(values: Sequence[float] | np.ndarray, decimals: int = 2) -> str:
    return " x ".join(
        f"{float(v):.{decimals}f}".rstrip("0").rstrip(".") if decimals else f"{float(v):.0f}" for v in values
    )


def _range_mm(low: np.ndarray, high: np.ndarray) -> str:
    return _mm(low) if np.allclose(low, high) else f"{_mm(low)} to {_mm(high)}"


# ---------------------------------------------------------------------- after the network
def check_labels(labels: Volume, plan: Plan) -> list[Finding]:
    """Findings for predicted labels: each class's volume against its training volume range.

    Needs the plan's ``label_volume_ml`` (training statistics; older plans lack them and the rule
    is skipped). Promises one finding per class outside the range.
    """
    ranges = plan.fingerprint.get("label_volume_ml")
    if not isinstance(ranges, Mapping) or not labels.meta.spacing_known:
        return []
    counts = np.bincount(np.asarray(labels.array).ravel().astype(np.int64, copy=False))
    voxel_ml = abs(float(np.linalg.det(labels.affine[:3, :3]))) / 1000.0
    findings = []
    for key, stats in ranges.items():
        try:
            value, low, high = int(key), float(stats["min"]), float(stats["max"])
        except (KeyError, TypeError, ValueError):  # a hand-edited plan: say nothing rather than fail
            continue
        volume = float(counts[value]) * voxel_ml if 0 <= value < len(counts) else 0.0
        name = plan.labels.get(value, str(value))
        if volume == 0 and low > 0:
            findings.append(
                Finding(
                    "volume",
                    f"nothing predicted as {name}, though every training case has {low:.3g}-{high:.3g} mL of it",
                )
            )
        elif volume > VOLUME_FACTOR * high or volume < low / VOLUME_FACTOR:
            findings.append(
                Finding(
                    "volume",
                    f"predicted {name} volume {volume:.3g} mL is more than "
                    f"{VOLUME_FACTOR:g}x outside the training range {low:.3g}-{high:.3g} "
                    "mL per case",
                )
            )
    return findings
