"""Load models for prediction: trained model folders (``model.json``) or ONNX exports
(``medseg_export.json``), each paired with the backend that runs it."""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from medseg.errors import ConfigError, InputError
from medseg.inference.backends import Backend, OnnxRuntimeBackend, OpenVinoBackend, TorchBackend, require_backend_package
from medseg.inference.runtime import Runtime
from medseg.inference.sliding import WindowConfig
from medseg.training.plan import Plan

log = logging.getLogger(__name__)

MODEL_JSON = "model.json"
EXPORT_JSON = "medseg_export.json"


@dataclass(frozen=True)
class ModelInfo:
    """What prediction needs to know about a model besides its plan and weights."""

    name: str
    family: str
    spatial_dims: int
    in_channels: int
    out_channels: int
    labels: dict[int, str]
    postprocessing: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", {int(k): str(v) for k, v in sorted(self.labels.items())})
        if self.spatial_dims not in (2, 3):
            raise ConfigError(f"model {self.name}: spatial_dims must be 2 or 3, got {self.spatial_dims}")
        if self.out_channels < max(self.labels) + 1:
            raise ConfigError(
                f"model {self.name} has {self.out_channels} outputs but labels up to {max(self.labels)}"
            )

    @classmethod
    def from_spec(cls, spec: Any, name: str) -> "ModelInfo":
        """From a trainer ``ModelSpec`` (model.json)."""
        return cls(name=name, family=spec.family, spatial_dims=int(spec.spatial_dims),
                   in_channels=int(spec.in_channels), out_channels=int(spec.out_channels),
                   labels=dict(spec.labels), postprocessing=dict(spec.postprocessing or {}),
                   extra={"metrics": getattr(spec, "metrics", {}), "versions": getattr(spec, "versions", {})})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (string label keys)."""
        return {"name": self.name, "family": self.family, "spatial_dims": self.spatial_dims,
                "in_channels": self.in_channels, "out_channels": self.out_channels,
                "labels": {str(k): v for k, v in self.labels.items()},
                "postprocessing": self.postprocessing}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelInfo":
        """Inverse of :meth:`to_dict`."""
        fields = dict(data)
        fields["labels"] = {int(k): v for k, v in fields["labels"].items()}
        return cls(**{k: v for k, v in fields.items() if k in cls.__dataclass_fields__})


@dataclass
class LoadedModel:
    """A model ready to run: its info, its plan and the backend that runs its network."""

    info: ModelInfo
    plan: Plan
    backend: Backend

    @property
    def patch_size(self) -> tuple[int, ...]:
        """The tile size of the sliding window (the plan's patch size for this model's dims)."""
        return tuple(self.plan.config(self.info.spatial_dims).patch_size)

    def window(self, overlap: float, tiles_per_batch: int, tta: bool) -> WindowConfig:
        """The sliding-window configuration for this model."""
        axes = tuple(range(self.info.spatial_dims)) if tta else ()
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


def resolve_backend(name: str, runtime: Runtime, kind: str = "model") -> str:
    """The backend ``auto`` stands for: OpenVINO on the CPU when installed (measured fastest on
    CPU, see docs/benchmarks.md), else PyTorch (ONNX Runtime for an export folder)."""
    if name != "auto":
        require_backend_package(name)
        return name
    if runtime.device.type == "cpu" and importlib.util.find_spec("openvino") is not None:
        return "openvino"
    if kind == "export":
        if importlib.util.find_spec("onnxruntime") is not None:
            return "onnxruntime"
        raise ConfigError("an ONNX export needs openvino or onnxruntime; pip install 'medseg[fast]'")
    return "torch"


def load_model(path: str | Path, backend: str, runtime: Runtime, store: Any) -> LoadedModel:
    """Load one model folder for ``backend`` (``auto`` resolved by :func:`resolve_backend`).

    A trained folder run by an ONNX backend is exported once into ``store`` (an
    :class:`~medseg.inference.export.ExportStore`, a cache keyed by the folder's contents). With
    ``auto``, a model that cannot be exported or compiled runs with PyTorch instead (logged).
    """
    path = Path(path)
    kind = folder_kind(path)
    chosen = resolve_backend(backend, runtime, kind)
    if kind == "export":
        if chosen == "torch":
            raise ConfigError(
                f"{path} is an ONNX export; run it with --backend onnxruntime or openvino, or pass the trained model folder"
            )
        from medseg.inference.export import load_export

        plan, info, onnx_path = load_export(path)
        return LoadedModel(info, plan, _onnx_backend(chosen, onnx_path, runtime))
    from medseg.training.model_folder import load_model_folder, read_model_description

    spec, plan = read_model_description(path)
    info = ModelInfo.from_spec(spec, str(path))
    trained = None
    if chosen != "torch":
        try:
            onnx_path = store.cached(path)  # exported before: no torch network to build
            if onnx_path is None:
                trained = load_model_folder(path, device="cpu")
                onnx_path = store.onnx_for(path, trained, info)
            return LoadedModel(info, plan, _onnx_backend(chosen, onnx_path, runtime))
        except Exception as exc:  # only 'auto' falls back; an explicit backend reports its failure
            if backend != "auto":
                raise
            log.warning("%s: the %s backend could not be prepared (%s); using torch", path, chosen, exc)
    trained = trained or load_model_folder(path, device="cpu")
    return LoadedModel(info, plan, TorchBackend(trained.network, runtime))


def _onnx_backend(name: str, onnx_path: Path, runtime: Runtime) -> Backend:
    if name == "onnxruntime":
        return OnnxRuntimeBackend(onnx_path, runtime)
    return OpenVinoBackend(onnx_path, runtime)


def check_compatible(models: list[LoadedModel]) -> None:
    """An ensemble needs the same labels and input channels in every model (ConfigError otherwise)."""
    first = models[0].info
    for model in models[1:]:
        other = model.info
        if other.labels != first.labels:
            raise ConfigError(
                f"models {first.name} and {other.name} have different labels ({first.labels} vs "
                f"{other.labels}); an ensemble needs identical labels"
            )
        if other.out_channels != first.out_channels:
            raise ConfigError(
                f"models {first.name} ({first.out_channels} outputs) and {other.name} "
                f"({other.out_channels}) cannot be averaged; ensemble models with the same outputs"
            )
        if other.in_channels != first.in_channels:
            raise ConfigError(
                f"models {first.name} ({first.in_channels} channels) and {other.name} "
                f"({other.in_channels}) take different inputs; ensemble models with the same channels"
            )
