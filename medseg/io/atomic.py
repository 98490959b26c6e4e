"""Write outputs so that nothing half-written is ever left at the target path."""

from __future__ import annotations

import errno
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from medseg.errors import OutputError

#: Multi-part suffixes that writers infer formats from; temp files keep them.
_KNOWN_SUFFIXES = (".nii.gz", ".seg.nrrd", ".tar.gz")


def full_suffix(path: Path) -> str:
    """The format suffix of ``path``: ``.nii.gz`` for ``a.nii.gz``, else the last suffix."""
    name = path.name.lower()
    for suffix in _KNOWN_SUFFIXES:
        if name.endswith(suffix):
            return path.name[-len(suffix):]
    return path.suffix


def ensure_writable_dir(folder: Path) -> None:
    """Create ``folder`` (and parents) or raise :class:`OutputError` saying why it cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {folder}: {exc.strerror}; choose a writable location") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {folder} is not writable; choose a writable location")


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def follow_umask(path: str | os.PathLike[str]) -> None:
    """Give ``path`` the permissions a newly created file gets under the umask (0644 under 022),
    for writers that create their own private file (safetensors writes 0600)."""
    os.chmod(path, 0o666 & ~_current_umask())


#: errno -> what to do, for writes the user's system refuses (disk full, file-size limit, quota...)
_WRITE_FIXES = {
    errno.ENOSPC: "free space on that disk or choose another output folder",
    errno.EDQUOT: "free space within your quota or choose another output folder",
    errno.EFBIG: "raise the file-size limit (ulimit -f) or choose another output folder",
    errno.EROFS: "choose a writable output folder",
}


def write_error(target: Path, exc: OSError) -> OutputError | None:
    """The one-line OutputError for a write the system refused for want of room or rights
    (disk full, quota, file-size limit, read-only file system), or None for any other OSError."""
    fix = _WRITE_FIXES.get(exc.errno or 0)
    if fix is None:
        return None
    reason = (exc.strerror or os.strerror(exc.errno or 0)).lower()
    return OutputError(f"cannot write {target}: {reason}; {fix}")


@contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target`` (same suffix); rename it onto ``target`` on success.

    On any exception the temporary file is removed and ``target`` is left untouched; a write the
    system refuses (disk full, file-size limit, quota, read-only) becomes a one-line OutputError.
    """
    target = Path(target)
    ensure_writable_dir(target.parent)
    tmp: Path | None = None
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=f".part{full_suffix(target)}", dir=target.parent
        )
        os.close(fd)
        tmp = Path(tmp_name)
        follow_umask(tmp)  # mkstemp makes 0600; outputs follow the umask
        yield tmp
        os.replace(tmp, target)
    except BaseException as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        error = write_error(target, exc) if isinstance(exc, OSError) else None
        if error is not None:
            raise error from None
        raise


def atomic_write_bytes(target: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    atomic_write_bytes(target, text.encode("utf-8"))
