"""Classical instance baselines (scikit-image): Otsu threshold + connected components, and a
distance-transform watershed. No training, no per-image settings: every choice below is fixed or
derived from the image itself, so they serve as the floor a trained model must beat.

Steps shared by both (:func:`foreground_mask`):

1. **Grey**: a colour image becomes its luminance, ``skimage.color.rgb2gray`` (ITU-R BT.709:
   0.2125 R + 0.7154 G + 0.0721 B); an alpha channel is dropped by the readers. Grey images are used
   as they are; other channel counts are averaged.
2. **Threshold**: Otsu's threshold of the grey values splits the pixels in two classes.
3. **Polarity, from the data**: objects are the *smaller* class. Fluorescence nuclei are bright on a
   dark background; bright-field and H&E nuclei are dark on a light one, and in both the nuclei
   cover less than half of the image. So when the bright class covers more than half of the pixels,
   the dark class is taken as foreground.
4. Holes inside objects are filled (``scipy.ndimage.binary_fill_holes``) and objects smaller than
   :data:`MIN_SIZE` voxels removed.

:func:`otsu_instances` numbers the connected components (face connectivity). :func:`watershed_instances`
splits touching objects: markers are the peaks of the distance transform at least
``max(3, median object radius / 2)`` voxels apart (the radius measured on this image's components), and
``skimage.segmentation.watershed`` floods the negated distance inside the foreground.
Both work on one-slice 2D images and on 3D volumes; the result is an instance map on the image's grid.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from medseg.volume import Volume

#: objects smaller than this many voxels are dropped (noise specks)
MIN_SIZE = 10
#: the smallest distance between two watershed markers, in voxels
MIN_MARKER_DISTANCE = 3


def grey_values(image: Volume) -> np.ndarray:
    """The image's spatial grey array (I, J, K) as float (luminance of RGB, mean of other channels)."""
    from skimage.color import rgb2gray

    array = np.asarray(image.array)
    if array.ndim == 3:
        return array.astype(np.float64)
    if array.shape[3] == 3:
        return rgb2gray(array.astype(np.float64) / max(float(array.max()), 1.0), channel_axis=-1)
    return array.astype(np.float64).mean(axis=3)


def foreground_mask(grey: np.ndarray, min_size: int = MIN_SIZE) -> np.ndarray:
    """Objects of a grey image: Otsu threshold, the smaller class as foreground, holes filled, specks removed."""
    from scipy import ndimage
    from skimage.filters import threshold_otsu
    from skimage.measure import label

    if grey.size == 0 or float(grey.max()) == float(grey.min()):
        return np.zeros(grey.shape, dtype=bool)
    bright = grey > threshold_otsu(grey)
    mask = ndimage.binary_fill_holes(~bright if bright.mean() > 0.5 else bright)
    components = label(mask, connectivity=1)
    sizes = np.bincount(components.ravel())
    return (sizes >= min_size)[components] & mask


def _plane(array: np.ndarray) -> np.ndarray:
    """A one-slice (I, J, 1) array as (I, J); 3D arrays as they are."""
    return array[:, :, 0] if array.ndim == 3 and array.shape[2] == 1 else array


def _as_instances(image: Volume, labels: np.ndarray) -> Volume:
    dtype = np.uint16 if int(labels.max(initial=0)) <= 65535 else np.uint32
    labels = labels.reshape(image.spatial_shape).astype(dtype)
    return image.with_array(labels, kind="label", label_names=None)


def otsu_instances(image: Volume, min_size: int = MIN_SIZE) -> Volume:
    """Otsu foreground (see the module) split into connected components numbered 1..N."""
    from skimage.measure import label

    mask = foreground_mask(_plane(grey_values(image)), min_size)
    return _as_instances(image, label(mask, connectivity=1))


def marker_distance(mask: np.ndarray) -> int:
    """Half the median equivalent radius of the mask's components, at least :data:`MIN_MARKER_DISTANCE`."""
    from skimage.measure import label

    components = label(mask, connectivity=1)
    sizes = np.bincount(components.ravel())[1:]
    if sizes.size == 0:
        return MIN_MARKER_DISTANCE
    volume = float(np.median(sizes))
    radius = np.sqrt(volume / np.pi) if mask.ndim == 2 else (3.0 * volume / (4.0 * np.pi)) ** (1.0 / 3.0)
    return max(MIN_MARKER_DISTANCE, round(float(radius) / 2.0))


def watershed_instances(image: Volume, min_size: int = MIN_SIZE) -> Volume:
    """Otsu foreground split by a watershed on its distance transform (see the module)."""
    from scipy import ndimage
    from skimage.feature import peak_local_max
    from skimage.measure import label
    from skimage.segmentation import watershed

    mask = foreground_mask(_plane(grey_values(image)), min_size)
    if not mask.any():
        return _as_instances(image, np.zeros(mask.shape, dtype=np.int64))
    distance = ndimage.distance_transform_edt(mask)
    peaks = peak_local_max(
        distance, min_distance=marker_distance(mask), labels=label(mask, connectivity=1), exclude_border=False
    )
    markers = np.zeros(mask.shape, dtype=np.int64)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = watershed(-distance, markers, mask=mask)
    unreached = mask & (labels == 0)  # components without a marker keep their own id
    labels[unreached] = label(unreached, connectivity=1)[unreached] + labels.max()
    return _as_instances(image, labels)
