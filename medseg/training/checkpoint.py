"""Training checkpoints: everything needed to continue a run bit for bit after a kill.

A checkpoint holds the network, optimiser, LR-schedule and grad-scaler states, the RNG states
(Python, NumPy, torch CPU and CUDA) and the progress counters. It is written atomically with
``torch.save`` of tensors and plain Python values only, and read back with
``torch.load(weights_only=True)``, so loading never unpickles arbitrary objects.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg.errors import InputError
from medseg.io.atomic import atomic_path

LAST, BEST = "checkpoint_last.pt", "checkpoint_best.pt"


@dataclass
class Progress:
    """Counters that say where a run is: epochs and iterations done, training seconds spent,
    the best validation score so far and the epoch it was reached."""

    epoch: int = 0
    iteration: int = 0
    elapsed_seconds: float = 0.0
    best_score: float = -1.0
    best_epoch: int = -1
    history: list[dict[str, float]] = field(default_factory=list)


def rng_state() -> dict[str, Any]:
    """All global RNG states as tensors and plain values (weights_only-loadable)."""
    np_state = np.random.get_state(legacy=True)
    assert isinstance(np_state, tuple)  # the global generator is MT19937: ("MT19937", keys, pos, has_gauss, gauss)
    state: dict[str, Any] = {
        "python": _plain_python_state(random.getstate()),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_has_gauss": int(np_state[3]),
        "numpy_gauss": float(np_state[4]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy_pos"], state["numpy_has_gauss"], state["numpy_gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _plain_python_state(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def save_checkpoint(
    path: Path,
    network: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule,
    scaler: torch.amp.GradScaler | None,
    progress: Progress,
) -> Path:
    """Write a checkpoint atomically (temp file beside ``path``, renamed)."""
    payload = {
        "network": network.state_dict(),
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "rng": rng_state(),
        "progress": asdict(progress),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(
    path: Path,
    network: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule,
    scaler: torch.amp.GradScaler | None,
    device: torch.device | str = "cpu",
) -> Progress:
    """Restore network, optimiser, schedule, scaler and RNG states from ``path``; returns the Progress.

    Loads with ``weights_only=True``. Raises InputError when the file is missing or unreadable.
    """
    if not Path(path).is_file():
        raise InputError(f"no checkpoint at {path}; start without --resume or pick the right run folder")
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # truncated/corrupt files raise many types
        raise InputError(f"checkpoint {path} cannot be read ({type(exc).__name__}); it may be incomplete") from None
    network.load_state_dict(payload["network"])
    optimizer.load_state_dict(payload["optimizer"])
    schedule.load_state_dict(payload["schedule"])
    if scaler is not None and payload["scaler"]:
        scaler.load_state_dict(payload["scaler"])
    rng = payload["rng"]
    rng["torch"] = rng["torch"].cpu()
    if "cuda" in rng:
        rng["cuda"] = [s.cpu() for s in rng["cuda"]]
    set_rng_state(rng)
    return Progress(**payload["progress"])
