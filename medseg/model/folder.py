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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from medseg.errors import ConfigError, InputError
from medseg.io.atomic import atomic_path, atomic_write_text, ensure_writable_dir, follow_umask
from medseg.io.seg import SegmentCoding
from medseg.model.plan import NetworkConfig, Plan

FORMAT_VERSION = 1
SPEC_FILE, PLAN_FILE, WEIGHTS_FILE = "model.json", "plan.json", "weights.safetensors"
LOG_FILE, CURVES_FILE = "training_log.csv", "curves.png"


@dataclass(frozen=True)
class ModelSpec:
    """What ``model.json`` holds. ``network`` is the NetworkConfig as a dict (patch_size, batch_size,
    features, kernel_sizes, strides); ``postprocessing`` e.g. ``{"keep_largest_component": [1, 2]}``;
    ``metrics`` the validation results; ``versions`` the package versions that trained it.
    ``label_metadata``: optional per foreground label, what it is in DICOM SEG terms
    (:class:`~medseg.io.seg.SegmentCoding`: SNOMED CT category, type, optional modifier); in JSON
    ``{"1": {"category": {"code", "scheme", "meaning"}, "type": {...}, "modifier": {...}}}``,
    written only when set."""

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
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelSpec":
        """Validated spec from JSON data; ConfigError naming what is wrong."""
        if data.get("format_version") != FORMAT_VERSION:
            raise ConfigError(
                f"model format version {data.get('format_version')!r} is not supported; this medseg "
                f"reads version {FORMAT_VERSION} (retrain or use a matching medseg)"
            )
        try:
            fields_ = dict(data)
            fields_["labels"] = {int(k): str(v) for k, v in fields_["labels"].items()}
            return cls(**fields_)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"model.json is malformed ({type(exc).__name__}: {exc})") from None

    def network_config(self) -> NetworkConfig:
        """The NetworkConfig the network was built with."""
        return NetworkConfig(**self.network)


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
        out[label] = value if isinstance(value, SegmentCoding) else SegmentCoding.from_dict(
            value, f"model.json: label_metadata.{label}")
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
    from medseg.networks import build_model

    network = build_model(spec.family, spec.spatial_dims, spec.in_channels, spec.out_channels,
                          spec.network_config(), deep_supervision=False)
    return network.eval()


def inference_copy(trained: nn.Module, spec: ModelSpec) -> nn.Module:
    """Copy the trained weights into a fresh inference network (deep-supervision heads dropped)."""
    network = build_inference_network(spec)
    state = {k: v.detach().to("cpu", torch.float32) if v.is_floating_point() else v.detach().cpu()
             for k, v in trained.state_dict().items()}
    missing, _unused = network.load_state_dict(state, strict=False)
    if missing:
        raise ValueError(f"trained network lacks weights for {missing[:3]}; spec and network disagree")
    return network


def save_model_folder(folder: str | Path, network: nn.Module, spec: ModelSpec, plan: Plan,
                      log_csv: Path | None = None, curves: Path | None = None) -> Path:
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
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{folder / SPEC_FILE} is not valid JSON ({exc})") from None
    return spec, Plan.load(folder / PLAN_FILE)


def load_model_folder(folder: str | Path, device: str | torch.device = "cpu") -> TrainedModel:
    """Load a model folder written by :func:`save_model_folder`: JSON + safetensors, no pickle.

    Needs ``model.json``, ``plan.json`` and ``weights.safetensors`` in ``folder``. Promises the
    network in eval mode on ``device`` with exactly the saved weights.
    """
    from safetensors.torch import load_model

    folder = Path(folder)
    spec, plan = read_model_description(folder)
    network = build_inference_network(spec)
    try:
        load_model(network, str(folder / WEIGHTS_FILE), strict=True)
    except (RuntimeError, OSError, ValueError) as exc:
        raise InputError(f"{folder / WEIGHTS_FILE} does not match model.json ({str(exc).splitlines()[0]})") from None
    return TrainedModel(network.to(device).eval(), plan, spec, folder)
