"""Which prediction goes with which reference: two files, or two folders matched by case name."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from medseg.errors import InputError
from medseg.io.atomic import full_suffix
from medseg.io.files import is_volume_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CasePair:
    """One case: its name, the predicted label file or folder, the reference label file or folder."""

    case: str
    prediction: Path
    reference: Path


def case_name(path: Path) -> str:
    """``case_001.nii.gz`` -> ``case_001`` (the volume suffix removed); folder names as they are."""
    suffix = full_suffix(path) if path.is_file() else ""
    return path.name[: len(path.name) - len(suffix)] if suffix else path.name


def volume_files(folder: Path) -> dict[str, Path]:
    """Label files directly inside ``folder`` by case name (JSON sidecars and other files skipped)."""
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if is_volume_file(path):
            name = case_name(path)
            if name in files:
                raise InputError(
                    f"{folder} holds two files for case {name!r} ({files[name].name}, {path.name}); keep one"
                )
            files[name] = path
    return files


#: suffixes of the QC pictures medseg writes beside its predictions (``medseg predict``)
QC_SUFFIXES = ("_objects_qc", "_qc")


def _qc_picture(name: str, cases: dict[str, Path]) -> bool:
    """True for ``<case>_qc`` / ``<case>_objects_qc`` of a reference case (a PNG, but not a prediction)."""
    return any(name.endswith(suffix) and name[: -len(suffix)] in cases for suffix in QC_SUFFIXES)


def match_cases(prediction: Path, reference: Path) -> list[CasePair]:
    """Pair predictions with references.

    Two files (or DICOM folders) -> one pair. Two folders of label files -> pairs by case name;
    every reference case needs a prediction (InputError listing those missing); predictions
    without a reference are skipped with a warning (QC pictures of a case are skipped silently).
    """
    prediction, reference = Path(prediction), Path(reference)
    for path in (prediction, reference):
        if not path.exists():
            raise InputError(f"{path} does not exist; check the path")
    pred_files = volume_files(prediction) if prediction.is_dir() else {}
    ref_files = volume_files(reference) if reference.is_dir() else {}
    if not pred_files and not ref_files:
        return [CasePair(case_name(reference), prediction, reference)]
    if not (pred_files and ref_files):
        folder = prediction if pred_files else reference
        raise InputError(
            f"{folder} is a folder of label files but the other path is not; pass two files or two folders"
        )
    missing = sorted(set(ref_files) - set(pred_files))
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise InputError(f"{len(missing)} reference case(s) have no prediction in {prediction}: {shown}")
    extra = [name for name in sorted(set(pred_files) - set(ref_files)) if not _qc_picture(name, ref_files)]
    if extra:
        log.warning("%d prediction(s) have no reference and are skipped: %s", len(extra), ", ".join(extra[:5]))
    return [CasePair(name, pred_files[name], ref_files[name]) for name in sorted(ref_files)]
