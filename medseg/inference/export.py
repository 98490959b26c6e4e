"""Export a trained model to ONNX for ONNX Runtime / OpenVINO, with its preprocessing spec.

An export folder holds ``model.onnx`` (input ``image`` (batch, C, *patch), output ``logits``
(batch, K, *patch); the batch axis is dynamic, the spatial axes are the plan's patch size unless
exported with dynamic spatial axes, which then take multiples of the network's total stride), ``plan.json`` and ``medseg_export.json`` (format version,
labels, channels, patch size, slice axis, the preprocessing steps and sliding-window settings,
and the largest difference from the PyTorch network measured at export time). ``medseg
predict -m EXPORT --backend onnxruntime|openvino`` runs it with the same preprocessing and
inverse as the PyTorch model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg.errors import ConfigError, InputError, OutputError
from medseg.inference.loading import EXPORT_JSON
from medseg.io.atomic import atomic_path, atomic_write_text, ensure_writable_dir
from medseg.model.folder import ModelSpec, TrainedModel
from medseg.model.plan import Plan
from medseg.model.runtime import package_versions

log = logging.getLogger(__name__)

EXPORT_FORMAT = "medseg-onnx"
EXPORT_VERSION = 2  # 2: "model" holds the full ModelSpec (model.json)
ONNX_NAME = "model.onnx"
OPSET = 18


class _Logits(torch.nn.Module):
    """Wraps a network so the exported graph returns full-resolution logits only."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out = self.network(image)
        return out[0] if isinstance(out, (list, tuple)) else out


def require_exporter(dynamic_spatial: bool = False) -> None:
    """Raise a ConfigError naming the install command when a package the ONNX export needs is
    missing: ``onnx`` always (torch's exporters write through it), ``onnxscript`` for dynamic
    spatial axes. Both come with the ``fast`` extra."""
    needed = ("onnx", "onnxscript") if dynamic_spatial else ("onnx",)
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        what = " and ".join(missing)
        raise ConfigError(
            f"ONNX export needs the {what} package{'s' if len(missing) > 1 else ''}; "
            "install the fast extra: pip install 'medseg[fast]'"
        )


def _export_graph(network: torch.nn.Module, example: torch.Tensor, path: Path, dynamic_spatial: bool) -> None:
    """torch.onnx.export with a dynamic batch axis (and dynamic spatial axes when asked).

    Fixed spatial axes use the TorchScript exporter (fast, needs only ``onnx``; shapes computed
    in Python are constants there, which is right at a fixed patch size). Dynamic spatial axes
    need the dynamo exporter (``onnxscript`` too), which keeps such shapes symbolic. The packages
    are checked first (:func:`require_exporter`).
    """
    import warnings

    spatial = range(2, example.dim())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not dynamic_spatial:
            axes = {"image": {0: "batch"}, "logits": {0: "batch"}}
            torch.onnx.export(
                network,
                (example,),
                str(path),
                dynamo=False,
                input_names=["image"],
                output_names=["logits"],
                dynamic_axes=axes,
                opset_version=17,
            )
            return
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        dims = {0: torch.export.Dim("batch", min=1, max=1024), **{a: torch.export.Dim.AUTO for a in spatial}}
        program = torch.onnx.export(
            network,
            (example,),
            dynamo=True,
            input_names=["image"],
            output_names=["logits"],
            dynamic_shapes=(dims,),
            opset_version=OPSET,
            verbose=False,
        )
        if program is None:  # the dynamo exporter returns the program it wrote
            raise RuntimeError("torch.onnx.export returned no ONNX program")
        program.save(str(path), external_data=False)


def export_onnx(
    network: torch.nn.Module, plan: Plan, spec: ModelSpec, out_dir: str | Path, dynamic_spatial: bool = False
) -> Path:
    """Write ``model.onnx``, ``plan.json`` and ``medseg_export.json`` into ``out_dir``.

    Needs the network (any device; exported in fp32 on the CPU, eval mode). Promises an ONNX
    model whose output matches the PyTorch network (the max abs difference on a random batch
    is checked with ONNX Runtime when installed and recorded). Returns the ONNX path.
    """
    require_exporter(dynamic_spatial)
    out_dir = Path(out_dir)
    ensure_writable_dir(out_dir)
    network = _Logits(network.float().cpu().eval())
    patch = tuple(plan.config(spec.spatial_dims).patch_size)
    example = torch.randn(1, spec.in_channels, *patch, generator=torch.Generator().manual_seed(0))
    target = out_dir / ONNX_NAME
    with atomic_path(target) as tmp:
        _export_graph(network, example, tmp, dynamic_spatial)
    diff = _max_difference(network, example, target)
    plan.save(out_dir / "plan.json")
    description = export_spec(plan, spec, dynamic_spatial, diff)
    atomic_write_text(out_dir / EXPORT_JSON, json.dumps(description, indent=2) + "\n")
    return target


def _max_difference(network: torch.nn.Module, example: torch.Tensor, onnx_path: Path) -> float | None:
    """Largest |torch - onnxruntime| logit difference on ``example`` (None without onnxruntime)."""
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        expected = network(example).numpy()
    got = session.run(None, {session.get_inputs()[0].name: example.numpy()})[0]
    return float(np.max(np.abs(got - expected)))


