"""Load models for prediction: trained model folders (``model.json``) or ONNX exports
(``medseg_export.json``), each paired with the backend that runs it."""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from medseg.errors import ConfigError, InputError, MedsegError
from medseg.inference.backends import (
    Backend,
    OnnxRuntimeBackend,
    OpenVinoBackend,
    TorchBackend,
    require_backend_package,
)
from medseg.inference.sliding import WindowConfig
from medseg.model.folder import ModelSpec
from medseg.model.plan import Plan
from medseg.model.runtime import Runtime

if TYPE_CHECKING:
    from medseg.inference.export import ExportStore

log = logging.getLogger(__name__)

MODEL_JSON = "model.json"
EXPORT_JSON = "medseg_export.json"


@dataclass
class LoadedModel:
    """A model ready to run: its name (the folder), its spec, its plan, the backend that runs it and
    why that backend (``backend_reason``, e.g. ``"auto: fastest installed on this CPU"``)."""

    name: str
    spec: ModelSpec
    plan: Plan
    backend: Backend
    backend_reason: str = ""

    @property
    def patch_size(self) -> tuple[int, ...]:
        """The tile size of the sliding window (the plan's patch size for this model's dims)."""
        return tuple(self.plan.config(self.spec.spatial_dims).patch_size)

    def window(self, overlap: float, tiles_per_batch: int, tta: bool) -> WindowConfig:
        """The sliding-window configuration for this model."""
        axes = tuple(range(self.spec.spatial_dims)) if tta else ()
        return WindowConfig(self.patch_size, overlap=overlap, tiles_per_batch=tiles_per_batch, mirror_axes=axes)


def folder_kind(path: Path) -> str:
    """``"model"`` for a trained model folder, ``"export"`` for an ONNX export; InputError otherwise."""
    if not path.exists():
        raise InputError(f"model folder {path} does not exist; check the -m path")
    if (path / MODEL_JSON).is_file():
        return "model"
    if (path / EXPORT_JSON).is_file():
        return "export"
    raise InputError(
        f"{path} is not a medseg model folder (no {MODEL_JSON} or {EXPORT_JSON}); pass a folder "
        "written by 'medseg train' or 'medseg export'"
    )


def read_spec(path: str | Path) -> ModelSpec:
    """The :class:`ModelSpec` of a trained model folder or an ONNX export, from its JSON files only
    (no network is built). Raises InputError/ConfigError for a missing or malformed folder."""
    path = Path(path)
    if folder_kind(path) == "export":
        from medseg.inference.export import load_export

        return load_export(path)[1]
    from medseg.model.folder import read_model_description

    return read_model_description(path)[0]


def resolve_backend(name: str, runtime: Runtime, kind: str = "model") -> str:
    """The backend ``auto`` stands for: OpenVINO on the CPU when installed (measured fastest on
    CPU, see docs/benchmarks.md), else PyTorch (ONNX Runtime for an export folder)."""
    return choose_backend(name, runtime, kind)[0]


def choose_backend(name: str, runtime: Runtime, kind: str = "model") -> tuple[str, str]:
    """``(backend, why)``: the backend :func:`resolve_backend` picks and a few words saying why.
    ConfigError when an asked-for backend's package, or any ONNX runtime for an export, is missing."""
    if name != "auto":
        require_backend_package(name)
        return name, "asked for"
    on_cpu = runtime.device.type == "cpu"
    if on_cpu and importlib.util.find_spec("openvino") is not None:
        return "openvino", "auto: fastest installed on this CPU"
    if kind == "export":
        if importlib.util.find_spec("onnxruntime") is not None:
            return "onnxruntime", "auto: an ONNX export " + ("without OpenVINO" if on_cpu else "on the GPU")
        raise ConfigError("an ONNX export needs openvino or onnxruntime; pip install 'medseg[fast]'")
    if on_cpu:
        return "torch", "auto: OpenVINO is not installed (pip install 'medseg[fast]' for the fastest CPU backend)"
    return "torch", "auto: the GPU runs torch"


def load_model(path: str | Path, backend: str, runtime: Runtime, store: ExportStore) -> LoadedModel:
    """Load one model folder for ``backend`` (``auto`` resolved by :func:`resolve_backend`).

    A trained folder run by an ONNX backend is exported once into ``store`` (an
    :class:`~medseg.inference.export.ExportStore`, a cache keyed by the folder's contents). With
    ``auto``, a model that cannot be exported or compiled runs with PyTorch instead (logged).
    """
    path = Path(path)
    kind = folder_kind(path)
    chosen, why = choose_backend(backend, runtime, kind)
    if kind == "model" and chosen != "torch" and read_spec(path).family == "maskrcnn":
        if backend != "auto":
            raise ConfigError(f"{path} is a Mask R-CNN model, which runs with PyTorch only; use --backend torch")
        chosen, why = "torch", "Mask R-CNN models run with PyTorch only"  # detection models are not exported to ONNX
    if kind == "export":
        if chosen == "torch":
            raise ConfigError(
                f"{path} is an ONNX export; run it with --backend onnxruntime or openvino, or pass the trained model folder"
            )
        from medseg.inference.export import load_export

        plan, spec, exported = load_export(path)
        return LoadedModel(str(path), spec, plan, _onnx_backend(chosen, exported, runtime), why)
    from medseg.model.folder import load_model_folder, read_model_description

    spec, plan = read_model_description(path)
    trained = None
    if chosen != "torch":
        try:
            onnx_path = store.cached(path)  # exported before: no torch network to build
            if onnx_path is None:
                trained = load_model_folder(path, device="cpu")
                onnx_path = store.onnx_for(path, trained)
            return LoadedModel(str(path), spec, plan, _onnx_backend(chosen, onnx_path, runtime), why)
        except MedsegError:  # the model folder itself is unusable (damaged weights...): torch cannot help
            raise
        except Exception as exc:  # only 'auto' falls back; an explicit backend reports its failure
            if backend != "auto":
                raise
            log.warning("%s: the %s backend could not be prepared (%s); using torch", path, chosen, exc)
            why = f"auto: {chosen} could not be prepared (see the warning)"
    trained = trained or load_model_folder(path, device="cpu")
    return LoadedModel(str(path), spec, plan, TorchBackend(trained.network, runtime), why)


def _onnx_backend(name: str, onnx_path: Path, runtime: Runtime) -> Backend:
    if name == "onnxruntime":
        return OnnxRuntimeBackend(onnx_path, runtime)
    return OpenVinoBackend(onnx_path, runtime)


def check_compatible(models: list[LoadedModel]) -> None:
    """An ensemble needs the same labels and input channels in every model (ConfigError otherwise)."""
    first = models[0]
    for other in models[1:]:
        if other.spec.labels != first.spec.labels:
            raise ConfigError(
                f"models {first.name} and {other.name} have different labels ({first.spec.labels} vs "
                f"{other.spec.labels}); an ensemble needs identical labels"
            )
        if other.spec.out_channels != first.spec.out_channels:
            raise ConfigError(
                f"models {first.name} ({first.spec.out_channels} outputs) and {other.name} "
                f"({other.spec.out_channels}) cannot be averaged; ensemble models with the same outputs"
            )
        if other.spec.in_channels != first.spec.in_channels:
            raise ConfigError(
                f"models {first.name} ({first.spec.in_channels} channels) and {other.name} "
                f"({other.spec.in_channels}) take different inputs; ensemble models with the same channels"
            )
