"""Instance models: targets from instance maps, the seeded watershed, Mask R-CNN targets and tiled
detection merging, instance plans, and the 3D U-Net instance path end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.evaluation.instances import score_instances
from medseg.inference.detection import DetectionSettings, detect_instances, tile_origins
from medseg.inference.watershed import WatershedSettings, watershed_instances
from medseg.model.plan import InstancePlan, NetworkConfig, Normalization, Plan
from medseg.model.runtime import configure_runtime
from medseg.training.detection_step import detection_target
from medseg.training.instance_targets import BOUNDARY, INTERIOR, boundary_mask, interior_boundary
from tests.instance_stubs import touching_objects

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def two_touching_squares() -> np.ndarray:
    ids = np.zeros((12, 10), dtype=np.uint16)
    ids[2:7, 2:5] = 1
    ids[2:7, 5:8] = 2  # touches object 1 along a column face
    return ids


def test_boundary_is_the_rim_of_each_object_against_anything_else() -> None:
    ids = two_touching_squares()
    target = interior_boundary(ids)
    assert set(np.unique(target)) == {0, INTERIOR, BOUNDARY}
    # object 1 keeps one interior column (3 wide, rims at both ends); the shared face is boundary on both sides
    assert np.array_equal(target[3:6, 3], [INTERIOR] * 3) and np.all(target[2:7, 4] == BOUNDARY)
    assert np.all(target[2:7, 5] == BOUNDARY) and np.all(target[ids == 0] == 0)
    # no interior voxel of one object touches another object's voxel: the boundary separates them
    interior = target == INTERIOR
    neighbour = np.roll(ids, 1, axis=1)
    assert not np.any(interior & (neighbour != ids) & (neighbour > 0))
    assert boundary_mask(ids, width=2).sum() > boundary_mask(ids, width=1).sum()


def test_boundary_in_3d_uses_face_neighbours() -> None:
    ids = np.zeros((7, 7, 7), dtype=np.uint16)
    ids[1:6, 1:6, 1:6] = 3
    target = interior_boundary(ids)
    assert target[3, 3, 3] == INTERIOR and target[1, 3, 3] == BOUNDARY
    assert int((target == INTERIOR).sum()) == 27  # the 3x3x3 core of a 5x5x5 cube


def one_hot(target: np.ndarray) -> np.ndarray:
    return np.stack([(target == c).astype(np.float32) for c in range(3)])


@pytest.mark.parametrize("shape", [(96, 96), (40, 40, 40)])
def test_watershed_rebuilds_touching_objects_from_their_heads(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(1)
    _, ids = touching_objects(shape, rng, 8 if len(shape) == 2 else 5, (6.0, 9.0))
    probs = one_hot(interior_boundary(ids))
    if len(shape) == 2:
        probs, ids = probs[..., None], ids[..., None]
    found = watershed_instances(probs, WatershedSettings(min_size=5))
    assert found.shape == ids.shape and found.dtype == np.uint16
    scores = score_instances("synthetic", found, ids)
    assert scores.n_pred == scores.n_true and scores.ap50 == 1.0
    assert scores.dsb_score > 0.9


def test_watershed_drops_specks_and_keeps_seedless_pieces() -> None:
    probs = np.zeros((3, 30, 30, 1), dtype=np.float32)
    probs[0] = 1
    probs[:, 2:10, 2:10] = np.array([0, 1, 0], dtype=np.float32)[:, None, None, None]  # a seeded object
    probs[:, 20:26, 20:26] = np.array([0, 0, 1], dtype=np.float32)[:, None, None, None]  # boundary only
    probs[:, 28:29, 28:29] = np.array([0, 1, 0], dtype=np.float32)[:, None, None, None]  # a 1-pixel speck
    found = watershed_instances(probs, WatershedSettings(min_size=4))[..., 0]
    assert int(found.max()) == 2 and found[5, 5] > 0 and found[22, 22] > 0 and found[28, 28] == 0


def test_detection_targets_box_every_object_in_torchvision_order() -> None:
    ids = torch.from_numpy(two_touching_squares().astype(np.int64))
    ids[11, 9] = 5  # a 1-pixel sliver: not a target
    target = detection_target(ids)
    assert target["labels"].tolist() == [1, 1]
    # torchvision boxes: (x0, y0, x1, y1) = (first column, first row, last column + 1, last row + 1)
    assert target["boxes"].tolist() == [[2.0, 2.0, 5.0, 7.0], [5.0, 2.0, 8.0, 7.0]]
    assert target["masks"].shape == (2, 12, 10) and int(target["masks"][1].sum()) == 15


class FakeDetector(torch.nn.Module):
    """Reports every object of a known id map that lies whole inside a tile (as a perfect detector
    would), and also the cut pieces at the tile border, with a lower score."""

    def __init__(self, ids: np.ndarray, tile: int) -> None:
        super().__init__()
        self.ids, self.tile, self.origins = ids, tile, []
        self.roi_heads = torch.nn.Module()
        self.roi_heads.score_thresh = 0.05

    def forward(self, tiles: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        outputs = []
        for tile in tiles:
            x, y = int(tile[0, 0, 0]), int(tile[1, 0, 0])  # the test writes each voxel's own coordinates
            patch = self.ids[x : x + self.tile, y : y + self.tile]
            boxes, scores, masks = [], [], []
            for value in np.unique(patch[patch > 0]):
                mask = patch == value
                whole = mask.sum() == (self.ids == value).sum()
                rows, cols = np.nonzero(mask)
                boxes.append([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
                scores.append(0.9 if whole else 0.6)
                masks.append(mask.astype(np.float32)[None])
            outputs.append(
                {
                    "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                    "scores": torch.tensor(scores),
                    "masks": torch.tensor(np.array(masks)).reshape(-1, 1, *patch.shape),
                }
            )
        return outputs


def test_tiled_detection_reports_each_object_once_and_whole() -> None:
    rng = np.random.default_rng(3)
    _, ids = touching_objects((150, 130), rng, 30, (5.0, 8.0))
    tile = 64
    grid = np.stack(np.meshgrid(np.arange(150), np.arange(130), indexing="ij")).astype(np.float32)
    assert len(tile_origins((150, 130), (tile, tile), 20)) > 4
    found, scores = detect_instances(
        FakeDetector(ids, tile),
        grid,
        (tile, tile),
        DetectionSettings(overlap=20, min_size=1),
        configure_runtime("cpu", "fp32", 1),
    )
    result = score_instances("tiles", found, ids)
    assert result.n_pred == result.n_true == int(ids.max())
    assert result.dsb_score == 1.0  # every object once, whole: none cut at a tile border
    assert sorted(scores) == list(range(1, result.n_pred + 1)) and set(scores.values()) == {0.9}


def test_instance_plan_of_real_nuclei(shared_data: Path) -> None:
    from medseg.training.dataset import load_dataset
    from medseg.training.instance_planner import plan_instances

    plan = plan_instances(load_dataset(shared_data / "dsb2018_nuclei"), max_cases=12, workers=1)
    assert plan.pixel_grid and plan.slice_axis == 2 and plan.channels == ("red", "green", "blue")
    assert [n.scheme for n in plan.normalization] == ["zscore"] * 3
    assert all(p % 32 == 0 and p <= 256 for p in plan.config_2d.patch_size) and len(plan.config_2d.features) <= 5
    objects = plan.instances
    assert objects.diameter[0] < objects.diameter[1] < objects.diameter[2] < 100
    assert objects.anchor_sizes == tuple(objects.anchor_sizes[0] * 2**i for i in range(5))
    assert objects.anchor_sizes[0] <= objects.diameter[0] * 2 and 1.0 in objects.aspect_ratios
    assert objects.tile_overlap >= objects.diameter[2]
    assert Plan.from_dict(plan.to_dict()) == plan  # instance plans round-trip through plan.json


def test_instance_plan_checks_its_values() -> None:
    from medseg.errors import ConfigError

    with pytest.raises(ConfigError, match="anchor_sizes"):
        InstancePlan((5, 10, 20), 3, (), (1.0,), 16, 100)


def test_pixel_grid_plans_never_resample() -> None:
    """A model trained on images without a pixel size works in pixels: an input that states one
    (a TIFF at 0.5 µm) is not resampled to the plan's nominal 1 'mm'."""
    from dataclasses import replace

    from medseg.model.preprocess import preprocess_case
    from medseg.volume import Volume

    image = Volume(np.random.default_rng(0).random((40, 30, 1), dtype=np.float32), np.diag([-0.0005, -0.0005, 1, 1]))
    plan = Plan(
        "p",
        ("grey",),
        {0: "background", 1: "object"},
        (1.0, 1.0, 1.0),
        (Normalization("zscore"),),
        NetworkConfig((16, 16, 16), 2, (4, 8, 16), ((3, 3, 3),) * 3, ((1, 1, 1), (2, 2, 2), (2, 2, 2))),
        NetworkConfig((32, 32), 2, (4, 8, 16), ((3, 3),) * 3, ((1, 1), (2, 2), (2, 2))),
        slice_axis=2,
    )
    assert preprocess_case([image], plan).record.resampled
    pre = preprocess_case([image], replace(plan, pixel_grid=True))
    assert not pre.record.resampled and pre.array.shape == (1, 40, 30, 1)


