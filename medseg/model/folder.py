"""A trained model is one self-contained folder; prediction needs nothing else.

:class:`ModelSpec` (``model.json``) is the one description of a trained model: training writes
it, inference, export and the batch runner read it.

Layout::

    model.json            ModelSpec: format version, family, spatial dims, channels, network config,
                          label names (+ optional SNOMED CT codes per label), post-processing
                          decision, recipe, validation metrics, versions
    plan.json             the Plan (preprocessing + network shapes), readable and editable
    weights.safetensors   the inference network's weights (no deep-supervision heads)
    training_log.csv      per-epoch log of the run
    curves.png            loss / Dice curves

Loading reads JSON and safetensors only: nothing is ever unpickled.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medseg.errors import ConfigError, InputError, did_you_mean
from medseg.io.atomic import atomic_path, atomic_write_text, ensure_writable_dir, follow_umask
from medseg.io.seg import SegmentCoding
from medseg.model.plan import NetworkConfig, Plan

FORMAT_VERSION = 1
SPEC_FILE, PLAN_FILE, WEIGHTS_FILE = "model.json", "plan.json", "weights.safetensors"
LOG_FILE, CURVES_FILE = "training_log.csv", "curves.png"


@dataclass(frozen=True)
class ModelSpec:
    """What ``model.json`` holds. ``network`` is the NetworkConfig as a dict (patch_size, batch_size,
    features, kernel_sizes, strides; for the ``maskrcnn`` family the DetectionConfig of
    :mod:`medseg.networks.maskrcnn`); ``postprocessing`` e.g. ``{"keep_largest_component": [1, 2]}``;
    ``metrics`` the validation results; ``versions`` the package versions that trained it.
    ``label_metadata``: optional per foreground label, what it is in DICOM SEG terms
    (:class:`~medseg.io.seg.SegmentCoding`: SNOMED CT category, type, optional modifier); in JSON
    ``{"1": {"category": {"code", "scheme", "meaning"}, "type": {...}, "modifier": {...}}}``,
    written only when set. ``instances``: empty for semantic models; for instance models how
    objects are made (``{"method": "watershed", ...}``: U-Net heads + seeded watershed,
    ``{"method": "maskrcnn", ...}``: detections), read by :mod:`medseg.inference.instance_predict`."""

    family: str
    spatial_dims: int
    in_channels: int
    out_channels: int
    labels: dict[int, str]
    network: dict[str, Any]
    postprocessing: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    label_metadata: dict[int, SegmentCoding] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    instances: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", {int(k): str(v) for k, v in sorted(self.labels.items())})
        if self.spatial_dims not in (2, 3):
            raise ConfigError(f"model.json: spatial_dims must be 2 or 3, got {self.spatial_dims!r}")
        if not self.labels or self.out_channels < max(self.labels) + 1:
            raise ConfigError(
                f"model.json: {self.out_channels} network outputs cannot hold the labels {sorted(self.labels)}"
            )
        object.__setattr__(self, "label_metadata", _label_metadata(self.label_metadata, self.foreground))

    @property
    def instance_method(self) -> str | None:
        """``"watershed"`` or ``"maskrcnn"`` for instance models, None for semantic ones."""
        return self.instances.get("method") if self.instances else None

    @property
    def foreground(self) -> dict[int, str]:
        """Label value -> name for every class but background (0)."""
        return {k: v for k, v in self.labels.items() if k != 0}

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["labels"] = {str(k): v for k, v in self.labels.items()}
        data["label_metadata"] = {str(k): v.to_dict() for k, v in self.label_metadata.items()}
        if not data["label_metadata"]:
            del data["label_metadata"]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        """Validated spec from JSON data, field by field: a missing or unknown key, or a value of the
        wrong type (``"spatial_dims": "3"``, labels as a list), is a ConfigError naming the field,
        what it must be, and what it holds."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"model.json must hold a JSON object, not {_json_type(data)}; {_FIX}")
        if data.get("format_version") != FORMAT_VERSION:
            raise ConfigError(
                f"model format version {data.get('format_version')!r} is not supported; this medseg "
                f"reads version {FORMAT_VERSION} (retrain or use a matching medseg)"
            )
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ConfigError(f"model.json: unknown key {unknown[0]!r}; {did_you_mean(unknown[0], names)}{_FIX}")
        values = {key: _field(key, data) for key in names if key in data or key in _REQUIRED}
        spec = cls(**values)
        if spec.family == "maskrcnn":  # its network is a DetectionConfig (medseg.networks.maskrcnn)
            from medseg.networks.maskrcnn import DetectionConfig

            try:
                DetectionConfig.from_dict(spec.network)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"model.json: network is malformed ({exc}); {_FIX}") from None
        else:
            spec.network_config()  # a malformed network is refused here, not when the network is built
        return spec

    def network_config(self) -> NetworkConfig:
        """The NetworkConfig the network was built with (ConfigError when ``network`` is malformed)."""
        try:
            return NetworkConfig(**self.network)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"model.json: network is malformed ({exc}); {_FIX}") from None


