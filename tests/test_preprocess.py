"""Preprocessing and its exact inverse (synthetic oblique/flipped grids, real hippocampus and DICOM),
and the on-disk case cache."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medseg.errors import GeometryError
from medseg.model.plan import NetworkConfig, Normalization, Plan
from medseg.model.preprocess import (
    PreprocessRecord,
    from_canonical,
    preprocess_case,
    preprocess_label,
    restore_argmax,
    restore_labels,
    restore_probabilities,
)
from medseg.training.cache import build_cache, cache_key
from medseg.training.dataset import load_dataset, read_case
from medseg.volume import Volume

CFG3 = NetworkConfig((16, 16, 16), 2, (32, 64), ((3, 3, 3), (3, 3, 3)), ((1, 1, 1), (2, 2, 2)))
CFG2 = NetworkConfig((16, 16), 2, (32, 64), ((3, 3), (3, 3)), ((1, 1), (2, 2)))


def make_plan(spacing, norm=None, interpolation="linear", labels=None) -> Plan:
    return Plan(
        "t",
        ("MRI",),
        labels or {0: "background", 1: "a", 2: "b"},
        spacing,
        (norm or Normalization("zscore"),),
        CFG3,
        CFG2,
        0,
        image_interpolation=interpolation,
    )


def oblique_affine(spacing=(0.8, 1.1, 2.5), angle=0.2) -> np.ndarray:
    """A rotated grid whose axes are permuted and flipped relative to RAS."""
    permute = np.array([[0, -1, 0], [0, 0, 1], [-1, 0, 0]], float)
    c, s = np.cos(angle), np.sin(angle)
    rotate = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotate @ permute @ np.diag(spacing)
    affine[:3, 3] = [10.0, -20.0, 5.0]
    return affine


def ellipsoids(shape) -> np.ndarray:
    grid = np.meshgrid(*[np.arange(n) - n / 2 for n in shape], indexing="ij")
    outer = sum((g / (0.3 * n)) ** 2 for g, n in zip(grid, shape)) < 1
    inner = sum((g / (0.15 * n)) ** 2 for g, n in zip(grid, shape)) < 1
    return outer.astype(np.uint8) + inner.astype(np.uint8)


def dice(a: np.ndarray, b: np.ndarray, value: int) -> float:
    a, b = a == value, b == value
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_reorientation_matches_nibabel_and_inverts_exactly() -> None:
    affine = oblique_affine()
    rng = np.random.default_rng(0)
    image = Volume(rng.random((20, 24, 10), dtype=np.float32) * 1000, affine)
    pre = preprocess_case([image], make_plan((1.1, 2.5, 0.8)))
    canonical = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(image.array), affine))
    assert not pre.record.resampled and pre.record.shape == canonical.shape
    assert np.allclose(pre.record.affine, canonical.affine)
    expected = (np.asarray(canonical.dataobj) - image.array.mean()) / image.array.std()
    assert np.allclose(pre.array[0], expected, atol=1e-4)
    assert pre.array.dtype == np.float32 and pre.array.shape == (1, 24, 10, 20)
    label = Volume(ellipsoids((20, 24, 10)), affine, "label")
    restored = restore_labels(preprocess_label(label, pre.record), pre.record)
    assert np.array_equal(restored.array, label.array)
    assert np.array_equal(restored.affine, affine) and restored.kind == "label"


def test_anisotropic_resampling_round_trip() -> None:
    affine = oblique_affine((0.9, 1.1, 2.0))
    shape = (40, 36, 18)
    label = Volume(ellipsoids(shape), affine, "label")
    image = Volume(ellipsoids(shape).astype(np.float32), affine)
    pre = preprocess_case([image], make_plan((1.0, 1.0, 1.0)))
    record = pre.record
    assert record.resampled and record.shape == (40, 36, 36)  # canonical (1.1, 2.0, 0.9) x (36, 18, 40)
    assert record.spacing == pytest.approx((1.0, 1.0, 1.0), abs=0.011)
    restored = restore_labels(preprocess_label(label, record), record)
    assert restored.shape == shape and np.array_equal(restored.affine, affine)
    assert dice(restored.array, label.array, 1) > 0.95 and dice(restored.array, label.array, 2) > 0.95
    # the preprocessed affine puts voxels where they were: the blob's world centroid is unchanged
    pre_label = preprocess_label(label, record)
    world = lambda a, aff: (aff @ np.r_[np.argwhere(a > 0).mean(0), 1.0])[:3]  # noqa: E731
    assert np.allclose(world(pre_label, record.affine), world(label.array, affine), atol=0.6)


def test_restore_probabilities_is_trilinear_within_the_box() -> None:
    affine = oblique_affine((0.9, 1.1, 2.0))
    shape = (40, 36, 18)
    label = Volume(ellipsoids(shape), affine, "label")
    image = Volume(np.zeros(shape, np.float32), affine)
    record = preprocess_case([image], make_plan((1.0, 1.0, 1.0))).record
    onehot = np.eye(3, dtype=np.float32)[preprocess_label(label, record)].transpose(3, 0, 1, 2)
    probs = restore_probabilities(onehot, record)
    assert probs.shape == (3, *shape) and probs.dtype == np.float32
    full = torch.nn.functional.interpolate(
        torch.from_numpy(onehot)[None], size=record.canonical_shape, mode="trilinear", align_corners=False
    )[0].numpy()
    expected = np.stack([from_canonical(channel, record) for channel in full])
    assert np.abs(probs - expected).max() < 1e-5
    assert dice(probs.argmax(0), label.array, 1) > 0.9
    half = restore_probabilities(onehot.astype(np.float16), record, dtype=np.float16)
    assert half.dtype == np.float16 and np.abs(half.astype(np.float32) - probs).max() < 2e-3
    background = np.zeros_like(onehot)
    background[0] = 1
    empty = restore_probabilities(background, record)
    assert np.array_equal(empty[0], np.ones(shape, np.float32)) and not empty[1:].any()


@pytest.mark.parametrize("field", ["smooth", "noisy"])
def test_restore_argmax_equals_the_argmax_of_restored_probabilities(field: str) -> None:
    """Smooth maps take the boundary-only path, noisy ones the dense slabs; both must give the
    labels of the full linear restoration, on a permuted, flipped, oblique grid."""
    affine = oblique_affine((0.9, 1.1, 2.0))
    shape = (40, 36, 18)
    image = Volume(np.zeros(shape, np.float32), affine)
    record = preprocess_case([image], make_plan((1.7, 1.3, 1.6))).record
    assert record.resampled
    if field == "smooth":
        label = preprocess_label(Volume(ellipsoids(shape), affine, "label"), record)
        probs = np.eye(3, dtype=np.float32)[label].transpose(3, 0, 1, 2) * 0.8 + 0.2 / 3
    else:
        probs = np.random.default_rng(0).random((3, *record.shape), dtype=np.float32)
        probs /= probs.sum(0)
    expected = restore_probabilities(probs, record).argmax(0)
    labels = restore_argmax(probs, record, planes=4)
    assert labels.shape == shape and labels.dtype == np.uint8
    assert np.array_equal(labels, expected)
    assert len(np.unique(labels)) == 3


def test_restored_foreground_reaches_the_volume_edge() -> None:
    """Foreground touching the preprocessed grid's edge stays foreground on the source edge: output
    voxels sampled beyond the last input centre take the edge value (clamped), not background."""
    shape = (30, 30, 20)
    image = Volume(np.zeros(shape, np.float32), np.diag([0.8, 0.8, 1.5, 1.0]))
    record = preprocess_case([image], make_plan((3.0, 3.0, 3.0))).record
    probs = np.zeros((2, *record.shape), np.float32)
    probs[0] = 1.0
    probs[:, :2] = [[[[0.0]]], [[[1.0]]]]  # class 1 fills the first two planes along x
    restored = restore_probabilities(probs, record)
    labels = restore_argmax(probs, record)
    assert restored[1, 0].min() == 1.0 and labels[0].min() == 1
    assert np.array_equal(labels, restored.argmax(0))


def test_cubic_images_and_normalisation_schemes() -> None:
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    values = np.linspace(-1000, 3000, 10 * 12 * 14, dtype=np.float32).reshape(10, 12, 14)
    image = Volume(values, affine)
    ct = Normalization("ct", clip_low=-100.0, clip_high=300.0, mean=100.0, std=50.0)
    pre = preprocess_case([image], make_plan((1.0, 1.0, 1.0), ct, "cubic"))
    assert pre.array.shape == (1, 20, 24, 28)
    assert pre.array.min() == pytest.approx(-4.0, abs=1e-3) and pre.array.max() == pytest.approx(4.0, abs=1e-3)
    assert pre.record.intensity == ((100.0, 50.0),)
    z = preprocess_case([image], make_plan((2.0, 2.0, 2.0))).array
    assert abs(float(z.mean())) < 1e-4 and float(z.std()) == pytest.approx(1.0, abs=1e-4)


def test_record_json_round_trip_and_grid_errors() -> None:
    affine = oblique_affine()
    image = Volume(np.zeros((6, 7, 8), np.float32), affine)
    record = preprocess_case([image], make_plan((1.0, 1.0, 1.0))).record
    again = PreprocessRecord.from_dict(__import__("json").loads(record.to_json()))
    assert np.array_equal(again.source_affine, record.source_affine) and again.shape == record.shape
    with pytest.raises(GeometryError, match="not the image grid"):
        preprocess_label(Volume(np.zeros((6, 7, 9), np.uint8), affine, "label"), record)
    with pytest.raises(GeometryError, match="do not match the preprocessed grid"):
        restore_labels(np.zeros((3, 3, 3), np.uint8), record)
    with pytest.raises(GeometryError, match="do not match"):
        restore_probabilities(np.zeros((2, 3, 3, 3), np.float32), record)
    with pytest.raises(GeometryError, match="different grids"):
        preprocess_case(
            [image, Volume(np.zeros((6, 7, 8), np.float32), np.eye(4))],
            replace(make_plan((1.0, 1.0, 1.0)), channels=("a", "b"), normalization=(Normalization("zscore"),) * 2),
        )


@pytest.fixture(scope="module")
def hippocampus(shared_data: Path):
    spec = load_dataset(shared_data / "msd_hippocampus")
    # 003: float32 label; the first case with origin (0, 0, 0); one uint8 image
    ids = ["hippocampus_003", "hippocampus_004", "hippocampus_007"]
    return spec, ids


def test_real_hippocampus_round_trips(hippocampus) -> None:
    spec, ids = hippocampus
    for case_id in ids:
        images, label = read_case(spec.case(case_id), spec)
        pre = preprocess_case(images, make_plan((1.0, 1.0, 1.0)))
        assert not pre.record.resampled
        restored = restore_labels(preprocess_label(label, pre.record), pre.record)
        assert np.array_equal(restored.array, label.array) and np.array_equal(restored.affine, label.affine)
        # the same case relabelled with an oblique anisotropic grid, planned at 1 mm
        affine = oblique_affine((1.0, 1.0, 2.5), angle=0.3)
        image = Volume(images[0].array, affine)
        aniso = Volume(label.array, affine, "label")
        record = preprocess_case([image], make_plan((1.0, 1.0, 1.0))).record
        back = restore_labels(preprocess_label(aniso, record), record)
        assert back.shape == label.shape and np.array_equal(back.affine, affine)
        assert min(dice(back.array, label.array, k) for k in (1, 2)) > 0.95


def test_real_dicom_oblique_series_round_trip(shared_data: Path) -> None:
    """TCIA PGBM-003: an oblique MR series (0.69 mm pixels, 6.5 mm slice spacing) read from DICOM."""
    from medseg.io.dicom import discover_series

    root = shared_data / "dicom_tcia_brain_tumor_progression"
    infos = [i for i in discover_series(root) if i.is_image]
    from medseg.io import read_volume

    info = infos[0]
    volume = read_volume(info.files[0].parent, series=info.uid)
    assert not np.allclose(np.abs(volume.direction), np.eye(3))  # truly oblique
    torch.set_num_threads(1)
    label = Volume((volume.array > np.percentile(volume.array, 90)).astype(np.uint8), volume.affine, "label")
    plan = make_plan((1.5, 1.5, 6.5), labels={0: "background", 1: "bright"})
    pre = preprocess_case([volume], plan)
    assert pre.record.resampled
    restored = restore_labels(preprocess_label(label, pre.record), pre.record)
    assert restored.shape == volume.shape and np.array_equal(restored.affine, volume.affine)
    assert dice(restored.array, label.array, 1) > 0.8  # thin bright structures at 2x coarser in-plane
    same = preprocess_case([volume], replace(plan, target_spacing=pre.record.canonical_spacing)).record
    assert np.array_equal(restore_labels(preprocess_label(label, same), same).array, label.array)


def test_cache_builds_once_and_is_keyed_by_the_plan(hippocampus, tmp_path: Path) -> None:
    spec, ids = hippocampus
    plan = make_plan((1.0, 1.0, 1.0))
    cache = build_cache(spec, plan, tmp_path, workers=0, case_ids=ids)
    assert cache.case_ids == tuple(ids) and cache.root.name == f"Hippocampus-{cache_key(plan)}"
    image, label = cache.load(ids[0])
    _images, source = read_case(spec.case(ids[0]), spec)
    assert image.shape == (1, *source.shape) and image.dtype == np.float32 and label.dtype == np.uint8
    assert np.array_equal(restore_labels(np.asarray(label), cache.record(ids[0])).array, source.array)
    for value, coords in cache.foreground(ids[0]).items():
        assert len(coords) > 0 and np.all(np.asarray(label)[tuple(coords.T)] == value)
    stamp = os.stat(cache.root / f"{ids[0]}.image.npy").st_mtime_ns
    build_cache(spec, plan, tmp_path, workers=2, case_ids=ids)  # nothing to redo
    assert os.stat(cache.root / f"{ids[0]}.image.npy").st_mtime_ns == stamp
    other = build_cache(spec, make_plan((1.0, 1.0, 2.0)), tmp_path, case_ids=ids[:1])
    assert other.root != cache.root and other.load(ids[0])[0].shape[-1] < image.shape[-1]
    half = build_cache(spec, replace(plan, name="h"), tmp_path / "f16", case_ids=ids[:1], image_dtype="float16")
    assert half.load(ids[0])[0].dtype == np.float16
