"""Reading DICOM series: medseg vs SimpleITK's ImageSeriesReader (GDCM), side by side.

For each TCIA and dcm_qa_decubitus series: the best of N interleaved repeats of
``medseg.io.dicom.load_volume(folder)`` (discovery + loading) and of SimpleITK's
``GetGDCMSeriesFileNames(folder)`` + ``ImageSeriesReader.Execute()``, and their ratio
(medseg time / SimpleITK time; below 1 means medseg is faster). Both must give identical
voxels. Run: ``python -m benchmarks.read_dicom [--repeats N] [--data DIR]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.repo import SHARED_DATA
from benchmarks.report import add_no_doc_option, machine_line, update_section

SETS = ("dicom_tcia_brain_tumor_progression/dicom/PGBM-003", "dicom_dcm_qa_decubitus/dicom")


def series_folders(data: Path) -> list[Path]:
    """Every series folder of the benchmark sets that exists under ``data``."""
    sets = [data / name for name in SETS if (data / name).is_dir()]
    return [folder for root in sets for folder in sorted(root.iterdir()) if folder.is_dir()]


def read_medseg(folder: Path) -> np.ndarray:
    """medseg: discover + load; returns the array in SimpleITK's (z, y, x) order."""
    from medseg.io.dicom import load_volume

    return np.asarray(load_volume(folder).array).transpose(2, 1, 0)


def read_sitk(folder: Path) -> np.ndarray:
    """SimpleITK/GDCM: find the series files, read them; returns (z, y, x)."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return sitk.GetArrayFromImage(reader.Execute())


def best_of(functions: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best wall time of each function over ``repeats`` rounds, interleaved round by round."""
    best = {name: float("inf") for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def run(data: Path, repeats: int) -> str:
    """Measure every series; print and return the markdown section."""
    rows = []
    for folder in series_folders(data):
        ours, theirs = read_medseg(folder), read_sitk(folder)  # warm-up and correctness check
        identical = ours.shape == theirs.shape and np.array_equal(ours, theirs)
        readers = {"medseg": lambda f=folder: read_medseg(f), "sitk": lambda f=folder: read_sitk(f)}
        times = best_of(readers, repeats)
        ratio = times["medseg"] / times["sitk"]
        rows.append(
            (folder.name, "x".join(map(str, ours.shape[::-1])), times["medseg"], times["sitk"], ratio, identical)
        )
        print(
            f"{folder.name:28s} medseg {times['medseg'] * 1e3:7.1f} ms  SimpleITK {times['sitk'] * 1e3:7.1f} ms  "
            f"ratio {ratio:.2f}  identical voxels: {identical}"
        )
    if not rows:
        raise SystemExit(f"no benchmark series found under {data}")
    ratios = np.array([r[4] for r in rows])
    lines = [
        "## Reading DICOM series (`python -m benchmarks.read_dicom`)",
        "",
        f"Folder -> volume: `medseg.io.dicom.load_volume(folder)` (discovery + checks + loading) vs SimpleITK "
        f"`GetGDCMSeriesFileNames` + `ImageSeriesReader.Execute()` (GDCM). Best of {repeats} interleaved repeats; "
        "ratio = medseg / SimpleITK (below 1: medseg faster).",
        "",
        "| series | size (i x j x k) | medseg (ms) | SimpleITK (ms) | ratio | identical voxels |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {n} | {s} | {m * 1e3:.1f} | {t * 1e3:.1f} | {r:.2f} | {'yes' if same else 'NO'} |"
        for n, s, m, t, r, same in rows
    ]
    lines += [
        "",
        f"Geometric mean ratio: {float(np.exp(np.log(ratios).mean())):.2f} "
        f"(range {ratios.min():.2f}-{ratios.max():.2f}). {machine_line()}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="repeats per series (best is kept)")
    parser.add_argument(
        "--data", type=Path, default=SHARED_DATA, help="the shared data folder (default ../shared/data)"
    )
    add_no_doc_option(parser)
    args = parser.parse_args(argv)
    markdown = run(args.data, args.repeats)
    if not args.no_doc:
        update_section("read_dicom", markdown)
    print()
    print(markdown)


if __name__ == "__main__":
    main()
