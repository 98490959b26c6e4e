"""The predictor: model folders in once, then scans in and labelled volumes out.

Public API (stable; used by ``medseg predict`` and ``medseg batch``)::

    predictor = Predictor.from_folders([folder, ...], PredictOptions(...))
    predictor = Predictor.from_network(network, plan, spec, PredictOptions(...))  # in memory (training)
    prediction = predictor.predict([volume, ...])          # one Volume per input channel
    probabilities = predictor.predict_preprocessed(array)  # an array already preprocessed with the plan
    result = predict_case(predictor, source, out_dir, OutputOptions(...))

Per case: preprocess with each model's plan (once per distinct plan), sliding-window logits,
softmax, average over the ensemble (:meth:`Predictor.predict_preprocessed`, the one path from a
preprocessed array to probabilities, which the trainer's validation also runs), then back onto
the exact source grid from the plan's preprocessing record: restore_argmax (labels of the
linearly restored probabilities, resampling only at label boundaries), restore_labels (--fast:
argmax, then nearest) or restore_probabilities (when probabilities are written, or models of
different plans are averaged).
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import torch

from medseg.errors import ConfigError, InputError
from medseg.inference.loading import LoadedModel, check_compatible, load_model
from medseg.inference.options import OutputOptions, PredictOptions
from medseg.inference.sliding import predict_volume
from medseg.inference.suitability import Finding, check_input, check_labels, refuse
from medseg.io.image2d import is_image_file_2d
from medseg.model.folder import ModelSpec
from medseg.model.plan import Plan
from medseg.model.preprocess import (
    argmax_labels,
    preprocess_case,
    restore_argmax,
    restore_labels,
    restore_probabilities,
)
from medseg.model.runtime import Runtime, configure_runtime
from medseg.volume import Volume, VolumeMeta

if TYPE_CHECKING:
    from medseg.cases import InputCase
    from medseg.io.dicom import DicomSeries, SeriesInfo
    from medseg.io.seg import SegmentCoding

#: What :func:`predict_case` reads: a discovered case, a path holding one case, a series, or channel Volumes.
CaseInput = Union["InputCase", str, Path, "SeriesInfo", Sequence[Volume]]

log = logging.getLogger(__name__)

#: GPU memory kept free for the network's activations when placing the stitching buffer
GPU_RESERVE_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class Prediction:
    """Labels on the source grid; class probabilities (K, I, J, K) float16 when asked; seconds per
    stage; why the input may not suit the model (:mod:`medseg.inference.suitability`). Instance
    models (:mod:`medseg.inference.instance_predict`) also give ``instances`` (ids on the source
    grid; ``labels`` is then the object mask) and, for Mask R-CNN, a ``scores`` per id."""

    labels: Volume
    probabilities: np.ndarray | None
    timings: dict[str, float]
    warnings: tuple[Finding, ...] = ()
    instances: Volume | None = None
    scores: dict[int, float] | None = None


@dataclass(frozen=True)
class CaseResult:
    """What :func:`predict_case` did: written files by kind, label statistics, seconds per stage
    (read, preprocess, network, inverse, postprocess, write, total)."""

    case_id: str
    outputs: dict[str, Path]
    stats: dict[str, Any]
    timings: dict[str, float]
    source: str = ""


class Predictor:
    """One or more models (an ensemble with identical labels) loaded once, ready for many cases."""

    def __init__(
        self, models: Sequence[LoadedModel], options: PredictOptions, runtime: Runtime, resources: Sequence[Any] = ()
    ) -> None:
        if not models:
            raise ConfigError("no model given; pass at least one -m MODEL_FOLDER")
        check_compatible(list(models))
        from medseg.inference.instance_predict import check_instance_models

        self.instance_method = check_instance_models([m.spec for m in models])
        self.models = list(models)
        self.options = options
        self.runtime = runtime
        self.tiles_per_batch = options.tiles_per_batch or (4 if runtime.device.type == "cuda" else 2)
        self._resources = list(resources)
        self._groups = _group_by_preprocessing(self.models)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_folders(cls, paths: Sequence[str | Path], options: PredictOptions | None = None) -> Predictor:
        """Load every model folder (trained folders, or ONNX exports for the ONNX backends) once."""
        from medseg.inference.export import ExportStore

        options = options or PredictOptions()
        runtime = configure_runtime(options.device, options.precision, options.threads)
        store = ExportStore(options.cache_dir)
        try:
            models = [load_model(path, options.backend, runtime, store) for path in paths]
        except BaseException:
            store.close()
            raise
        predictor = cls(models, options, runtime, [store])
        log.info("%s", predictor.choice_line())
        return predictor

    @classmethod
    def from_network(
        cls,
        network: torch.nn.Module,
        plan: Plan,
        spec: ModelSpec,
        options: PredictOptions | None = None,
        runtime: Runtime | None = None,
    ) -> Predictor:
        """A predictor around an in-memory PyTorch network (training's validation, tests, notebooks).

        ``runtime``: an already resolved runtime (the trainer passes its own: its rank's device
        and precision, so the network is neither moved nor run differently); None resolves
        ``options.device``/``precision``/``threads``. The network is put in eval mode for every
        forward pass; its weights are used as they are at each call (no copy).
        """
        from medseg.inference.backends import TorchBackend

        options = options or PredictOptions()
        if options.backend not in ("torch", "auto"):
            raise ConfigError("from_network runs PyTorch networks only; export first for other backends")
        runtime = runtime or configure_runtime(options.device, options.precision, options.threads)
        backend = TorchBackend(network, runtime)
        return cls(
            [LoadedModel("in-memory network", spec, plan, backend, "an in-memory PyTorch network")], options, runtime
        )

    def close(self) -> None:
        """Release temporary exports."""
        for resource in self._resources:
            resource.close()
        self._resources = []

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ properties
    @property
    def labels(self) -> dict[int, str]:
        """Label value -> name (shared by all models)."""
        return dict(self.models[0].spec.labels)

    @property
    def plan(self) -> Plan:
        """The one plan of these models (ConfigError when an ensemble's plans preprocess differently)."""
        return self._group(None)[0]

    @property
    def in_channels(self) -> int:
        """How many input images (channels) a case needs."""
        return self.models[0].spec.in_channels

    @property
    def label_metadata(self) -> dict[int, SegmentCoding]:
        """Label value -> DICOM SEG coding from the first model's ``model.json`` (labels without one absent)."""
        return dict(self.models[0].spec.label_metadata)

    @property
    def model_name(self) -> str:
        """The models' folder names joined by ``+`` (an ensemble), as written into DICOM SEGs."""
        names = [Path(m.name).name or m.name for m in self.models]
        return "+".join(dict.fromkeys(names))

    @property
    def postprocessing(self) -> dict:
        """The first model's validated post-processing choices (``model.json``)."""
        return dict(self.models[0].spec.postprocessing)

    def choices(self) -> list[dict[str, str]]:
        """The backend and precision each model runs with and why, one entry per distinct choice:
        ``{"backend", "backend_reason", "precision", "precision_reason"}``. The precision is the
        backend's own (ONNX Runtime runs fp32, OpenVINO bf16 or fp32)."""
        out: list[dict[str, str]] = []
        for model in self.models:
            precision = str(model.backend.describe().get("precision", self.runtime.precision))
            if precision == self.runtime.precision:
                precision_reason = self.runtime.precision_reason or "asked for"
            else:
                precision_reason = f"the {model.backend.name} backend runs {precision} here"
            choice = {
                "backend": model.backend.name,
                "backend_reason": model.backend_reason or "asked for",
                "precision": precision,
                "precision_reason": precision_reason,
            }
            if choice not in out:
                out.append(choice)
        return out

    def choice_line(self) -> str:
        """One line for the log, e.g. ``backend openvino (auto: fastest installed on this CPU),
        precision bf16 (auto: native bf16 on this CPU)`` (several choices joined by ``; ``)."""
        return "; ".join(
            f"backend {c['backend']} ({c['backend_reason']}), precision {c['precision']} ({c['precision_reason']})"
            for c in self.choices()
        )

    def describe(self) -> dict[str, Any]:
        """Models, backend (and why: ``choices``), device and options, for the run manifest."""
        return {
            "choices": self.choices(),
            "models": [
                {
                    "name": m.name,
                    "family": m.spec.family,
                    "spatial_dims": m.spec.spatial_dims,
                    "in_channels": m.spec.in_channels,
                    "out_channels": m.spec.out_channels,
                    "labels": {str(k): v for k, v in m.spec.labels.items()},
                    "postprocessing": m.spec.postprocessing,
                    "patch_size": list(m.patch_size),
                    "backend": m.backend.describe(),
                }
                for m in self.models
            ],
            "runtime": self.runtime.describe(),
            "options": asdict(self.options),
            "tiles_per_batch": self.tiles_per_batch,
        }

    # ------------------------------------------------------------------ prediction
    def predict(self, images: Sequence[Volume], probabilities: bool = False) -> Prediction:
        """Labels (and optionally probabilities) for one case on the exact grid of ``images[0]``.

        Needs one 3D Volume per model input channel, all on one grid. Promises a label Volume
        with the source shape and affine, label names in its meta, uint8 (uint16 beyond 255), and
        the suitability findings of input and prediction (their seconds count as preprocessing);
        with ``options.strict`` a finding raises UnsuitableInputError instead. A 3D model refuses a
        2D image file (PNG, TIFF, a single-frame 2D DICOM image) with an InputError.
        """
        if images and self.models[0].spec.spatial_dims == 3 and is_image_file_2d(images[0]):
            raise InputError(
                f"{Path(images[0].meta.source or 'the input').name} is a 2D image "
                f"({images[0].meta.extra.get('format')}); model {self.model_name} segments 3D volumes: "
                "use a 2D model for it"
            )
        if self.instance_method is not None:  # objects, not classes
            from medseg.inference.instance_predict import predict_instances

            return predict_instances(self, images)
        if len(images) != self.in_channels:
            raise InputError(
                f"the model takes {self.in_channels} input channel(s) but {len(images)} image(s) were given"
            )
        timings: dict[str, float] = defaultdict(float)
        start = time.perf_counter()
        findings = self._checked(
            check_input(images, plan, models[0].spec.spatial_dims) for plan, models in self._groups
        )
        timings["preprocess"] += time.perf_counter() - start
        results = []
        for plan, models in self._groups:
            start = time.perf_counter()
            pre = preprocess_case(images, plan)
            timings["preprocess"] += time.perf_counter() - start
            start = time.perf_counter()
            probs = self.predict_preprocessed(pre.array, plan)
            timings["network"] += time.perf_counter() - start
            results.append((pre.record, probs, len(models)))
        start = time.perf_counter()
        labels, probs_out = self._restore(results, probabilities)
        timings["inverse"] += time.perf_counter() - start
        meta = VolumeMeta(
            source=images[0].meta.source,
            series_uid=images[0].meta.series_uid,
            label_names=self.labels,
            spacing_known=images[0].meta.spacing_known,
        )
        label_volume = Volume(labels, images[0].affine, "label", meta)
        if images[0].meta.spacing_known:  # volumes in mL need millimetres
            findings += self._checked([check_labels(label_volume, self._groups[0][0])])
        return Prediction(label_volume, probs_out, dict(timings), tuple(findings))

    def _checked(self, groups: Iterable[list[Finding]]) -> list[Finding]:
        """The findings of every plan group, each message once; raises UnsuitableInputError under ``strict``."""
        unique = list({f.message: f for group in groups for f in group}.values())
        if unique and self.options.strict:
            raise refuse(unique)
        return unique

    def predict_preprocessed(self, array: np.ndarray, plan: Plan | None = None) -> np.ndarray:
        """Mean softmax probabilities (K, X, Y, Z) float32 on the grid of an already preprocessed image.

        Needs ``array`` (C, X, Y, Z) made by ``preprocess_case`` with ``plan`` (default: the one
        plan of this predictor's models; ConfigError when their plans preprocess differently).
        Any float dtype and read-only (memory-mapped) arrays are accepted. Runs every model of
        that plan with this predictor's windowing and TTA: the path :meth:`predict` takes
        between preprocessing and the inverse.
        """
        plan, models = self._group(plan)
        if self.instance_method == "maskrcnn":
            raise ConfigError("a Mask R-CNN model gives objects, not class probabilities; use predict()")
        if array.dtype != np.float32 or not array.flags.writeable:
            array = np.array(array, dtype=np.float32)  # torch wants writable float32 memory
        return self._probabilities(array, plan, models)

    def _group(self, plan: Plan | None) -> tuple[Plan, list[LoadedModel]]:
        """The models sharing ``plan``'s preprocessing (the only group when ``plan`` is None)."""
        if plan is None:
            if len(self._groups) != 1:
                raise ConfigError("these models preprocess differently; say which plan the array was made with")
            return self._groups[0]
        for group_plan, models in self._groups:
            if group_plan is plan or group_plan.preprocessing_fields() == plan.preprocessing_fields():
                return group_plan, models
        raise ConfigError("no model of this predictor preprocesses with the given plan")

    def _probabilities(self, array: np.ndarray, plan: Plan, models: list[LoadedModel]) -> np.ndarray:
        """Mean softmax (K, X, Y, Z) float32 of ``models`` on a preprocessed array (C, X, Y, Z)."""
        num_classes = models[0].spec.out_channels
        device = self.runtime.device
        values = (num_classes + 1 + array.shape[0]) * int(np.prod(_padded(array.shape[1:], models)))
        where = accumulator_device(device, values)
        image = torch.from_numpy(array).to(where)
        total: torch.Tensor | None = None
        for model in models:
            window = model.window(self.options.overlap, self.tiles_per_batch, self.options.tta == "all")
            logits = predict_volume(model.backend, image, num_classes, window, plan.slice_axis, where)
            probs = softmax_(logits)
            total = probs if total is None else total.add_(probs)
        assert total is not None  # a predictor holds at least one model
        if len(models) > 1:
            total.div_(len(models))
        return total.cpu().numpy()

    def _restore(self, results: list, want_probs: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Labels on the source grid (and float16 probabilities when asked) from per-plan results."""
        if len(results) == 1:
            record, probs, _ = results[0]
            labels: np.ndarray | None = None
            if self.options.fast or not record.resampled:  # nearest back is exact without resampling
                labels = np.asarray(restore_labels(argmax_labels(probs), record).array)
            elif not want_probs:  # the argmax of linearly restored probabilities, computed lean
                labels = restore_argmax(probs, record)
            if not want_probs:
                assert labels is not None  # set by one of the two branches above
                return labels, None
            full = restore_probabilities(probs, record, dtype=_restore_dtype(probs, record, want_probs))
            labels = argmax_labels(full) if labels is None else labels
            return labels, full.astype(np.float16, copy=False) if want_probs else None
        if self.options.fast:
            log.info("--fast with models of different plans: averaging probabilities on the source grid")
        weights = sum(n for _, _, n in results)
        mean: np.ndarray | None = None
        for record, probs, n in results:
            restored = restore_probabilities(probs, record, dtype=np.float32)
            restored *= n / weights
            mean = restored if mean is None else np.add(mean, restored, out=mean)
        assert mean is not None  # several plan groups here
        full = mean
        return argmax_labels(full), full.astype(np.float16) if want_probs else None


def _group_by_preprocessing(models: list[LoadedModel]) -> list[tuple[Plan, list[LoadedModel]]]:
    """Models whose plans preprocess identically share one preprocessing pass."""
    groups: dict[str, tuple[Plan, list[LoadedModel]]] = {}
    for model in models:
        key = json.dumps(model.plan.preprocessing_fields(), sort_keys=True)
        groups.setdefault(key, (model.plan, []))[1].append(model)
    return list(groups.values())


def _padded(shape: Sequence[int], models: list[LoadedModel]) -> tuple[int, ...]:
    """The largest grid a sliding window allocates (volume padded up to the 3D patch)."""
    out = list(shape)
    for model in models:
        if len(model.patch_size) == 3:
            out = [max(s, p) for s, p in zip(out, model.patch_size)]
    return tuple(out)


def _restore_dtype(probs: np.ndarray, record: Any, want_probs: bool) -> Any:
    """float32 for the full-resolution probabilities unless they would pass 512 MB (then float16)."""
    values = probs.shape[0] * int(np.prod(record.source_shape))
    return np.float16 if want_probs or values * 4 > 512 * 1024**2 else np.float32


def accumulator_device(
    device: torch.device, values: int, free_bytes: int | None = None, reserve_bytes: int = GPU_RESERVE_BYTES
) -> torch.device:
    """Where the float32 stitching buffers (``values`` numbers) live, decided before running.

    CPU runs: the CPU. CUDA runs: the GPU when the buffers fit its free memory
    (``torch.cuda.mem_get_info``) minus ``reserve_bytes`` for the network, else the CPU.
    """
    if device.type != "cuda":
        return device
    if free_bytes is None:
        free_bytes, _ = torch.cuda.mem_get_info(device)
    need = values * 4
    if need <= free_bytes - reserve_bytes:
        return device
    log.info(
        "stitching buffers (%.1f GB) do not fit the GPU's free memory (%.1f GB); keeping them on the CPU",
        need / 1e9,
        free_bytes / 1e9,
    )
    return torch.device("cpu")


def softmax_(logits: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """Softmax over the class axis (0) of (K, X, Y, Z) logits in place, a few slices at a time."""
    for start in range(0, logits.shape[-1], chunk):
        part = logits[..., start : start + chunk]
        part.copy_(torch.softmax(part, dim=0))
    return logits


# ---------------------------------------------------------------------- per-case pipeline
def predict_case(
    predictor: Predictor,
    source: CaseInput,
    out_dir: str | Path,
    options: OutputOptions | None = None,
    case_id: str | None = None,
) -> CaseResult:
    """Read one case, predict, post-process and write its outputs into ``out_dir``.

    ``source`` is an :class:`~medseg.cases.InputCase` (from :func:`~medseg.cases.discover_cases`),
    a path holding exactly one case, a DICOM series (``SeriesInfo``), or a list of channel
    Volumes. Promises the label file on the exact source grid, statistics, and the optional
    outputs asked for in ``options``, named ``case_id`` (default: the case's id), with the
    suitability findings in ``stats["warnings"]`` (each logged as a warning);
    ``timings`` break the case down into read / preprocess / network / inverse / postprocess / write.
    """
    from medseg.inference.writer import write_case_outputs

    options = options or OutputOptions()
    out_dir = Path(out_dir)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    case_id, images, dicom, described = _read_case(source, predictor.in_channels, case_id, options, out_dir)
    timings["read"] = time.perf_counter() - start
    prediction = predictor.predict(images, probabilities=options.probabilities)
    for finding in prediction.warnings:  # one line per problem; the stats and the manifest keep them
        log.warning("%s: %s", case_id, finding.message)
    timings.update(prediction.timings)
    if prediction.instances is not None:  # instance models: instance map, object table, QC picture
        from medseg.inference.instance_predict import write_instance_case

        outputs, stats, post_timings = write_instance_case(
            case_id, images, prediction, out_dir, options, predictor, dicom
        )
    else:
        outputs, stats, post_timings = write_case_outputs(
            predictor, case_id, images[0], prediction, dicom, out_dir, options
        )
    timings.update(post_timings)
    timings["total"] = time.perf_counter() - start
    stats = {"case_id": case_id, "source": described, **stats}
    return CaseResult(case_id, outputs, stats, {k: round(v, 4) for k, v in timings.items()}, described)


def _read_case(
    source: CaseInput, channels: int, case_id: str | None, options: OutputOptions, out_dir: Path
) -> tuple[str, list[Volume], DicomSeries | None, str]:
    """(case id, channel volumes, DicomSeries or None, description) for any accepted source, read
    with the DICOM reader options of ``options``; ConfigError, before reading, when an output in
    ``out_dir`` would overwrite one of the case's input files."""
    from medseg.cases import InputCase, check_planned_outputs, read_case
    from medseg.cases.privacy import redact
    from medseg.inference.outputs import planned_outputs

    if isinstance(source, (list, tuple)) and source and all(isinstance(v, Volume) for v in source):
        volumes = list(source)
        name = Path(volumes[0].meta.source).name.split(".")[0] if volumes[0].meta.source else "case"
        return case_id or name, volumes, None, volumes[0].meta.source or "in-memory volumes"
    case = source if isinstance(source, InputCase) else _as_case(source, channels)
    case_id = case_id or case.case_id
    check_planned_outputs([case], lambda _: planned_outputs(out_dir, case_id))
    images, dicom = read_case(
        case, options.resample, allow_missing_slices=options.allow_missing_slices, values=options.values
    )
    return case_id, images, dicom, redact(case.describe(), case.redact)


def _as_case(source: object, channels: int) -> InputCase:
    """The one case a path or a ``SeriesInfo`` stands for (InputError otherwise)."""
    from medseg.cases import discover_cases, series_case
    from medseg.io.dicom import SeriesInfo

    if isinstance(source, SeriesInfo):
        return series_case(source)
    if not isinstance(source, (str, Path)):
        raise InputError(f"cannot predict from {type(source).__name__}; pass a file path, a SeriesInfo or Volumes")
    found = discover_cases(source, channels=channels)
    if len(found.cases) != 1:
        why = f" ({found.why_nothing()})" if not found.cases and found.skipped else ""
        raise InputError(f"{source} holds {len(found.cases)} cases{why}; predict_case takes one (use discover_cases)")
    return found.cases[0]
