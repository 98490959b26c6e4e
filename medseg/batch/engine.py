"""What a batch worker runs: an :class:`Engine` loads the model once, then segments case after case.

The driver never runs a case itself. It hands cases to workers (local processes or Ray actors);
each worker calls :meth:`Engine.load` once and :func:`execute_case` per case, which turns whatever
happens (outputs, or any exception) into a small picklable :class:`CaseOutcome` with checksums.
Only the driver writes the ledger.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from medseg.batch.ledger import OutputFile
from medseg.cases import InputCase, safe_join
from medseg.cases.privacy import redact, redacting_logs
from medseg.errors import InputError, MedsegError
from medseg.io.atomic import remove_temp_files

CASES_DIR = "cases"
MAX_ERROR = 600


@dataclass(frozen=True)
class ModelIdentity:
    """Which model made the outputs: ``id`` (folder names) and ``version`` (hash of its files)."""

    id: str
    version: str


@runtime_checkable
class Engine(Protocol):
    """How a worker segments cases. Must be picklable (it travels to worker processes / actors).

    ``identity()`` runs in the driver and is cheap; it raises MedsegError for an unusable model.
    ``in_channels()`` runs in the driver: how many input images (channels) a case needs.
    ``load(threads)`` runs once per worker and returns the worker's state (the loaded model).
    ``run_case(state, case, out_dir)`` segments one case into ``out_dir`` (writing atomically)
    and returns an object with ``outputs: dict[str, Path]``, ``stats: dict``, ``timings: dict``.
    """

    def identity(self) -> ModelIdentity: ...

    def in_channels(self) -> int: ...

    def load(self, threads: int) -> Any: ...

    def run_case(self, state: Any, case: InputCase, out_dir: Path) -> Any: ...


@dataclass(frozen=True)
class CaseOutcome:
    """The result of one case as sent back to the driver (small and picklable)."""

    case_id: str
    ok: bool
    worker: str
    seconds: float
    outputs: tuple[OutputFile, ...] = ()
    timings: Mapping[str, float] = field(default_factory=dict)
    stats: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None


def worker_name() -> str:
    """``host:pid`` of the calling process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def case_dir(outdir: Path, case_id: str) -> Path:
    """The output folder of a case, guaranteed to lie inside ``outdir/cases``."""
    return safe_join(Path(outdir) / CASES_DIR, case_id)


def execute_case(engine: Engine, state: Any, case: InputCase, outdir: Path) -> CaseOutcome:
    """Run one case in a worker; never raises for a bad case (the error is in the outcome)."""
    start = time.perf_counter()
    name = worker_name()
    try:
        if case.problem:
            raise InputError(case.problem)
        folder = case_dir(outdir, case.case_id)
        folder.mkdir(parents=True, exist_ok=True)
        remove_part_files(folder)
        with redacting_logs(case.redact):
            result = engine.run_case(state, case, folder)
        outputs = checksum_outputs(getattr(result, "outputs", {}) or {}, Path(outdir))
        return CaseOutcome(
            case.case_id,
            True,
            name,
            time.perf_counter() - start,
            outputs,
            _plain(getattr(result, "timings", {}) or {}),
            _plain(getattr(result, "stats", {}) or {}),
        )
    except Exception as exc:  # one bad case must not stop the batch
        return CaseOutcome(case.case_id, False, name, time.perf_counter() - start, error=error_text(exc, case.redact))


def error_text(exc: BaseException, redact_terms: Sequence[str] = ()) -> str:
    """One line for the ledger and report: the message of a user error, else type, message and place."""
    message = " | ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
    if not isinstance(exc, MedsegError):
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
        message = f"{type(exc).__name__}: {message}{where}"
    message = redact(message, redact_terms)
    return message if len(message) <= MAX_ERROR else message[: MAX_ERROR - 3] + "..."


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def checksum_outputs(outputs: Mapping[str, Any], outdir: Path) -> tuple[OutputFile, ...]:
    """Outputs as ledger entries (path relative to ``outdir`` + SHA-256 + size).

    Raises RuntimeError when an output is missing or lies outside ``outdir`` (an engine bug).
    """
    root = outdir.resolve()
    entries = []
    for name, value in sorted(outputs.items()):
        path = Path(value).resolve()
        if not path.is_file():
            raise RuntimeError(f"output {name!r} was reported but {path.name} does not exist")
        if root not in path.parents:
            raise RuntimeError(f"output {name!r} ({path.name}) was written outside the output folder")
        entries.append(OutputFile(str(name), path.relative_to(root).as_posix(), sha256_file(path), path.stat().st_size))
    return tuple(entries)


def remove_part_files(folder: Path) -> int:
    """Delete the temporary ``.part`` files that interrupted writes left below ``folder`` (every
    writer uses :func:`medseg.io.atomic.atomic_path`); returns the count, 0 when there is no folder.
    Needs that no worker writes there meanwhile."""
    return remove_temp_files(folder) if folder.is_dir() else 0


def _plain(mapping: Mapping) -> dict:
    """A JSON-friendly copy (numpy scalars to Python numbers, paths to strings)."""
    import json

    from medseg.batch.ledger import _json_default

    return json.loads(json.dumps(dict(mapping), default=_json_default))


#: Files that define a model folder's behaviour (trained folder or ONNX export).
MODEL_FILES = ("model.json", "plan.json", "weights.safetensors", "medseg_export.json")


def check_model_folders(model_dirs: Sequence[Path]) -> None:
    """Raise InputError unless every folder is a trained model folder (``model.json``) or an export
    (``medseg_export.json``)."""
    for folder in map(Path, model_dirs):
        if not any((folder / marker).is_file() for marker in ("model.json", "medseg_export.json")):
            raise InputError(
                f"{folder} is not a model folder (no model.json or medseg_export.json); "
                "give the folder `medseg train` or `medseg export` wrote"
            )


def model_identity(model_dirs: Sequence[Path]) -> ModelIdentity:
    """Identity of model folders: their names, and a hash of the files that define them.

    Accepts trained folders (``model.json``) and exports (``medseg_export.json`` + ONNX). Raises
    InputError when a folder is missing or is neither.
    """
    check_model_folders(model_dirs)
    digest = hashlib.sha256()
    names = []
    for folder in map(Path, model_dirs):
        names.append(folder.resolve().name)
        files = [folder / n for n in MODEL_FILES] + sorted(folder.glob("*.onnx"))
        for path in files:
            if path.is_file():
                digest.update(path.name.encode())
                digest.update(sha256_file(path).encode())
    return ModelIdentity("+".join(names), digest.hexdigest()[:16])
