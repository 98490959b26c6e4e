"""One mask per structure: what RTSTRUCT ROIs and SEG segments hold when they overlap.

A label map keeps one value per voxel, so where structures overlap (a BODY contour around a CTV,
overlapping SEG segments) all but one of them lose those voxels. :class:`StructureMasks` keeps a
boolean mask per structure on the reference grid, as a 4D label Volume ``(I, J, K, N)`` whose
channel ``n - 1`` is structure ``n`` (``meta.label_names[n]`` its name), and lists which
structures overlap and by how many voxels.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medseg.volume import Volume

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Overlap:
    """Two structures (by name) that share ``voxels`` voxels."""

    first: str
    second: str
    voxels: int


@dataclass(frozen=True)
class StructureMasks:
    """Boolean masks of ``N`` structures on one grid (a 4D uint8 label Volume) and their overlaps."""

    masks: Volume
    overlaps: tuple[Overlap, ...]

    @property
    def names(self) -> list[str]:
        """Structure names in channel order."""
        names = self.masks.meta.label_names or {}
        return [str(names.get(n, f"structure {n}")) for n in range(1, self.masks.array.shape[3] + 1)]

    def overlap_message(self, what: str = "structures") -> str | None:
        """One line naming every overlapping pair (``None`` when nothing overlaps)."""
        if not self.overlaps:
            return None
        pairs = "; ".join(f"{o.first!r} and {o.second!r} share {o.voxels} voxel(s)" for o in self.overlaps)
        return f"{what} overlap: {pairs}"

    def label_map(self) -> Volume:
        """A 3D label Volume where structure ``n`` has value ``n``; a later structure wins overlaps."""
        array = self.masks.array
        count = array.shape[3]
        labels = np.zeros(array.shape[:3], dtype=np.uint8 if count < 256 else np.uint16)
        for n in range(count):
            labels[array[..., n] > 0] = n + 1
        meta = self.masks.meta
        return Volume(labels, self.masks.affine, "label", meta)


def find_overlaps(masks: np.ndarray, names: Sequence[str]) -> tuple[Overlap, ...]:
    """Every pair of channels of ``masks`` (``(I, J, K, N)``, 0/1) that share voxels, in channel order.

    Counts only the voxels covered more than once, so it costs one pass over the volume.
    """
    covered = np.count_nonzero(masks, axis=3) if masks.size else np.zeros(masks.shape[:3], np.int64)
    shared = masks[covered > 1].astype(np.int64)  # (M, N): the voxels in several structures
    if not shared.size:
        return ()
    counts = shared.T @ shared
    return tuple(
        Overlap(str(names[a]), str(names[b]), int(counts[a, b]))
        for a in range(len(names))
        for b in range(a + 1, len(names))
        if counts[a, b]
    )


def structure_masks(masks: np.ndarray, names: Sequence[str], reference: Volume, meta_fields: dict) -> StructureMasks:
    """Wrap ``(I, J, K, N)`` 0/1 masks on ``reference``'s grid with their names and overlaps.

    ``meta_fields`` are further :class:`~medseg.volume.VolumeMeta` fields (modality, source, ...).
    """
    from medseg.volume import VolumeMeta

    label_names = {n: str(name) for n, name in enumerate(names, start=1)}
    volume = Volume(masks, reference.affine, "label", VolumeMeta(label_names=label_names, **meta_fields))
    return StructureMasks(volume, find_overlaps(masks, list(names)))
