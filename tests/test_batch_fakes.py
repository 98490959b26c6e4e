"""A small fake engine for batch tests (it reads the real input and writes real NIfTI + PNG outputs).

Importable by spawned worker processes. Run as a script, it is ``medseg`` with the batch command's
engine replaced by :class:`FakeEngine` (configured from ``MEDSEG_FAKE_ENGINE``, JSON), so tests can
run and kill a real ``medseg batch`` process.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from medseg.batch.engine import ModelIdentity
from medseg.errors import InputError
from medseg.io.atomic import atomic_path
from medseg.volume import Volume


def tiny_png(path: Path) -> None:
    """A valid 2x2 grey PNG, written atomically."""
    raw = b"".join(b"\x00" + bytes([v, v]) for v in (64, 192))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 0, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    with atomic_path(path) as tmp:
        tmp.write_bytes(png)


def expected_labels(volume: Volume) -> np.ndarray:
    """What the fake model predicts: voxels above the volume's mean are label 1."""
    array = np.asarray(volume.array, dtype=np.float32)
    return (array > array.mean()).astype(np.uint8)


@dataclass(frozen=True)
class FakeEngine:
    """Thresholds the input. ``delay`` seconds are spent while the output's temp file is open.

    Cases whose source contains a ``fail_on`` text raise InputError, ``error_on`` a ValueError,
    ``crash_on`` kill the worker process, ``hang_on`` sleep forever; ``crash_writing_on`` and
    ``hang_writing_on`` do so while the label file's temporary file is open. Each model load
    appends the worker's pid to ``load_log``; with ``load_error`` loading raises InputError.
    """

    delay: float = 0.0
    fail_on: tuple[str, ...] = ()
    error_on: tuple[str, ...] = ()
    crash_on: tuple[str, ...] = ()
    hang_on: tuple[str, ...] = ()
    load_log: str | None = None
    version: str = "fake-1"
    crash_writing_on: tuple[str, ...] = ()
    hang_writing_on: tuple[str, ...] = ()
    load_error: str | None = None

    def identity(self) -> ModelIdentity:
        return ModelIdentity("fake", self.version)

    def in_channels(self) -> int:
        return 1

    def load(self, threads: int) -> dict:
        if self.load_error:
            raise InputError(self.load_error)
        if self.load_log:
            with open(self.load_log, "a") as handle:
                handle.write(f"{os.getpid()}\n")
        return {"pid": os.getpid(), "threads": threads}

    def run_case(self, state: dict, case, out_dir: Path) -> SimpleNamespace:
        source = case.source
        if any(t in source for t in self.crash_on):
            os._exit(9)
        if any(t in source for t in self.hang_on):
            time.sleep(3600)
        if any(t in source for t in self.fail_on):
            raise InputError(f"{source} cannot be read: the file is truncated")
        if any(t in source for t in self.error_on):
            raise ValueError("something broke inside the model")
        start = time.perf_counter()
        volume = read_case(case)
        read = time.perf_counter() - start
        labels = volume.with_array(expected_labels(volume), kind="label")
        target = out_dir / f"{case.case_id}.nii.gz"
        with atomic_path(target) as tmp:
            import nibabel as nib

            nib.save(labels.to_nibabel(), str(tmp))
            time.sleep(self.delay)
            if any(t in source for t in self.crash_writing_on):
                os._exit(9)
            if any(t in source for t in self.hang_writing_on):
                time.sleep(3600)
        qc = out_dir / f"{case.case_id}_qc.png"
        tiny_png(qc)
        voxels = int(labels.array.sum())
        ml = voxels * abs(float(np.linalg.det(volume.affine[:3, :3]))) / 1000.0
        return SimpleNamespace(
            case_id=case.case_id,
            outputs={"labels": target, "qc": qc},
            stats={"labels": [{"label": 1, "name": "bright", "voxels": voxels, "volume_ml": ml}]},
            timings={"read": read, "network": self.delay, "write": 0.001},
        )


def read_case(case) -> Volume:
    """The case's first input as a Volume (volume file, or DICOM series through medseg.io.dicom)."""
    if case.series is not None:
        from medseg.io.dicom import load_series

        return load_series(case.series).volume
    from medseg.io import read_volume

    return read_volume(case.images[0], series=case.series_select).require_3d()


def write_cases(folder: Path, n: int, shape: tuple[int, int, int] = (6, 5, 4)) -> list[Path]:
    """``n`` small random NIfTI volumes ``case_000.nii.gz``... in ``folder``."""
    import nibabel as nib

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"case_{i:03d}.nii.gz"
        nib.save(nib.Nifti1Image(rng.normal(size=shape).astype(np.float32), np.diag([1.0, 1.0, 2.0, 1.0])), str(path))
        paths.append(path)
    return paths


if __name__ == "__main__":
    import medseg.cli.batch as batch_cli
    from medseg.cli import main

    config = json.loads(os.environ.get("MEDSEG_FAKE_ENGINE", "{}"))
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
    batch_cli.make_engine = lambda args: FakeEngine(**config)
    sys.exit(main(sys.argv[1:]))
