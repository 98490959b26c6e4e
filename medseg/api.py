"""The short Python API for research scripts, on top of the objects the CLI uses.

::

    import medseg

    image = medseg.read("scan.nii.gz")                        # or a DICOM folder, series="T1post"
    result = medseg.segment(image, model="hippocampus")       # post-processed as `medseg predict`
    medseg.write(result.labels, "labels.nii.gz")              # on the exact grid of `image`

    model = medseg.load_model("hippocampus", tta="all")       # load once, segment many volumes
    for path in paths:
        labels = medseg.segment(path, model=model).labels

    medseg.run_batch("export/", "hippocampus", "results/", workers=2)   # = `medseg batch`

Options are the keyword names of :class:`~medseg.inference.PredictOptions` (device, backend,
precision, tta, overlap, tiles_per_batch, fast, threads, cache_dir, strict),
:class:`~medseg.inference.PostprocessOptions` (largest_component, min_size_mm3, fill_holes, remap,
instances), :class:`~medseg.inference.OutputOptions` (dicom_seg, probabilities, qc, resample, allow_missing_slices, values) and,
for :func:`run_batch`, :class:`~medseg.batch.runner.BatchOptions` (workers, executor, force,
retry_failed, timeout, threads, ray_address, gpus_per_worker). An unknown name is a ConfigError
naming the closest valid one.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from medseg.errors import ConfigError, did_you_mean
from medseg.volume import Kind, Volume

if TYPE_CHECKING:
    from medseg.batch.session import SessionResult
    from medseg.inference.postprocess import PostprocessOptions
    from medseg.inference.predictor import Prediction, Predictor

__all__ = ["load_model", "read", "run_batch", "segment", "write"]

T = TypeVar("T")
log = logging.getLogger("medseg")
ModelRef = str | Path


def read(path: str | Path, *, series: str | None = None, kind: Kind = "image", resample: bool = False) -> Volume:
    """One volume from a NIfTI/NRRD/MHA file or a DICOM file/folder (``series``: index, UID or
    description pattern, needed when a folder holds several image series)."""
    from medseg.io import read_volume

    return read_volume(path, kind=kind, series=series, resample=resample)


def write(volume: Volume, path: str | Path) -> Path:
    """Write ``volume`` by suffix (``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha``), atomically; returns the path."""
    from medseg.io import write_volume

    return write_volume(volume, path)


def load_model(*models: ModelRef, **options: Any) -> Predictor:
    """A :class:`~medseg.inference.Predictor` for one model or an ensemble, loaded once.

    ``models`` are model folders, ``medseg export`` folders or shipped model names (default
    ``"hippocampus"``); ``options`` are PredictOptions fields. Close it (or use ``with``) to
    release temporary exports.
    """
    from medseg.inference import PredictOptions, Predictor
    from medseg.pretrained import resolve_model_path

    paths = [resolve_model_path(m) for m in (models or ("hippocampus",))]
    return Predictor.from_folders(paths, _build(PredictOptions, options, "load_model"))


def segment(
    image: Volume | Sequence[Volume] | str | Path,
    model: ModelRef | Predictor = "hippocampus",
    *,
    series: str | None = None,
    probabilities: bool = False,
    **options: Any,
) -> Prediction:
    """Segment one case and post-process it exactly as ``medseg predict`` does (nothing is written).

    ``image`` is a Volume, one Volume per input channel, or a path (file or DICOM folder;
    ``series`` picks a DICOM series). ``model`` is a loaded Predictor (reused, not closed) or
    anything :func:`load_model` takes. ``options`` are PostprocessOptions fields, plus
    PredictOptions fields when ``model`` is not loaded yet. Promises labels on the exact grid of
    the (first) image, label names in their meta, probabilities when asked, and in ``warnings``
    why the input may not suit the model (each also logged; ``strict=True`` refuses instead).
    """
    from medseg.inference import PostprocessOptions, PredictOptions

    post_options, predict_options = _split(options, PostprocessOptions, PredictOptions)
    post = _build(PostprocessOptions, post_options, "segment")
    volumes = _volumes(image, series)
    if isinstance(model, (str, Path)):
        with load_model(model, **predict_options) as predictor:
            return _segment(predictor, volumes, post, probabilities)
    if predict_options:
        raise ConfigError(
            f"segment: {', '.join(sorted(predict_options))} must be given to load_model, not to an already loaded model"
        )
    return _segment(model, volumes, post, probabilities)


def _segment(predictor: Predictor, volumes: list[Volume], post: PostprocessOptions, probabilities: bool) -> Prediction:
    """Predict, then post-process with the one function ``medseg predict`` uses."""
    from medseg.inference.writer import finish_labels

    prediction = predictor.predict(volumes, probabilities=probabilities)
    for finding in prediction.warnings:  # also in prediction.warnings
        log.warning("%s", finding.message)
    return dataclasses.replace(prediction, labels=finish_labels(predictor, prediction.labels, post).labels)


def _volumes(image: Volume | Sequence[Volume] | str | Path, series: str | None) -> list[Volume]:
    if isinstance(image, Volume):
        return [image]
    if isinstance(image, (str, Path)):
        return [read(image, series=series)]
    volumes = list(image)
    if not volumes or not all(isinstance(v, Volume) for v in volumes):
        raise ConfigError("segment: image must be a Volume, a list of Volumes (one per channel) or a path")
    return volumes


def run_batch(
    input: str | Path,
    model: ModelRef | Sequence[ModelRef],
    outdir: str | Path,
    *,
    series: str | None = None,
    recipe: str | Path | None = None,
    pseudonymise: bool = False,
    **options: Any,
) -> SessionResult:
    """Run ``medseg batch`` from Python: every selected case of ``input`` into ``outdir``, resumable.

    ``model`` is one model (folder or shipped name) or a list (an ensemble); ``recipe`` a TOML
    file with a ``[select]`` table. Returns the summary (``.summary.exit_code`` 0 all done, 3 some
    failed) and the report paths.
    """
    from medseg.batch.engine import check_model_folders
    from medseg.batch.inference_engine import PredictEngine
    from medseg.batch.runner import BatchOptions
    from medseg.batch.session import run_session
    from medseg.cases import load_rules
    from medseg.inference import OutputOptions, PostprocessOptions, PredictOptions
    from medseg.pretrained import resolve_model_path

    names = [model] if isinstance(model, (str, Path)) else list(model)
    folders = tuple(resolve_model_path(m) for m in names)
    batch, predict, output, post = _split(options, BatchOptions, PredictOptions, OutputOptions, PostprocessOptions)
    if "outdir" in batch:
        raise ConfigError("run_batch: give the output folder as the third argument, not as outdir=")
    output["postprocess"] = _build(PostprocessOptions, post, "run_batch")
    check_model_folders(list(folders))
    engine = PredictEngine(
        folders, _build(PredictOptions, predict, "run_batch"), _build(OutputOptions, output, "run_batch")
    )
    batch_options = _build(BatchOptions, {"outdir": Path(outdir), "progress": False, **batch}, "run_batch")
    return run_session(
        Path(input),
        lambda: engine,
        batch_options,
        load_rules(Path(recipe) if recipe else None),
        pseudonymise,
        None,
        series,
    )


def _split(options: Mapping[str, Any], *classes: type) -> list[dict[str, Any]]:
    """Partition keyword options by the dataclass whose field they name (first class wins);
    ConfigError naming the closest valid option for an unknown one."""
    parts: list[dict[str, Any]] = [{} for _ in classes]
    valid = [{f.name for f in dataclasses.fields(c)} for c in classes]
    for key, value in options.items():
        for part, names in zip(parts, valid):
            if key in names:
                part[key] = value
                break
        else:
            every = sorted(set().union(*valid) - {"outdir", "postprocess", "extra"})
            raise ConfigError(f"unknown option {key!r}; {did_you_mean(key, every)}valid options: {', '.join(every)}")
    return parts


def _build(cls: type[T], values: Mapping[str, Any], where: str) -> T:
    """``cls(**values)`` with an unknown name reported as a ConfigError (its own checks run as usual)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(
            f"{where}: unknown option {unknown[0]!r}; {did_you_mean(unknown[0], names)}"
            f"valid options: {', '.join(sorted(names))}"
        )
    return cls(**values)
