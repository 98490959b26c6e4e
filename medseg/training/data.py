"""Training and validation data from a :class:`~medseg.training.cache.CaseCache`.

:func:`make_train_loader` returns a ``torch.utils.data.DataLoader`` whose worker processes build
whole batches (sample -> crop -> augment -> stack), forever; the trainer decides how many
iterations make an epoch. Batch ``b`` of the stream is drawn from its own seed,
``SeedSequence([seed, b])`` (patch sampling and every MONAI transform), whatever the worker that
makes it: with ``W`` workers, worker ``w`` makes batches ``start + w, start + w + W, ...`` and the
DataLoader hands them out in that round-robin order. So a run is reproducible for a given seed,
and a resumed run starts its stream at the batch it stopped at without drawing the earlier ones.
Batches are ``{"image": float32 (B, C, *patch), "label": int64 (B, 1, *patch)}``. For instance
datasets the cached labels are instance maps and an optional ``target`` step turns each augmented
id patch into the model's target (:mod:`medseg.training.instance_targets`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from medseg.errors import ConfigError
from medseg.training.augment import PatchAugmenter, PatchSampler, forced_foreground, train_transforms

if TYPE_CHECKING:
    from medseg.model.plan import Plan
    from medseg.model.preprocess import PreprocessRecord
    from medseg.training.cache import CaseCache
    from medseg.training.recipe import Recipe


class PatchBatches(IterableDataset):
    """An endless stream of augmented batches from batch index ``start`` on; batch ``b`` depends
    only on ``(seed, b)``, so the stream is the same for any number of DataLoader workers."""

    def __init__(
        self,
        sampler: PatchSampler,
        augmenter: PatchAugmenter,
        batch_size: int,
        foreground_fraction: float,
        seed: int = 0,
        start: int = 0,
        target: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.target = target
        self.sampler = sampler
        self.augmenter = augmenter
        self.batch_size = batch_size
        self.foreground_fraction = foreground_fraction
        self.seed = seed
        self.start = start

    def batch(self, index: int) -> dict[str, torch.Tensor]:
        """Batch number ``index`` of the stream (deterministic for a given seed)."""
        seed = int(np.random.SeedSequence([self.seed, index]).generate_state(1)[0])
        rng = np.random.default_rng(seed)
        self.augmenter.set_random_state(seed)
        images, labels = [], []
        for slot in range(self.batch_size):
            force = forced_foreground(slot, self.batch_size, self.foreground_fraction)
            params = self.augmenter.sample()
            image, label = self.sampler.sample(rng, self.augmenter.region_size(params), force)
            image, label = self.augmenter(torch.from_numpy(image), torch.from_numpy(label), params)
            if self.target is not None:
                label = self.target(label)
            images.append(image)
            labels.append(label)
        return {"image": torch.stack(images), "label": torch.stack(labels)}

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        index = self.start + worker
        while True:
            yield self.batch(index)
            index += workers


def worker_init(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: one torch thread, no MONAI metadata, seeded numpy/random."""
    from monai.data import set_track_meta

    torch.set_num_threads(1)
    set_track_meta(False)
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_train_loader(
    cache: CaseCache,
    case_ids: Sequence[str],
    plan: Plan,
    recipe: Recipe,
    spatial_dims: int,
    start_iteration: int = 0,
    target: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> DataLoader:
    """An infinite DataLoader of augmented, foreground-oversampled patches of ``plan``'s network,
    starting at batch ``start_iteration`` of the seeded stream (a resumed run passes the
    iterations already done).

    Uses ``recipe.runtime.workers`` worker processes (0 = in the main process, persistent
    otherwise), ``recipe.runtime.seed``, ``recipe.augmentation``; in 2D, slices across
    ``plan.slice_axis``. ``target`` (picklable) maps each augmented label patch to the training
    target (instance datasets).
    """
    if spatial_dims not in (2, 3):
        raise ConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    config = plan.config(spatial_dims)
    sampler = PatchSampler(cache, case_ids, spatial_dims, config.patch_size, plan.slice_axis)
    augmenter = train_transforms(recipe.augmentation, spatial_dims, config.patch_size)
    dataset = PatchBatches(
        sampler,
        augmenter,
        config.batch_size,
        recipe.augmentation.foreground_fraction,
        recipe.runtime.seed,
        start_iteration,
        target,
    )
    workers = recipe.runtime.workers
    generator = torch.Generator().manual_seed(recipe.runtime.seed)
    return DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        worker_init_fn=worker_init if workers else None,
        persistent_workers=workers > 0,
        prefetch_factor=2 if workers else None,
        generator=generator,
        pin_memory=recipe.runtime.device != "cpu" and torch.cuda.is_available(),
    )


@dataclass(frozen=True, eq=False)
class ValCase:
    """A validation case: the preprocessed image (C, X, Y, Z), label (X, Y, Z) and its record."""

    id: str
    image: np.ndarray
    label: np.ndarray
    record: PreprocessRecord


def make_val_cases(cache: CaseCache, case_ids: Sequence[str]) -> list[ValCase]:
    """Whole preprocessed validation cases (memory-mapped: opening them reads nothing yet)."""
    cases = []
    for case_id in case_ids:
        image, label = cache.load(case_id)
        cases.append(ValCase(case_id, image, label, cache.record(case_id)))
    return cases