def test_bright_objects_turns_dark_nuclei_on_a_bright_background_bright() -> None:
    """Bright-field / H&E images (few dark objects on a bright background) are negated after
    normalisation; fluorescence images (few bright objects on a dark one) are left as they are."""
    from dataclasses import replace

    from medseg.model.preprocess import dark_objects, preprocess_case
    from medseg.volume import Volume

    rng = np.random.default_rng(2)
    image, ids = touching_objects((64, 64), rng, 5, (5.0, 7.0))
    fluorescence = Volume(image[..., None], np.diag([-1.0, -1.0, 1.0, 1.0]))
    brightfield = fluorescence.with_array(1.0 - image[..., None])
    assert not dark_objects([image]) and dark_objects([1.0 - image])
    plan = Plan(
        "p",
        ("grey",),
        {0: "background", 1: "object"},
        (1.0, 1.0, 1.0),
        (Normalization("zscore"),),
        NetworkConfig((16, 16, 16), 2, (4, 8, 16), ((3, 3, 3),) * 3, ((1, 1, 1), (2, 2, 2), (2, 2, 2))),
        NetworkConfig((32, 32), 2, (4, 8, 16), ((3, 3),) * 3, ((1, 1), (2, 2), (2, 2))),
        slice_axis=2,
        pixel_grid=True,
        bright_objects=True,
    )
    kept, turned = preprocess_case([fluorescence], plan), preprocess_case([brightfield], plan)
    assert kept.record.intensity[0][1] > 0 > turned.record.intensity[0][1]
    inside = np.flip(ids > 0, (0, 1))[..., None]  # the preprocessed grid is the canonical (RAS) one
    for pre in (kept, turned):
        assert pre.array[0][inside].mean() > pre.array[0][~inside].mean()  # objects bright in both
    assert np.allclose(kept.array, turned.array, atol=1e-4)  # the same picture, whatever its polarity
    assert not preprocess_case([brightfield], replace(plan, bright_objects=False)).record.intensity[0][1] < 0


def test_each_object_takes_the_class_most_of_its_voxels_have() -> None:
    from medseg.inference.instance_predict import object_classes

    ids = np.array([[0, 1, 1, 1, 2], [3, 3, 0, 2, 2]])
    classes = np.array([[0, 2, 2, 1, 1], [0, 0, 0, 1, 1]])
    assert object_classes(ids, classes) == {1: 2, 2: 1, 3: 1}  # object 3 lies outside every class: 1
    assert object_classes(np.zeros((2, 2), int), np.zeros((2, 2), int)) == {}
