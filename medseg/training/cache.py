"""On-disk cache of preprocessed cases, so training epochs decode no DICOM/NIfTI.

Layout: ``<cache_dir>/<dataset>-<key>/`` where ``key`` hashes the plan's preprocessing fields
(spacing, normalisation, channels, labels, interpolation). Per case::

    <id>.image.npy   (C, X, Y, Z) float32 (or float16)
    <id>.label.npy   (X, Y, Z) uint8 (instance plans: the instance map, uint16 / uint32)
    <id>.fg.npz      foreground voxel coordinates per class ("1", "2", ...), int32 (N, 3), sampled
    <id>.json        the PreprocessRecord and the source files' size/mtime (written last)

A case is rebuilt when its ``.json`` is missing or its source files changed; everything else is
reused. Arrays open memory-mapped, so DataLoader workers share the page cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import InputError
from medseg.io.atomic import atomic_path, atomic_write_text
from medseg.model.plan import Plan
from medseg.model.preprocess import PreprocessRecord, preprocess_case, preprocess_instances, preprocess_label
from medseg.training.dataset import Case, DatasetSpec, read_case

log = logging.getLogger(__name__)

CACHE_VERSION = 1
#: foreground coordinates kept per class: at least this many (or all), and at least 1% of them
FOREGROUND_SAMPLES = 10_000


def cache_key(plan: Plan) -> str:
    """A short hash of everything that decides the preprocessed arrays."""
    kind = {"instance_maps": True} if plan.instances is not None else {}  # ids, not classes
    payload = json.dumps({"cache_version": CACHE_VERSION, **plan.preprocessing_fields(), **kind}, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


class CaseCache:
    """Read access to a built cache folder (see :func:`build_cache`)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        index = self.root / "index.json"
        if not index.is_file():
            raise InputError(f"{self.root} is not a medseg case cache (no index.json); build it with build_cache")
        data = json.loads(index.read_text(encoding="utf-8"))
        self.key: str = data["key"]
        self.labels: dict[int, str] = {int(k): v for k, v in data["labels"].items()}
        self.case_ids: tuple[str, ...] = tuple(data["cases"])

    def _path(self, case_id: str, suffix: str) -> Path:
        if case_id not in self.case_ids:
            raise InputError(f"case {case_id!r} is not in the cache {self.root}")
        return self.root / f"{_safe(case_id)}{suffix}"

    def load(self, case_id: str) -> tuple[np.ndarray, np.ndarray]:
        """``(image (C,X,Y,Z), label (X,Y,Z) uint8)``, memory-mapped read-only."""
        image = np.load(self._path(case_id, ".image.npy"), mmap_mode="r")
        label = np.load(self._path(case_id, ".label.npy"), mmap_mode="r")
        return image, label

    def foreground(self, case_id: str) -> dict[int, np.ndarray]:
        """Sampled voxel coordinates (N, 3) of each foreground class present in the case."""
        with np.load(self._path(case_id, ".fg.npz")) as data:
            return {int(k): data[k] for k in data.files}

    def record(self, case_id: str) -> PreprocessRecord:
        """The PreprocessRecord of the case (to restore predictions onto its source grid)."""
        meta = json.loads(self._path(case_id, ".json").read_text(encoding="utf-8"))
        return PreprocessRecord.from_dict(meta["record"])

    def __len__(self) -> int:
        return len(self.case_ids)


def build_cache(
    spec: DatasetSpec,
    plan: Plan,
    cache_dir: str | Path,
    workers: int = 0,
    case_ids: Sequence[str] | None = None,
    image_dtype: str = "float32",
) -> CaseCache:
    """Preprocess every case (or ``case_ids``) of ``spec`` for ``plan`` into ``cache_dir`` once.

    Cases already cached from unchanged sources are skipped. ``workers`` > 1 preprocesses in
    that many processes. Needs labelled cases; read/check errors name the case.
    """
    if image_dtype not in ("float32", "float16"):
        raise InputError(f"image_dtype must be 'float32' or 'float16', got {image_dtype!r}")
    root = Path(cache_dir).expanduser() / f"{_safe(spec.name)}-{cache_key(plan)}"
    cases = [spec.case(c) for c in case_ids] if case_ids is not None else list(spec.cases)
    unlabelled = [c.id for c in cases if c.label is None]
    if unlabelled:
        raise InputError(f"case(s) {', '.join(unlabelled[:5])} have no label; training needs a label for every case")
    todo = [c for c in cases if not _is_current(root, c)]
    if todo:
        log.info("preprocessing %d of %d case(s) into %s", len(todo), len(cases), root)
        _run(todo, spec, plan, root, workers, image_dtype)
    _write_index(root, spec, plan, [c.id for c in cases])
    return CaseCache(root)


