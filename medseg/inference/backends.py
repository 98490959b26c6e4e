"""Network runtimes behind one call signature: float32 tiles in, float32 logits out.

* ``torch``: the model folder's PyTorch network (autocast bf16 on CPUs with native bf16, fp16 AMP
  on CUDA).
* ``onnxruntime`` / ``openvino``: an ONNX file written by :mod:`medseg.inference.export`
  (optional extra ``medseg[fast]``). OpenVINO honours ``bf16`` on CPUs that support it.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from medseg.choices import BACKENDS
from medseg.errors import ConfigError
from medseg.model.runtime import Runtime

log = logging.getLogger(__name__)


class Backend(Protocol):
    """Runs the network on a batch of tiles.

    ``__call__`` needs float32 tiles (B, C, *patch) on any device and promises float32 logits
    (B, K, *patch) (on the backend's device for torch, on the CPU otherwise).
    """

    name: str

    def __call__(self, tiles: torch.Tensor) -> torch.Tensor: ...

    def describe(self) -> dict: ...


def require_backend_package(name: str) -> None:
    """Raise a ConfigError naming the install command when a backend's package is missing."""
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name not in ("torch", "auto") and importlib.util.find_spec(name) is None:
        raise ConfigError(f"--backend {name} needs the {name} package; pip install 'medseg[fast]'")


def _first_output(out: torch.Tensor | list | tuple) -> torch.Tensor:
    """Full-resolution logits from a network that may return deep-supervision outputs."""
    if isinstance(out, (list, tuple)):
        return out[0]
    return out


class TorchBackend:
    """A PyTorch network run in eval mode on the runtime's device, under inference mode and autocast.

    (A channels-last memory layout was measured and left out: on this project's CPU benchmark it
    made the nnU-Net-style U-Net slower in bf16 and no faster in fp32.)
    """

    name = "torch"

    def __init__(self, network: torch.nn.Module, runtime: Runtime) -> None:
        self.runtime = runtime
        self.network = network.eval().to(runtime.device)

    def __call__(self, tiles: torch.Tensor) -> torch.Tensor:
        if self.network.training:  # an in-memory network that is being trained between calls
            self.network.eval()
        x = tiles.to(self.runtime.device, dtype=torch.float32, non_blocking=True)
        with torch.inference_mode(), self.runtime.autocast():
            out = _first_output(self.network(x))
        return out.float().contiguous()

    def describe(self) -> dict:
        return {"backend": self.name, **self.runtime.describe()}


class OnnxRuntimeBackend:
    """An ONNX model run by ONNX Runtime (CUDA provider on a GPU when installed, else CPU; fp32)."""

    name = "onnxruntime"

    def __init__(self, onnx_path: Path, runtime: Runtime) -> None:
        require_backend_package(self.name)
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = runtime.threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = ["CPUExecutionProvider"]
        if runtime.device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(onnx_path), options, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        self.providers = self.session.get_providers()
        self.threads = runtime.threads

    def __call__(self, tiles: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(tiles.detach().cpu().numpy(), dtype=np.float32)
        out = self.session.run(None, {self.input_name: x})[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32))

    def describe(self) -> dict:
        import onnxruntime as ort

        return {
            "backend": self.name,
            "version": ort.__version__,
            "providers": self.providers,
            "precision": "fp32",
            "threads": self.threads,
        }


class OpenVinoBackend:
    """An ONNX model compiled by OpenVINO for the CPU, in bf16 when the runtime precision is bf16."""

    name = "openvino"

    def __init__(self, onnx_path: Path, runtime: Runtime) -> None:
        require_backend_package(self.name)
        import openvino as ov

        if runtime.device.type == "cuda":
            log.info("the openvino backend runs on the CPU; the GPU is not used")
        self.precision = "bf16" if runtime.precision == "bf16" else "fp32"
        config = {
            "INFERENCE_PRECISION_HINT": "bf16" if self.precision == "bf16" else "f32",
            "INFERENCE_NUM_THREADS": runtime.threads,
            "PERFORMANCE_HINT": "LATENCY",
        }
        self.compiled = ov.Core().compile_model(str(onnx_path), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.output = self.compiled.output(0)
        self.threads = runtime.threads

    def __call__(self, tiles: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(tiles.detach().cpu().numpy(), dtype=np.float32)
        out = self.request.infer({0: x})[self.output]
        return torch.from_numpy(np.array(out, dtype=np.float32))

    def describe(self) -> dict:
        import openvino as ov

        return {
            "backend": self.name,
            "version": ov.__version__,
            "device": "CPU",
            "precision": self.precision,
            "threads": self.threads,
        }
