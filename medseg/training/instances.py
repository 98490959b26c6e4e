"""Instance datasets: an ``images/`` + ``labels/`` folder of images and their instance maps.

::

    nuclei/
      dataset.json      optional: "name", "labels" (object classes), "channel_names"
      images/<case>.png (or .tif, .nii.gz, ... any format medseg reads; channels inside the file)
      labels/<case>.png instance map: 0 = background, 1..N one object each (uint16 PNG/TIFF, NIfTI)

Cases are the files in ``images/``; a case's label is the file in ``labels/`` with the same case
name (any suffix; a case without one is unlabelled). Without ``dataset.json`` the classes are
``{0: "background", 1: "object"}`` and the channels are named from the first image: ``grey`` for one
channel, ``red, green, blue`` for a 2D colour image, ``channel_N`` otherwise. The result is a
:class:`~medseg.training.dataset.DatasetSpec` with ``instances=True``, read with
:func:`~medseg.training.dataset.read_case` like any dataset (instance ids are not checked against
the classes). An MSD / nnU-Net folder (``dataset.json``, ``imagesTr/``, ``labelsTr/``) holding 3D
instance maps says so with ``"instances": true`` in its ``dataset.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

from medseg.errors import InputError
from medseg.io.atomic import full_suffix
from medseg.io.files import is_volume_file
from medseg.training.dataset import Case, DatasetSpec, parse_channels, parse_labels

DEFAULT_CLASSES = {0: "background", 1: "object"}


def is_instance_folder(path: Path) -> bool:
    """True for a folder with ``images/`` and ``labels/`` (and no MSD ``imagesTr/``)."""
    path = Path(path)
    return (path / "images").is_dir() and (path / "labels").is_dir() and not (path / "imagesTr").exists()


def _case_name(path: Path) -> str:
    """``case_001.nii.gz`` -> ``case_001``."""
    return path.name[: -len(full_suffix(path))] if full_suffix(path) else path.name


def _files_by_case(folder: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not is_volume_file(path):
            continue
        name = _case_name(path)
        if name in files:
            raise InputError(f"{folder} holds two files for case {name!r} ({files[name].name}, {path.name}); keep one")
        files[name] = path
    return files


def load_instance_folder(root: Path) -> DatasetSpec:
    """The :class:`DatasetSpec` (``instances=True``) of an ``images/`` + ``labels/`` folder.

    Only the listing (and the first image, for channel names without ``dataset.json``) is read.
    InputError when ``images/`` holds no readable image.
    """
    root = Path(root)
    images, labels = _files_by_case(root / "images"), _files_by_case(root / "labels")
    if not images:
        raise InputError(f"{root / 'images'} holds no images (PNG, TIFF, NIfTI, NRRD, MHA)")
    cases = tuple(Case(name, (path,), labels.get(name)) for name, path in images.items())
    meta = _read_meta(root / "dataset.json")
    where = str(root / "dataset.json")
    classes = parse_labels(meta["labels"], where) if "labels" in meta else dict(DEFAULT_CLASSES)
    if "channel_names" in meta or "modality" in meta:
        channels = parse_channels(meta, where)
    else:
        channels = channel_names(cases[0].images[0])
    return DatasetSpec(str(meta.get("name") or root.name), cases, classes, channels, instances=True)


def _read_meta(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} cannot be read as JSON ({exc}); fix the file") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} must hold a JSON object")
    return data


def channel_names(image_path: Path) -> tuple[str, ...]:
    """Channel names of an image file: grey, red/green/blue (2D colour) or channel_N."""
    from medseg.io import read_volume

    volume = read_volume(image_path)
    n = 1 if volume.array.ndim == 3 else int(volume.array.shape[3])
    if n == 1:
        return ("grey",)
    if n == 3 and volume.spatial_shape[2] == 1:
        return ("red", "green", "blue")
    return tuple(f"channel_{c}" for c in range(n))
