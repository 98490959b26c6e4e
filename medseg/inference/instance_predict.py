"""Instance models in the predictor: objects instead of classes, same inputs, same model folders.

``model.json``'s ``instances`` names the method (:attr:`medseg.model.folder.ModelSpec.instance_method`):

* ``"watershed"`` (U-Net instance family): the predictor's own path from a preprocessed image to
  stitched class probabilities (sliding window, Gaussian blending, mirroring TTA, ensembles), then
  the seeded watershed of :mod:`medseg.inference.watershed` on the whole map;
* ``"maskrcnn"``: tiled detection with detections merged across tile borders
  (:mod:`medseg.inference.detection`), one model, 2D images.

Either way the instance map is made on the preprocessed grid and brought back onto the source grid
with :func:`~medseg.model.preprocess.restore_labels` (nearest; exact for a ``pixel_grid`` plan), so
``<case>.png`` has exactly the input's H x W. :func:`write_instance_case` writes the detection
outputs of :mod:`medseg.inference.objects` (instance map, object table, QC picture).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medseg.errors import ConfigError, InputError
from medseg.model.preprocess import preprocess_case, restore_labels
from medseg.volume import Volume

if TYPE_CHECKING:
    from medseg.inference.options import OutputOptions
    from medseg.inference.predictor import Prediction, Predictor
    from medseg.io.dicom import DicomSeries

METHODS = ("watershed", "maskrcnn")


def check_instance_models(specs: Sequence[Any]) -> str | None:
    """The shared instance method of an ensemble's specs (None: semantic models).

    ConfigError when semantic and instance models are mixed, methods differ, or a Mask R-CNN
    is part of an ensemble.
    """
    methods = {spec.instance_method for spec in specs}
    if len(methods) > 1:
        raise ConfigError(
            f"these models make different outputs ({', '.join(sorted(str(m) for m in methods))}); "
            "ensemble models of one kind"
        )
    method = methods.pop()
    if method is not None and method not in METHODS:
        raise ConfigError(
            f"model.json names an unknown instance method {method!r}; this medseg knows {', '.join(METHODS)}"
        )
    if method == "maskrcnn" and len(specs) > 1:
        raise ConfigError("Mask R-CNN models cannot be ensembled; pass one -m")
    return method


def matching_channels(images: Sequence[Volume], channels: Sequence[str]) -> list[Volume]:
    """``images`` as one 3D Volume per model channel: a colour 2D image (``(W, H, 1, C)``, as
    ``medseg.read`` gives it) is split into its channels, and a grey image given to a
    red/green/blue model is repeated into the three channels (a grey picture is its own RGB)."""
    from medseg.cases.read import image_channels

    volumes = [channel for image in images for channel in image_channels(image)]
    if len(volumes) == 1 and tuple(channels) == ("red", "green", "blue"):
        return volumes * 3
    return volumes


def predict_instances(predictor: Predictor, images: Sequence[Volume]) -> Prediction:
    """Objects of one case on the exact grid of ``images[0]`` (see the module).

    Needs one 3D Volume per model channel (a grey image for an RGB model is repeated). Promises a
    Prediction whose ``instances`` holds the ids (uint16 / uint32) and ``labels`` the object mask
    (class 1 wherever an object is); ``scores`` per id for Mask R-CNN.
    """
    from medseg.inference.predictor import Prediction

    plan = predictor.plan
    images = matching_channels(images, plan.channels)
    if len(images) != predictor.in_channels:
        raise InputError(
            f"the model takes {predictor.in_channels} input channel(s) but {len(images)} image(s) were given"
        )
    timings: dict[str, float] = defaultdict(float)
    start = time.perf_counter()
    pre = preprocess_case(images, plan)
    timings["preprocess"] = time.perf_counter() - start
    start = time.perf_counter()
    ids, scores = instances_preprocessed(predictor, pre.array)
    timings["network"] = time.perf_counter() - start
    start = time.perf_counter()
    meta = replace(images[0].meta, label_names=None, rescale=None)  # keeps spacing_known
    instances = restore_labels(ids, pre.record, meta)
    mask = (np.asarray(instances.array) > 0).astype(np.uint8)
    labels = Volume(mask, images[0].affine, "label", replace(meta, label_names=predictor.labels))
    timings["inverse"] = time.perf_counter() - start
    return Prediction(labels, None, dict(timings), instances=instances, scores=scores)


def instances_preprocessed(predictor: Predictor, array: np.ndarray) -> tuple[np.ndarray, dict[int, float] | None]:
    """Instance ids (X, Y, Z) on the grid of an image already preprocessed with the predictor's plan
    (C, X, Y, Z), and per-id scores (Mask R-CNN) or None: the path :func:`predict_instances` takes
    between preprocessing and the inverse (training's periodic validation runs it too)."""
    plan, model = predictor.plan, predictor.models[0]
    spec = model.spec
    if spec.instance_method == "watershed":
        from medseg.inference.watershed import WatershedSettings, watershed_instances

        probabilities = predictor.predict_preprocessed(array, plan)
        return watershed_instances(probabilities, WatershedSettings.from_spec(spec.instances)), None
    from medseg.inference.detection import DetectionSettings, detect_instances

    axis = plan.slice_axis
    if array.shape[1 + axis] != 1:
        raise InputError(
            f"this Mask R-CNN model segments 2D images; the input has {array.shape[1 + axis]} slices "
            "(give one image per file)"
        )
    image = np.array(np.take(array, 0, axis=1 + axis), dtype=np.float32)
    network = getattr(model.backend, "network", None)
    if network is None:
        raise ConfigError(f"{model.name}: Mask R-CNN models run with the PyTorch backend only; use --backend torch")
    tile = plan.config_2d.patch_size
    ids, scores = detect_instances(
        network,
        image,
        (tile[0], tile[1]),
        DetectionSettings.from_spec(spec.instances),
        predictor.runtime,
        predictor.tiles_per_batch,
    )
    return np.expand_dims(ids, axis), scores


def colour_image(images: Sequence[Volume]) -> Volume:
    """One Volume holding every channel (``(I, J, K, C)``; the image itself for one channel)."""
    if len(images) == 1:
        return images[0]
    return images[0].with_array(np.stack([np.asarray(v.array) for v in images], axis=-1))


def write_instance_case(
    case_id: str,
    images: Sequence[Volume],
    prediction: Prediction,
    out_dir: Path,
    options: OutputOptions,
    predictor: Predictor | None = None,
    dicom: DicomSeries | None = None,
) -> tuple[dict[str, Path], dict[str, Any], dict[str, float]]:
    """Write one case's detection outputs: ``<case>.png`` (2D) / ``<case>.nii.gz`` (3D) instance map,
    ``<case>_objects.csv`` + ``.json``, (unless ``options.qc`` is off) the QC picture ``qc``, and
    for DICOM input (``dicom``, the loaded series) the DICOM SEG ``<case>_seg.dcm`` with one
    segment per object (segment number = instance id, named ``<class> <id>``, coded as the model's
    object class) and RTSTRUCT when asked, as :func:`medseg.inference.writer.write_case_outputs`
    writes them for class labels.

    Returns (outputs by kind, statistics with the object count, seconds spent writing).
    """
    from medseg.inference.objects import write_detection_outputs
    from medseg.inference.writer import dicom_image2d_source

    if prediction.instances is None:
        raise ValueError("write_instance_case needs a prediction of an instance model")
    start = time.perf_counter()
    paths = write_detection_outputs(
        Path(out_dir), case_id, colour_image(images), prediction.instances, scores=prediction.scores, qc=options.qc
    )
    outputs = {("qc" if kind == "objects_qc" else kind): path for kind, path in paths.items()}
    instances = prediction.instances
    count = int(np.count_nonzero(np.bincount(np.asarray(instances.array).ravel())[1:]))
    stats = {
        "objects": count,
        "shape": list(instances.spatial_shape),
        "spacing_mm": [round(s, 6) for s in instances.spacing] if instances.meta.spacing_known else None,
    }
    if count and (dicom is not None or dicom_image2d_source(images[0]) is not None):
        outputs.update(
            _dicom_object_outputs(case_id, instances, prediction, dicom, out_dir, options, predictor, stats, images[0])
        )
    return outputs, stats, {"write": time.perf_counter() - start}


def object_classes(ids: np.ndarray, classes: np.ndarray) -> dict[int, int]:
    """Instance id -> the class most of its voxels have in ``classes`` (1 when none has one), for
    every id present; one pass over the arrays, whatever the number of objects."""
    inside = ids > 0
    if not inside.any():
        return {}
    kinds = int(classes.max(initial=0)) + 1
    pairs = ids[inside].astype(np.int64) * kinds + classes[inside].astype(np.int64)
    counts = np.bincount(pairs, minlength=(int(ids.max()) + 1) * kinds).reshape(-1, kinds)
    counts[:, 0] = 0
    present = np.flatnonzero(np.bincount(ids[inside].astype(np.int64)))
    return {int(i): int(counts[i].argmax()) if counts[i].any() else 1 for i in present}


def _dicom_object_outputs(
    case_id: str,
    instances: Volume,
    prediction: Prediction,
    dicom: DicomSeries | None,
    out_dir: Path,
    options: OutputOptions,
    predictor: Predictor | None,
    stats: dict[str, Any],
    image: Volume | None = None,
) -> dict[str, Path]:
    """DICOM SEG / RTSTRUCT of the objects: one segment (ROI) per instance id, named by its class."""
    from medseg.inference.outputs import case_paths
    from medseg.inference.writer import write_dicom_outputs

    ids = np.asarray(instances.array)
    classes = np.asarray(prediction.labels.array)
    class_names = dict(prediction.labels.meta.label_names or {})
    codes_by_class = predictor.label_metadata if predictor is not None else {}
    names: dict[int, str] = {}
    codes: dict[int, Any] = {}
    for object_id, label in object_classes(ids, classes).items():
        names[object_id] = f"{class_names.get(label, 'object')} {object_id}"
        if label in codes_by_class:
            codes[object_id] = codes_by_class[label]
    labels = instances.with_array(ids, kind="label", label_names=names)
    model_name = predictor.model_name if predictor is not None else None
    return write_dicom_outputs(
        case_id, labels, names, dicom, case_paths(out_dir, case_id), options, stats, model_name, codes, image
    )
