"""Sliding window: tiling, Gaussian blending, batching, mirroring TTA and 2D slicing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.errors import ConfigError
from medseg.inference.sliding import (
    WindowConfig,
    gaussian_weights,
    mirrored,
    predict_volume,
    sliding_window,
    tile_grid,
    tile_starts,
)


def conv_net(in_ch: int = 1, classes: int = 3, dims: int = 3) -> torch.nn.Module:
    """A small translation-equivariant conv net (receptive field 5 voxels)."""
    conv = torch.nn.Conv3d if dims == 3 else torch.nn.Conv2d
    torch.manual_seed(0)
    return torch.nn.Sequential(conv(in_ch, 4, 3, padding=1), torch.nn.ReLU(), conv(4, classes, 3, padding=1)).eval()


def test_tile_starts_cover_every_voxel_with_half_overlap():
    for size, patch in [(16, 16), (17, 16), (40, 16), (100, 24)]:
        starts = tile_starts(size, patch, 0.5)
        assert starts[0] == 0 and starts[-1] + patch == size
        covered = np.zeros(size, bool)
        for s in starts:
            covered[s : s + patch] = True
        assert covered.all()
        steps = np.diff(starts)
        assert (steps <= patch // 2).all()  # overlap of at least half a tile


def test_tile_grid_counts_and_gaussian_shape():
    windows = tile_grid((40, 16, 24), (16, 16, 16), 0.5)
    assert len(windows) == len(tile_starts(40, 16, 0.5)) * 1 * len(tile_starts(24, 16, 0.5))
    g = gaussian_weights((16, 12, 8)).numpy()
    assert g.shape == (16, 12, 8) and g.dtype == np.float32
    assert 0.5 < g.max() <= 1.0 and g.min() > 0  # the peak sits between voxels on even axes
    np.testing.assert_allclose(g, g[::-1, ::-1, ::-1], rtol=1e-6)  # symmetric, so mirroring is consistent
    assert g[8, 6, 4] > g[0, 6, 4] * 100  # centre trusted far more than the border (sigma = tile / 8)


def test_sliding_window_matches_whole_volume_forward():
    net = conv_net()
    torch.manual_seed(1)
    image = torch.randn(1, 1, 37, 29, 23)
    with torch.inference_mode():
        whole = net(image)
    config = WindowConfig((16, 16, 16), overlap=0.5, tiles_per_batch=3)
    tiled = sliding_window(net, image, 3, config)
    assert tiled.shape == whole.shape and tiled.dtype == torch.float32
    err = (tiled - whole).abs()
    assert float(err.max()) < 0.05 * float(whole.abs().max())  # tile-border effects are down-weighted
    assert float(err.mean()) < 1e-3 * float(whole.abs().max())
    agree = (tiled.argmax(1) == whole.argmax(1)).float().mean()
    assert float(agree) > 0.999


def test_tiles_per_batch_does_not_change_the_result():
    net = conv_net()
    image = torch.randn(1, 1, 30, 20, 20)
    one = sliding_window(net, image, 3, WindowConfig((16, 16, 16), tiles_per_batch=1))
    many = sliding_window(net, image, 3, WindowConfig((16, 16, 16), tiles_per_batch=5))
    torch.testing.assert_close(one, many, rtol=1e-5, atol=1e-5)


def test_volume_smaller_than_patch_is_padded_and_cropped_back():
    calls = []

    def identity(tiles: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(tiles.shape))
        return tiles.clone()

    image = torch.arange(10 * 7 * 5, dtype=torch.float32).reshape(1, 1, 10, 7, 5)
    out = sliding_window(identity, image, 1, WindowConfig((8, 8, 8)))
    assert calls and all(shape[2:] == (8, 8, 8) for shape in calls)
    torch.testing.assert_close(out, image)  # blending identical tiles returns the input exactly


def test_mirroring_undoes_the_flips():
    x = torch.randn(2, 1, 6, 5, 4)
    identity = mirrored(lambda t: t.clone(), (0, 1, 2))
    torch.testing.assert_close(identity(x), x)  # a flip not undone would give a flipped image

    def shift(t: torch.Tensor) -> torch.Tensor:  # asymmetric: out[i] = in[i + 1] along axis 0
        return torch.roll(t, shifts=-1, dims=2)

    expected = (shift(x) + torch.roll(x, shifts=1, dims=2)) / 2  # the flipped pass shifts the other way
    torch.testing.assert_close(mirrored(shift, (0,))(x), expected)


def test_tta_sliding_window_of_equivariant_net_stays_close():
    net = conv_net()
    image = torch.randn(1, 1, 24, 20, 18)
    plain = sliding_window(net, image, 3, WindowConfig((16, 16, 16)))
    tta = sliding_window(net, image, 3, WindowConfig((16, 16, 16), mirror_axes=(0, 1, 2)))
    assert tta.shape == plain.shape
    # a random conv net is not mirror-symmetric, so the TTA mean differs but stays correlated
    corr = np.corrcoef(plain.flatten().numpy(), tta.flatten().numpy())[0, 1]
    assert 0.3 < corr < 0.9999


def test_2d_network_runs_slice_by_slice_along_the_slice_axis():
    net = conv_net(dims=2)
    image = torch.randn(1, 12, 20, 9)  # (C, X, Y, Z)
    for axis in (0, 1, 2):
        out = predict_volume(net, image, 3, WindowConfig((8, 8), tiles_per_batch=7), slice_axis=axis)
        assert out.shape == (3, 12, 20, 9)
        index = [slice(None)] * 4
        index[1 + axis] = 4
        one_slice = image[tuple(index)][None]  # (1, C, A, B)
        with torch.inference_mode():
            whole = net(one_slice)[0]
        err = (out[tuple(index)] - whole).abs().max()
        assert float(err) < 0.05 * float(whole.abs().max())


def test_wrong_network_output_is_reported():
    with pytest.raises(ValueError, match="expected 3 classes"):
        sliding_window(lambda t: t.clone(), torch.zeros(1, 1, 8, 8, 8), 3, WindowConfig((8, 8, 8)))


def test_window_config_validation():
    with pytest.raises(ConfigError, match="overlap"):
        WindowConfig((8, 8, 8), overlap=1.0)
    with pytest.raises(ConfigError, match="mirror axes"):
        WindowConfig((8, 8), mirror_axes=(2,))


def test_separable_weight_map_equals_the_sum_of_tile_gaussians():
    from medseg.inference.sliding import weight_map

    shape, patch = (37, 20, 29), (16, 12, 16)
    expected = torch.zeros(shape)
    for w in tile_grid(shape, patch, 0.5):
        expected[w] += gaussian_weights(patch)
    torch.testing.assert_close(weight_map(shape, patch, 0.5), expected, rtol=1e-5, atol=1e-7)
    assert weight_map((30, 40), (16, 16), 0.5).shape == (30, 40)