_FIX = "fix model.json or copy the model folder again"
_REQUIRED = ("family", "spatial_dims", "in_channels", "out_channels", "labels", "network")
_COUNTS = ("spatial_dims", "in_channels", "out_channels", "format_version")
_OBJECTS = ("network", "postprocessing", "recipe", "versions", "metrics")


def _json_type(value: Any) -> str:
    """``a string ("3")``, ``a list``...: what a JSON value is, for a message."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, str):
        return f"a string ({json.dumps(value)[:40]})"
    kinds = {int: "a whole number", float: "a number", list: "a list", dict: "an object"}
    return next((kinds[t] for t in kinds if isinstance(value, t)), type(value).__name__)


def _field(key: str, data: Mapping[str, Any]) -> Any:
    """The value of ``key`` in model.json data, checked for its JSON type (ConfigError otherwise)."""
    if key not in data:
        raise ConfigError(f"model.json: {key!r} is missing; {_FIX}")
    value = data[key]
    if key in _COUNTS and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ConfigError(f"model.json: {key} must be a positive whole number, got {_json_type(value)}; {_FIX}")
    if key == "family" and not isinstance(value, str):
        raise ConfigError(f'model.json: family must be a string (e.g. "unet"), got {_json_type(value)}; {_FIX}')
    if key in _OBJECTS and not isinstance(value, dict):
        raise ConfigError(f"model.json: {key} must be an object, got {_json_type(value)}; {_FIX}")
    if key == "labels":
        return _labels(value)
    if key == "postprocessing":
        return _postprocessing(value)
    return value


def _labels(value: Any) -> dict[int, str]:
    """``{"0": "background", "1": "liver"}`` -> ``{0: "background", 1: "liver"}`` (ConfigError otherwise)."""
    shape = 'an object of label values and names, e.g. {"0": "background", "1": "liver"}'
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"model.json: labels must be {shape}, got {_json_type(value)}; {_FIX}")
    labels = {}
    for key, name in value.items():
        if not str(key).strip().isdigit() or not isinstance(name, str):
            raise ConfigError(
                f"model.json: labels must be {shape}, found {json.dumps(key)}: {_json_type(name)}; {_FIX}"
            )
        labels[int(key)] = name
    return labels


def _postprocessing(value: dict[str, Any]) -> dict[str, Any]:
    """The post-processing decision, its ``keep_largest_component`` a list of label values."""
    classes = value.get("keep_largest_component", [])
    if not isinstance(classes, list) or not all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
        raise ConfigError(
            f"model.json: postprocessing.keep_largest_component must be a list of label values, "
            f"got {_json_type(classes)}; {_FIX}"
        )
    return value


def _label_metadata(metadata: object, foreground: Mapping[int, str]) -> dict[int, SegmentCoding]:
    """``label_metadata`` validated: keys are foreground label values, values SegmentCodings (or
    their JSON form). ConfigError naming the label and what is wrong."""
    if not isinstance(metadata, Mapping):
        raise ConfigError(f"model.json: label_metadata must be an object keyed by label value, got {metadata!r}")
    out: dict[int, SegmentCoding] = {}
    for key, value in metadata.items():
        try:
            label = int(key)
        except (TypeError, ValueError):
            raise ConfigError(f"model.json: label_metadata key {key!r} is not a label value") from None
        if label not in foreground:
            raise ConfigError(
                f"model.json: label_metadata names label {label}, which is not a foreground label "
                f"(labels {sorted(foreground)})"
            )
        out[label] = (
            value
            if isinstance(value, SegmentCoding)
            else SegmentCoding.from_dict(value, f"model.json: label_metadata.{label}")
        )
    return dict(sorted(out.items()))


@dataclass(frozen=True)
class TrainedModel:
    """A loaded model folder: ``network`` (eval mode, on the requested device), ``plan``, ``spec``."""

    network: nn.Module
    plan: Plan
    spec: ModelSpec
    folder: Path


def build_inference_network(spec: ModelSpec) -> nn.Module:
    """The spec's network without deep-supervision heads, in eval mode (random weights).

    This is the one hook from a model description to the network registry
    (:func:`medseg.networks.build_model`).
    """
    if spec.family == "maskrcnn":
        from medseg.networks.maskrcnn import DetectionConfig, build_maskrcnn

        return build_maskrcnn(spec.in_channels, DetectionConfig.from_dict(spec.network)).eval()
    from medseg.networks import build_model

    network = build_model(
        spec.family,
        spec.spatial_dims,
        spec.in_channels,
        spec.out_channels,
        spec.network_config(),
        deep_supervision=False,
    )
    return network.eval()


def inference_copy(trained: nn.Module, spec: ModelSpec) -> nn.Module:
    """Copy the trained weights into a fresh inference network (deep-supervision heads dropped)."""
    network = build_inference_network(spec)
    state = {
        k: v.detach().to("cpu", torch.float32) if v.is_floating_point() else v.detach().cpu()
        for k, v in trained.state_dict().items()
    }
    missing, _unused = network.load_state_dict(state, strict=False)
    if missing:
        raise ValueError(f"trained network lacks weights for {missing[:3]}; spec and network disagree")
    return network


def save_model_folder(
    folder: str | Path,
    network: nn.Module,
    spec: ModelSpec,
    plan: Plan,
    log_csv: Path | None = None,
    curves: Path | None = None,
) -> Path:
    """Write a self-contained model folder (each file atomically); returns the folder.

    ``network`` may carry deep-supervision heads; only the inference network's weights are saved.
    """
    from safetensors.torch import save_model

    folder = Path(folder)
    ensure_writable_dir(folder)
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        save_model(inference_copy(network, spec), str(tmp), metadata={"format": "medseg", "family": spec.family})
        follow_umask(tmp)  # safetensors replaces the file with a private (0600) one
    plan.save(folder / PLAN_FILE)
    for source, name in ((log_csv, LOG_FILE), (curves, CURVES_FILE)):
        if source is not None and Path(source).is_file() and Path(source).resolve() != (folder / name).resolve():
            with atomic_path(folder / name) as tmp:
                shutil.copyfile(source, tmp)
    atomic_write_text(folder / SPEC_FILE, json.dumps(spec.to_dict(), indent=2) + "\n")
    return folder


def read_model_description(folder: str | Path) -> tuple[ModelSpec, Plan]:
    """The ``(spec, plan)`` of a model folder, read from its JSON files only (no network is built).

    Needs ``model.json``, ``plan.json`` and ``weights.safetensors`` in ``folder`` (InputError
    naming the missing one otherwise; ConfigError for invalid JSON).
    """
    folder = Path(folder)
    for name in (SPEC_FILE, PLAN_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise InputError(f"{folder} is not a medseg model folder: {name} is missing")
    try:
        spec = ModelSpec.from_dict(json.loads((folder / SPEC_FILE).read_text(encoding="utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{folder / SPEC_FILE} is not valid JSON ({exc}); {_FIX}") from None
    except ConfigError as exc:
        raise ConfigError(f"{folder}: {exc}") from None
    return spec, Plan.load(folder / PLAN_FILE)


def load_model_folder(folder: str | Path, device: str | torch.device = "cpu") -> TrainedModel:
    """Load a model folder written by :func:`save_model_folder`: JSON + safetensors, no pickle.

    Needs ``model.json``, ``plan.json`` and ``weights.safetensors`` in ``folder``. Promises the
    network in eval mode on ``device`` with exactly the saved weights.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    folder = Path(folder)
    spec, plan = read_model_description(folder)
    network = build_inference_network(spec)
    try:
        load_model(network, str(folder / WEIGHTS_FILE), strict=True)
    except SafetensorError as exc:  # damaged: truncated, not safetensors, bad header
        raise InputError(
            f"{folder / WEIGHTS_FILE} is damaged or incomplete ({_first_line(exc)}); copy the model folder again"
        ) from None
    except (RuntimeError, OSError, ValueError) as exc:
        raise InputError(f"{folder / WEIGHTS_FILE} does not match model.json ({_first_line(exc)})") from None
    return TrainedModel(network.to(device).eval(), plan, spec, folder)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
