"""Never overwrite an input, never let two cases write one file: the rule ``medseg predict`` and
``medseg batch`` both check before anything runs.

Two checks, both raising a one-line :class:`~medseg.errors.ConfigError` (exit code 2):

* :func:`check_output_outside_input` (before discovery, paths only): OUTDIR may not be an input
  folder or lie inside it (outputs would be found as inputs next time), nor be the folder of an
  input file (``-i d/x.nii.gz -o d`` writes ``d/x.nii.gz``);
* :func:`check_planned_outputs` (after discovery, per case): no path a case writes may be an input
  file of any case (a manifest can name files anywhere) or lie beside it as the same name, and no
  two cases may write the same path (``x.nii.gz`` labels and the label-name sidecar ``x_stats.json``
  of a case ``x_stats`` against the statistics of case ``x``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from medseg.cases.case import InputCase
from medseg.errors import ConfigError

#: what a command writes per case: paths of output files, or a folder the case owns entirely
PlannedOutputs = Callable[[InputCase], Iterable[Path]]


def check_output_outside_input(input_path: str | Path, outdir: str | Path) -> None:
    """Refuse an output folder that is the input folder or inside it, or the folder of an input file.

    Needs the input to exist. Raises ConfigError naming both paths and what to do.
    """
    source, target = Path(input_path).resolve(), Path(outdir).resolve()
    if source.is_dir() and (target == source or source in target.parents):
        raise ConfigError(
            f"the output folder {outdir} is inside the input {input_path}; choose an output folder outside it"
        )
    if source.is_file() and target == source.parent:
        raise ConfigError(
            f"the output folder {outdir} holds the input {input_path}: outputs would overwrite or mix with "
            "the input files; choose another output folder"
        )


def check_planned_outputs(
    cases: Sequence[InputCase], outputs: PlannedOutputs, run_files: Mapping[Path, str] | None = None
) -> None:
    """Refuse, before anything runs, outputs that would overwrite an input or another case's output.

    ``outputs(case)`` yields what ``case`` will write: file paths, or folders the case owns entirely
    (then no input may lie inside them). ``run_files`` are files the run writes once (path -> what,
    e.g. the run manifest). Raises ConfigError naming the case(s), the path and the fix.
    """
    planned: dict[Path, str] = {_resolved(p): f"the {what}" for p, what in (run_files or {}).items()}
    for case in cases:
        for path in outputs(case):
            key = _resolved(path)
            if key in planned:
                raise ConfigError(
                    f"cases would overwrite each other's outputs: case {case.case_id} and {planned[key]} both write "
                    f"{path}; rename one of the input files (or list the cases in a CSV manifest with distinct names)"
                )
            planned[key] = f"case {case.case_id}"
    _check_inputs_spared(cases, planned)


def _check_inputs_spared(cases: Sequence[InputCase], planned: Mapping[Path, str]) -> None:
    """ConfigError when an input file of a case is, or lies inside, a planned output path."""
    folders: dict[Path, tuple[Path, str | None]] = {}  # folder -> (resolved, who writes it or a folder above)
    for case, path in _input_files(cases):
        if path.parent not in folders:
            resolved = path.parent.resolve()
            folders[path.parent] = resolved, _owner(resolved, planned)
        resolved, folder_owner = folders[path.parent]
        owner = folder_owner or planned.get(resolved / path.name)
        if owner:
            raise ConfigError(
                f"{owner} would overwrite the input {path} of case {case.case_id}; never write outputs over "
                "inputs: choose another output folder (-o)"
            )


def _owner(folder: Path, planned: Mapping[Path, str]) -> str | None:
    """Who writes ``folder`` or one of the folders above it (a case that owns a whole folder)."""
    for candidate in (folder, *folder.parents):
        if candidate in planned:
            return planned[candidate]
    return None


def _input_files(cases: Sequence[InputCase]) -> Iterator[tuple[InputCase, Path]]:
    """Every input file of every case: its images (volume files, manifest paths) and DICOM files."""
    for case in cases:
        for path in case.images:
            yield case, Path(path)
        if case.series is not None:
            for path in case.series.files:
                yield case, Path(path)


def _resolved(path: Path) -> Path:
    """``path`` with its folder resolved (symbolic links, ``..``) but its last component kept, so a
    symbolic link that is an input counts as the input it is."""
    path = Path(path)
    return path.parent.resolve() / path.name
