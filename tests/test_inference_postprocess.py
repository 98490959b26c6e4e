"""Post-processing on synthetic blobs with known volumes, and the instance table."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.errors import ConfigError
from medseg.inference.postprocess import (
    PostprocessOptions,
    fill_holes,
    instance_map,
    keep_largest_component,
    largest_component_classes,
    parse_remap,
    postprocess,
    remap_labels,
    remap_names,
    remove_small_components,
)


def blobs() -> np.ndarray:
    """Class 1: a 4x4x4 cube (64 vox) and a 2x2x2 cube (8 vox); class 2: a 3x3x3 cube (27 vox)."""
    labels = np.zeros((30, 20, 20), np.uint8)
    labels[2:6, 2:6, 2:6] = 1
    labels[20:22, 10:12, 10:12] = 1
    labels[10:13, 10:13, 10:13] = 2
    return labels


def test_largest_component_keeps_only_the_big_blob_of_listed_classes():
    labels = blobs()
    labels[25, 18, 18] = 2  # a stray voxel of class 2
    out = keep_largest_component(labels, [1])
    assert (out == 1).sum() == 64 and (out[20:22, 10:12, 10:12] == 0).all()
    assert (out == 2).sum() == 28  # class 2 not listed: untouched
    assert (labels == 1).sum() == 72  # input untouched
    both = keep_largest_component(labels)
    assert (both == 2).sum() == 27


def test_diagonal_neighbours_are_one_component():
    labels = np.zeros((5, 5, 5), np.uint8)
    labels[1, 1, 1] = labels[2, 2, 2] = labels[3, 3, 3] = 1  # touching by corners only (26-connectivity)
    assert (keep_largest_component(labels) == 1).sum() == 3


def test_remove_small_components_uses_mm3_and_spacing():
    labels = blobs()
    # 2 mm isotropic voxels: the 8-voxel blob is 64 mm3, the 27-voxel one 216 mm3, the 64-voxel 512 mm3
    out = remove_small_components(labels, (2.0, 2.0, 2.0), min_size_mm3=100)
    assert (out == 1).sum() == 64 and (out == 2).sum() == 27
    out = remove_small_components(labels, (2.0, 2.0, 2.0), min_size_mm3=300)
    assert (out == 1).sum() == 64 and (out == 2).sum() == 0
    np.testing.assert_array_equal(remove_small_components(labels, (1, 1, 1), 0), labels)


def test_fill_holes_fills_background_only():
    labels = np.zeros((9, 9, 9), np.uint8)
    labels[1:8, 1:8, 1:8] = 1
    labels[3:6, 3:6, 3:6] = 0  # a 27-voxel hole
    labels[4, 4, 4] = 2  # another class inside the hole stays
    out = fill_holes(labels)
    assert (out == 1).sum() == 7**3 - 1 and out[4, 4, 4] == 2
    opened = labels.copy()
    opened[4, 4, 1:3] = 0  # a tunnel through the wall joins the cavity to the outside
    out = fill_holes(opened)
    assert out[4, 4, 3] == 0 and out[4, 4, 1] == 0  # not enclosed any more: left open


def test_remap_labels_and_names():
    labels = blobs()
    out = remap_labels(labels, {2: 1})
    assert set(np.unique(out)) == {0, 1} and (out == 1).sum() == 72 + 27
    assert set(np.unique(remap_labels(labels, {1: 0}))) == {0, 2}
    assert remap_labels(labels, {1: 300}).dtype == np.uint16
    names = {0: "background", 1: "liver", 2: "tumour"}
    assert remap_names(names, {2: 1}) == {0: "background", 1: "liver"}
    assert remap_names(names, {2: 5}) == {0: "background", 1: "liver", 5: "tumour"}
    assert parse_remap("2:1, 3:0") == {2: 1, 3: 0}
    with pytest.raises(ConfigError, match="pairs like"):
        parse_remap("2-1")


def test_largest_component_modes():
    names = {0: "background", 1: "a", 2: "b"}
    assert largest_component_classes("auto", {"keep_largest_component": [2]}, names) == [2]
    assert largest_component_classes("auto", {}, names) == []
    assert largest_component_classes("on", {}, names) == [1, 2]
    assert largest_component_classes("off", {"keep_largest_component": [2]}, names) == []
    with pytest.raises(ConfigError, match="largest-component"):
        PostprocessOptions(largest_component="yes")


def test_postprocess_chain():
    labels = blobs()
    options = PostprocessOptions(min_size_mm3=10, remap={2: 3})
    out = postprocess(labels, (1.0, 1.0, 1.0), options, largest_classes=[])
    assert (out == 1).sum() == 64 and (out == 3).sum() == 27 and (out == 2).sum() == 0


def test_instance_map_table():
    labels = blobs()
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-10, 5, 100]
    instances, table = instance_map(labels, affine, [1, 2], {1: "nodule", 2: "cyst"})
    assert instances.dtype == np.uint16 and instances.max() == 3
    rows = [i.row() for i in table]
    assert [r["class"] for r in rows] == [1, 1, 2] and [r["voxels"] for r in rows] == [64, 8, 27]
    assert rows[0]["volume_ml"] == pytest.approx(64 * 8 / 1000)
    # centre of the 4x4x4 cube at voxel 3.5 -> 2 * 3.5 + offset
    assert (rows[0]["centroid_x_mm"], rows[0]["centroid_y_mm"], rows[0]["centroid_z_mm"]) == (-3.0, 12.0, 107.0)
    assert rows[1]["bbox_i"] == "20-22" and rows[2]["name"] == "cyst"
    assert set(np.unique(instances[labels == 2])) == {3}
    only_two, table2 = instance_map(labels, affine, [2])
    assert len(table2) == 1 and only_two.max() == 1


@pytest.mark.parametrize(
    "options, largest",
    [
        (PostprocessOptions(), ()),
        (PostprocessOptions(), (1,)),
        (PostprocessOptions(min_size_mm3=10.0, fill_holes=True), ()),
    ],
)
def test_stored_order_is_kept_and_input_untouched(options, largest):
    """A Fortran-ordered map (as restored for NIfTI) comes back Fortran-ordered: no transposing copy."""
    labels = np.asfortranarray(blobs())
    labels.flags.writeable = False  # as a Volume's array
    out = postprocess(labels, (1.0, 1.0, 1.0), options, largest)
    assert out.flags.f_contiguous and out.flags.writeable and not np.shares_memory(out, labels)
    expected = postprocess(np.ascontiguousarray(labels), (1.0, 1.0, 1.0), options, largest)
    np.testing.assert_array_equal(out, expected)
