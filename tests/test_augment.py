"""Augmentation (MONAI transforms), foreground-oversampled patch sampling and the training loader."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.model.plan import NetworkConfig, Normalization, Plan
from medseg.training.augment import PatchSampler, SpatialParams, forced_foreground, train_transforms
from medseg.training.cache import build_cache
from medseg.training.data import make_train_loader, make_val_cases
from medseg.training.dataset import load_dataset
from medseg.training.recipe import AugmentationConfig, DatasetConfig, Recipe, RuntimeConfig

IDS = ["hippocampus_003", "hippocampus_004", "hippocampus_007", "hippocampus_008"]
CFG3 = NetworkConfig((16, 16, 16), 3, (32, 64), ((3, 3, 3), (3, 3, 3)), ((1, 1, 1), (2, 2, 2)))
CFG2 = NetworkConfig((16, 24), 3, (32, 64), ((3, 3), (3, 3)), ((1, 1), (2, 2)))
PLAN = Plan(
    "h",
    ("MRI",),
    {0: "background", 1: "Anterior", 2: "Posterior"},
    (1.0, 1.0, 1.0),
    (Normalization("zscore"),),
    CFG3,
    CFG2,
    slice_axis=0,
)


@pytest.fixture(scope="module")
def cache(shared_data: Path, tmp_path_factory):
    spec = load_dataset(shared_data / "msd_hippocampus")
    return build_cache(spec, PLAN, tmp_path_factory.mktemp("cache"), case_ids=IDS)


def recipe(workers: int = 0, seed: int = 0) -> Recipe:
    return Recipe("t", DatasetConfig(Path("x")), runtime=RuntimeConfig(workers=workers, seed=seed))


def test_forced_foreground_follows_nnunet() -> None:
    assert [forced_foreground(i, 2, 0.33) for i in range(2)] == [False, True]
    assert sum(forced_foreground(i, 6, 0.33) for i in range(6)) == 2
    assert not any(forced_foreground(i, 4, 0.0) for i in range(4))


def test_identity_crop_flip_and_exact_rotation() -> None:
    augmenter = train_transforms(
        AugmentationConfig(noise=False, blur=False, gamma=False, brightness_contrast=False, low_resolution=False),
        3,
        (8, 8, 8),
    )
    image = torch.arange(10 * 10 * 10, dtype=torch.float32).reshape(1, 10, 10, 10)
    label = (image % 3).to(torch.uint8)
    crop = image[:, 1:9, 1:9, 1:9]
    out, lab = augmenter(image[:, 1:9, 1:9, 1:9], label[:, 1:9, 1:9, 1:9], SpatialParams(None, ()))
    assert torch.equal(out, crop) and lab.dtype == torch.int64
    flipped, _ = augmenter(crop, crop, SpatialParams(None, (0, 2)))
    assert torch.equal(flipped, torch.flip(crop, (1, 3)))
    quarter = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # 90 degrees in the i-j plane
    params = SpatialParams(quarter, ())
    region = augmenter.region_size(params)
    assert region == (10, 10, 10)  # parity kept, a margin for interpolation
    rotated, rot_label = augmenter(image, label.float(), params)
    candidates = [torch.rot90(crop, k, dims=(1, 2)) for k in (1, 3)]
    assert any(torch.allclose(rotated, c, atol=1e-2) for c in candidates)
    assert any(torch.equal(rot_label, torch.rot90(label[:, 1:9, 1:9, 1:9], k, dims=(1, 2)).long()) for k in (1, 3))


@pytest.mark.parametrize("dims", [3, 2])
def test_random_augmentation_keeps_labels_and_shapes(dims: int) -> None:
    patch = (12, 12, 12) if dims == 3 else (12, 16)
    augmenter = train_transforms(AugmentationConfig(elastic=True), dims, patch)
    augmenter.set_random_state(3)
    rng = np.random.default_rng(0)
    seen_resampled = False
    for _ in range(30):
        params = augmenter.sample()
        seen_resampled |= params.matrix is not None or params.elastic
        region = augmenter.region_size(params)
        image = torch.from_numpy(rng.standard_normal((2, *region)).astype(np.float32))
        label = torch.from_numpy(rng.integers(0, 3, (1, *region)).astype(np.uint8))
        out, lab = augmenter(image, label, params)
        assert out.shape == (2, *patch) and lab.shape == (1, *patch)
        assert out.dtype == torch.float32 and torch.isfinite(out).all()
        assert set(lab.unique().tolist()) <= {0, 1, 2}
    assert seen_resampled


def test_sampler_forced_patches_hold_foreground(cache) -> None:
    rng = np.random.default_rng(0)
    for dims, patch in ((3, (16, 16, 16)), (2, (16, 24))):
        sampler = PatchSampler(cache, IDS, dims, patch, slice_axis=0)
        forced = [sampler.sample(rng, patch, True)[1] for _ in range(40)]
        assert all(label.shape == (1, *patch) and (label > 0).any() for label in forced)
        free = [sampler.sample(rng, patch, False)[1] for _ in range(40)]
        assert sum(bool((label > 0).any()) for label in free) < 40  # random patches sometimes miss it


def test_train_loader_3d_and_2d_are_deterministic(cache) -> None:
    batches = [next(iter(make_train_loader(cache, IDS, PLAN, recipe(seed=7), 3))) for _ in range(2)]
    first = batches[0]
    assert first["image"].shape == (3, 1, 16, 16, 16) and first["image"].dtype == torch.float32
    assert first["label"].shape == (3, 1, 16, 16, 16) and first["label"].dtype == torch.int64
    assert torch.equal(first["image"], batches[1]["image"]) and torch.equal(first["label"], batches[1]["label"])
    assert (first["label"][2] > 0).any()  # the last third of each batch is forced to foreground
    other = next(iter(make_train_loader(cache, IDS, PLAN, recipe(seed=8), 3)))
    assert not torch.equal(other["image"], first["image"])
    flat = next(iter(make_train_loader(cache, IDS, PLAN, recipe(), 2)))
    assert flat["image"].shape == (3, 1, 16, 24) and flat["label"].shape == (3, 1, 16, 24)


def test_train_loader_workers(cache) -> None:
    loaders = [make_train_loader(cache, IDS, PLAN, recipe(workers=2, seed=1), 3) for _ in range(2)]
    streams = [iter(loader) for loader in loaders]
    pairs = [(next(streams[0]), next(streams[1])) for _ in range(3)]
    assert all(torch.equal(a["image"], b["image"]) for a, b in pairs)
    assert not torch.equal(pairs[0][0]["image"], pairs[1][0]["image"])  # consecutive batches differ
    assert loaders[0].persistent_workers and loaders[0].num_workers == 2
    in_process = iter(make_train_loader(cache, IDS, PLAN, recipe(workers=0, seed=1), 3))
    assert all(torch.equal(next(in_process)["image"], a["image"]) for a, _ in pairs)  # same stream, any workers
    del streams


def test_train_loader_resumes_at_a_batch_without_drawing_the_earlier_ones(cache) -> None:
    stream = iter(make_train_loader(cache, IDS, PLAN, recipe(seed=3), 3))
    expected = [next(stream) for _ in range(5)][3:]
    resumed = iter(make_train_loader(cache, IDS, PLAN, recipe(seed=3), 3, start_iteration=3))
    for batch in expected:
        got = next(resumed)
        assert torch.equal(got["image"], batch["image"]) and torch.equal(got["label"], batch["label"])


def test_val_cases(cache) -> None:
    cases = make_val_cases(cache, IDS[:2])
    assert [c.id for c in cases] == IDS[:2]
    assert cases[0].image.shape[1:] == cases[0].label.shape == cases[0].record.shape
    assert replace(PLAN, name="x").config(3) == CFG3
