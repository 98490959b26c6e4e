"""Write outputs so that nothing half-written is ever left at the target path."""

from __future__ import annotations

import errno
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from medseg.errors import OutputError

#: Multi-part suffixes that writers infer formats from; temp files keep them.
_KNOWN_SUFFIXES = (".nii.gz", ".seg.nrrd", ".tar.gz")
#: The temporary files of :func:`atomic_path`: ``.<target name>.<random>.part<target suffix>``.
_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]+\.part(?P<suffix>.*)$")


def full_suffix(path: Path) -> str:
    """The format suffix of ``path``: ``.nii.gz`` for ``a.nii.gz``, else the last suffix."""
    name = path.name.lower()
    for suffix in _KNOWN_SUFFIXES:
        if name.endswith(suffix):
            return path.name[-len(suffix) :]
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


def temp_file_target(name: str) -> str | None:
    """The name of the target whose temporary file (made by :func:`atomic_path`) ``name`` is, else
    None. Such a file is left behind only when the writing process was killed."""
    match = _TEMP_NAME.match(name)
    return match["target"] if match and match["suffix"] == full_suffix(Path(match["target"])) else None


def is_temp_file(name: str) -> bool:
    """True for the name of a temporary file of :func:`atomic_path`."""
    return temp_file_target(name) is not None


def remove_temp_files(folder: Path) -> int:
    """Delete the temporary files of interrupted :func:`atomic_path` writes below ``folder`` (all
    depths); returns how many. Needs that nothing writes there meanwhile."""
    removed = 0
    for directory, _dirs, names in os.walk(folder):
        for name in names:
            if is_temp_file(name):
                (Path(directory) / name).unlink(missing_ok=True)
                removed += 1
    return removed


def remove_temp_files_of(target: Path) -> int:
    """Delete the temporary files that interrupted writes of ``target`` left beside it; returns how many."""
    target = Path(target)
    if not target.parent.is_dir():
        return 0
    stale = [p for p in target.parent.iterdir() if temp_file_target(p.name) == target.name]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


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
    The temporary name is hidden and recognised by :func:`is_temp_file` (a kill leaves it behind).
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