def _run(todo: list[Case], spec: DatasetSpec, plan: Plan, root: Path, workers: int, dtype: str) -> None:
    if workers <= 1 or len(todo) == 1:
        for case in todo:
            cache_case(case, spec, plan, root, dtype)
        return
    with ProcessPoolExecutor(max_workers=workers, initializer=_worker_init) as pool:
        futures = [pool.submit(cache_case, case, spec, plan, root, dtype) for case in todo]
        for future in futures:
            future.result()


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)


def cache_case(case: Case, spec: DatasetSpec, plan: Plan, root: Path, image_dtype: str = "float32") -> None:
    """Read, check and preprocess one case; write its arrays, foreground coordinates and record."""
    images, label = read_case(case, spec)
    pre = preprocess_case(images, plan)
    if plan.instances is not None:  # ids kept: targets are derived per augmented patch
        label_array = preprocess_instances(label, pre.record)  # type: ignore[arg-type]
    else:
        label_array = preprocess_label(label, pre.record)  # type: ignore[arg-type]
    stem = _safe(case.id)
    root.mkdir(parents=True, exist_ok=True)
    with atomic_path(root / f"{stem}.image.npy") as tmp:
        np.save(tmp, pre.array.astype(image_dtype, copy=False))
    with atomic_path(root / f"{stem}.label.npy") as tmp:
        np.save(tmp, label_array)
    objects = (label_array > 0).astype(np.uint8) if plan.instances is not None else label_array
    coords = foreground_coordinates(objects, seed=_seed(case.id))
    with atomic_path(root / f"{stem}.fg.npz") as tmp:
        # allow_pickle named (its default) so the ** keys, class values, can only be arrays
        np.savez(tmp, allow_pickle=True, **{str(k): v for k, v in coords.items()})
    meta = {"record": pre.record.to_dict(), "sources": _stamp(case)}
    atomic_write_text(root / f"{stem}.json", json.dumps(meta) + "\n")


def foreground_coordinates(
    label: np.ndarray, seed: int = 0, samples: int = FOREGROUND_SAMPLES
) -> dict[int, np.ndarray]:
    """Per foreground class present: up to ``samples`` voxel coordinates (N, 3) int32, at least 1% of them."""
    rng = np.random.default_rng(seed)
    out: dict[int, np.ndarray] = {}
    present = np.flatnonzero(np.bincount(label.ravel(), minlength=2))
    for value in present[present > 0]:
        coords = np.argwhere(label == value).astype(np.int32)
        keep = min(len(coords), max(samples, int(np.ceil(0.01 * len(coords)))))
        if keep < len(coords):
            coords = coords[np.sort(rng.choice(len(coords), keep, replace=False))]
        out[int(value)] = coords
    return out


def _stamp(case: Case) -> list[list[Any]]:
    paths = [*case.images, *([case.label] if case.label else [])]
    out = []
    for path in paths:
        stat = path.stat()
        out.append([str(path), stat.st_size, stat.st_mtime_ns])
    return out


def _is_current(root: Path, case: Case) -> bool:
    meta_path = root / f"{_safe(case.id)}.json"
    if not meta_path.is_file():
        return False
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        return meta["sources"] == _stamp(case) and all(
            (root / f"{_safe(case.id)}{s}").is_file() for s in (".image.npy", ".label.npy", ".fg.npz")
        )
    except (OSError, ValueError, KeyError):
        return False


def _write_index(root: Path, spec: DatasetSpec, plan: Plan, case_ids: list[str]) -> None:
    index = root / "index.json"
    known: list[str] = []
    if index.is_file():
        known = json.loads(index.read_text(encoding="utf-8")).get("cases", [])
    cases = list(dict.fromkeys([*known, *case_ids]))
    payload = {
        "version": CACHE_VERSION,
        "key": cache_key(plan),
        "dataset": spec.name,
        "labels": {str(k): v for k, v in plan.labels.items()},
        "plan": plan.preprocessing_fields(),
        "cases": cases,
    }
    atomic_write_text(index, json.dumps(payload, indent=2) + "\n")


def _safe(name: str) -> str:
    """A file-name-safe version of a case or dataset name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _seed(case_id: str) -> int:
    return int(hashlib.sha256(case_id.encode("utf-8")).hexdigest()[:8], 16)
