"""Where and how the network runs: device, CPU threads, numeric precision.

Everything here is decided once, before any case is predicted, and recorded in the run manifest.
"""

from __future__ import annotations

import logging
import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import ContextManager

import torch

from medseg.errors import ConfigError

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Runtime:
    """The resolved execution settings: a torch device, a precision name and the CPU thread count."""

    device: torch.device
    precision: str  # "fp32" | "bf16" | "fp16"
    threads: int

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The autocast dtype for this precision (None for fp32)."""
        return _DTYPES[self.precision]

    def autocast(self) -> ContextManager:
        """An autocast context for the network forward (a no-op for fp32)."""
        dtype = self.autocast_dtype
        if dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def describe(self) -> dict:
        """A JSON-friendly summary for the run manifest."""
        info = {"device": str(self.device), "precision": self.precision, "threads": self.threads}
        if self.device.type == "cuda":
            info["gpu"] = torch.cuda.get_device_name(self.device)
        else:
            info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        return info


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when a GPU is visible, else CPU; ``cuda`` without a GPU is a ConfigError."""
    if name not in DEVICES:
        raise ConfigError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked but no CUDA GPU is visible to torch; use --device cpu")
    return torch.device(name)


def cpu_supports_bf16() -> bool:
    """True when this CPU has native bf16 arithmetic (AVX512-BF16 or AMX) usable by oneDNN."""
    try:
        native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        return bool(native and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # older torch or a build without oneDNN
        return False


def resolve_precision(requested: str, device: torch.device) -> str:
    """Pick the precision: ``auto`` = bf16 on CPUs with native bf16, fp16 (AMP) on CUDA, else fp32.

    An explicit ``bf16`` on a CPU without native bf16 falls back to fp32 with a log message
    (emulated bf16 is slower than fp32); ``fp16`` on CPU is refused.
    """
    if requested not in PRECISIONS:
        raise ConfigError(f"unknown precision {requested!r}; choose one of {', '.join(PRECISIONS)}")
    if device.type == "cuda":
        if requested == "bf16" and not torch.cuda.is_bf16_supported():
            log.info("this GPU has no bf16; using fp16 autocast")
            return "fp16"
        return "fp16" if requested == "auto" else requested
    if requested == "fp16":
        raise ConfigError("fp16 is for CUDA only; use --precision bf16 or fp32 on CPU")
    if requested in ("auto", "bf16"):
        if cpu_supports_bf16():
            return "bf16"
        if requested == "bf16":
            log.info("this CPU has no native bf16 (AVX512-BF16/AMX); using fp32")
        return "fp32"
    return "fp32"


def available_cpus() -> int:
    """CPUs this process may use: the affinity mask, capped by a cgroup CPU quota when one is set."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        count = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    return max(1, min(count, quota)) if quota else max(1, count)


def _cgroup_cpu_quota() -> int | None:
    """The cgroup v2 ``cpu.max`` quota rounded up to whole CPUs, or None when unlimited/unknown."""
    path = Path("/sys/fs/cgroup/cpu.max")
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, -(-int(quota) // int(period)))


def configure_runtime(device: str = "auto", precision: str = "auto", threads: int | None = None) -> Runtime:
    """Resolve device and precision and set torch's CPU threads (all available CPUs by default)."""
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be at least 1, got {threads}")
    count = threads or available_cpus()
    torch.set_num_threads(count)
    return Runtime(device=dev, precision=prec, threads=count)