def export_spec(plan: Plan, spec: ModelSpec, dynamic_spatial: bool, max_abs_diff: float | None) -> dict[str, Any]:
    """The JSON description of an export: the model spec, tensor layout, preprocessing, windowing."""
    patch = list(plan.config(spec.spatial_dims).patch_size)
    spatial = ["dynamic"] * len(patch) if dynamic_spatial else patch
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "onnx": ONNX_NAME,
        "model": spec.to_dict(),
        "input": {"name": "image", "shape": ["batch", spec.in_channels, *spatial], "dtype": "float32"},
        "output": {"name": "logits", "shape": ["batch", spec.out_channels, *spatial], "dtype": "float32"},
        "patch_size": patch,
        "spatial_multiple_of": list(plan.config(spec.spatial_dims).divisor),
        "slice_axis": plan.slice_axis if spec.spatial_dims == 2 else None,
        "preprocessing": {
            "steps": [
                "reorient to the closest RAS axes (permute/flip only)",
                f"resample to {list(plan.target_spacing)} mm ({plan.image_interpolation}) when the spacing differs",
                "normalise each channel as in plan.normalization",
            ],
            "channels": list(plan.channels),
            "target_spacing": list(plan.target_spacing),
            "normalization": [n.__dict__ for n in plan.normalization],
            "plan": "plan.json",
        },
        "sliding_window": {
            "overlap": 0.5,
            "gaussian_sigma": "patch / 8",
            "mirror_tta_axes": list(range(spec.spatial_dims)),
        },
        "max_abs_diff_vs_torch": max_abs_diff,
        "exported_with": package_versions(),
    }


def load_export(folder: str | Path) -> tuple[Plan, ModelSpec, Path]:
    """Read an export folder: its plan, model spec and ONNX path (InputError/ConfigError if unusable)."""
    folder = Path(folder)
    try:
        spec = json.loads((folder / EXPORT_JSON).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{folder / EXPORT_JSON} cannot be read ({exc}); export the model again") from None
    if spec.get("format") != EXPORT_FORMAT or spec.get("version") != EXPORT_VERSION:
        raise ConfigError(
            f"{folder} holds export format {spec.get('format')!r} v{spec.get('version')}; this medseg reads "
            f"{EXPORT_FORMAT} v{EXPORT_VERSION}; export the model again"
        )
    onnx_path = folder / spec.get("onnx", ONNX_NAME)
    if not onnx_path.is_file():
        raise InputError(f"{onnx_path} is missing; export the model again with 'medseg export'")
    return Plan.load(folder / "plan.json"), ModelSpec.from_dict(spec["model"]), onnx_path


def export_model_folder(model_folder: str | Path, out_dir: str | Path, dynamic_spatial: bool = False) -> Path:
    """Export a trained model folder (``medseg export``). Returns the ONNX path."""
    from medseg.inference.loading import folder_kind
    from medseg.model.folder import load_model_folder

    model_folder = Path(model_folder)
    if folder_kind(model_folder) != "model":
        raise InputError(f"{model_folder} is already an export; pass the trained model folder")
    require_exporter(dynamic_spatial)  # before the model is loaded and the output folder made
    trained = load_model_folder(model_folder, device="cpu")
    return export_onnx(trained.network, trained.plan, trained.spec, out_dir, dynamic_spatial)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/medseg/onnx`` (``~/.cache/medseg/onnx`` when unset)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "medseg" / "onnx"


def model_fingerprint(folder: Path) -> str:
    """A key for a trained folder's export: SHA-256 of model.json, plan.json, the weights and the
    torch version (the exporter), shortened to 20 hex digits."""
    digest = hashlib.sha256(torch.__version__.encode())
    for name in ("model.json", "plan.json", "weights.safetensors"):
        with open(folder / name, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:20]


class ExportStore:
    """ONNX exports of trained folders made for the ONNX backends, kept in a cache folder keyed by
    :func:`model_fingerprint` (exported once per machine and model), or in a temporary folder
    removed by :meth:`close` when the cache cannot be written."""

    def __init__(self, cache_dir: str | Path | None = None) -> None:
        self.root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self._temporary: tempfile.TemporaryDirectory | None = None

    def cached(self, folder: Path) -> Path | None:
        """The ONNX file exported earlier for ``folder``'s current contents, or None."""
        return self._find(model_fingerprint(Path(folder)))

    def _find(self, key: str) -> Path | None:
        roots = [self.root] + ([Path(self._temporary.name)] if self._temporary else [])
        for root in roots:
            if (root / key / EXPORT_JSON).is_file() and (root / key / ONNX_NAME).is_file():
                return root / key / ONNX_NAME
        return None

    def onnx_for(self, folder: Path, trained: TrainedModel) -> Path:
        """The ONNX file for ``folder``'s model, exported now when the cache lacks it."""
        key = model_fingerprint(Path(folder))
        found = self._find(key)
        if found is not None:
            return found
        try:
            ensure_writable_dir(self.root)
            root = self.root
        except OutputError as exc:
            log.info("ONNX cache %s is not writable (%s); exporting into a temporary folder", self.root, exc)
            root = self._temporary_root()
        log.info("exporting %s to ONNX once (cached in %s)", folder, root)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
        try:
            export_onnx(trained.network, trained.plan, trained.spec, staging)
            try:
                os.replace(staging, root / key)  # publish atomically; a concurrent export may win
            except OSError:
                shutil.rmtree(staging, ignore_errors=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return root / key / ONNX_NAME

    def _temporary_root(self) -> Path:
        if self._temporary is None:
            self._temporary = tempfile.TemporaryDirectory(prefix="medseg-onnx-")
        return Path(self._temporary.name)

    def close(self) -> None:
        """Remove the temporary folder, if one was made."""
        if self._temporary is not None:
            self._temporary.cleanup()
            self._temporary = None
