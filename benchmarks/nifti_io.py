"""Reading and writing .nii.gz: medseg's ISA-L gzip (medseg.io.nifti) against nibabel's zlib.

    python -m benchmarks.nifti_io [--repeats 5] [--no-doc]

For each real volume of ../shared/data (a CT and an MR conversion by dcm2niix): read it (file ->
voxels in memory) and write it back as .nii.gz, plus a uint8 label map of the same grid (voxels
above the volume's mean), with ``nibabel.load``/``nibabel.save`` and with medseg's
``load_nifti``/``save_nifti``, interleaved, best of ``--repeats``. Checks that both readers give
identical voxels and reports the written file sizes. Writes the ``nifti_io`` section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.repo import shared_data
from benchmarks.report import add_no_doc_option, machine_line, update_section

VOLUMES = (
    shared_data("dicom_dcm_qa_ct", "ref_dcm2niix", "GE_HiSpeedDual_tilt_2_Tilt_Eq_1.nii.gz"),
    shared_data("dicom_tcia_brain_tumor_progression", "ref_dcm2niix", "PGBM-003_11_T1post.nii.gz"),
)


def best_of_interleaved(first: Callable[[], object], second: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Fastest of ``repeats`` calls of each function, in seconds, calling them in turn."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for function, bucket in zip((first, second), times):
            start = time.perf_counter()
            function()
            bucket.append(time.perf_counter() - start)
    return min(times[0]), min(times[1])


def measure(path: Path, repeats: int, work: Path) -> dict:
    """Read and write times (nibabel vs medseg) and sizes for one volume."""
    import nibabel as nib

    from medseg.io.nifti import load_nifti, save_nifti

    def read_nibabel() -> np.ndarray:
        return np.asanyarray(nib.load(path).dataobj)

    def read_medseg() -> np.ndarray:
        return np.asanyarray(load_nifti(path).dataobj)

    same = bool(np.array_equal(read_nibabel(), read_medseg()))
    image = nib.load(path)
    array = np.asanyarray(image.dataobj)
    labels = nib.Nifti1Image((array > array.mean()).astype(np.uint8), image.affine)
    row = {
        "name": path.name,
        "shape": array.shape,
        "dtype": str(array.dtype),
        "identical": same,
        "file_mb": path.stat().st_size / 1e6,
    }
    row["read_nibabel"], row["read_medseg"] = best_of_interleaved(read_nibabel, read_medseg, repeats)
    for kind, img in (("image", image), ("labels", labels)):
        targets = {tool: work / f"{kind}-{tool}.nii.gz" for tool in ("nibabel", "medseg")}
        row[f"write_{kind}_nibabel"], row[f"write_{kind}_medseg"] = best_of_interleaved(
            lambda img=img, targets=targets: nib.save(img, targets["nibabel"]),
            lambda img=img, targets=targets: save_nifti(img, targets["medseg"]),
            repeats,
        )
        for tool, target in targets.items():
            row[f"size_{kind}_{tool}"] = target.stat().st_size / 1e6
    return row


def report(rows: list[dict], repeats: int) -> str:
    """The markdown section."""
    lines = [
        "## Reading and writing .nii.gz (`python -m benchmarks.nifti_io`)",
        "",
        machine_line(),
        "",
        "Real dcm2niix conversions from ../shared/data. nibabel's own gzip (zlib; level 1 when writing) "
        "against medseg's `load_nifti` / `save_nifti` (ISA-L through python-isal; level 1). The label "
        f"map is uint8 on the same grid. Best of {repeats} interleaved repeats; ratio = nibabel time / "
        "medseg time.",
        "",
        "| volume | shape, dtype | .nii.gz MB | same voxels | read nibabel s | read medseg s | ratio "
        "| write image nibabel s | medseg s | ratio | MB nibabel / medseg "
        "| write labels nibabel s | medseg s | ratio | MB nibabel / medseg |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {'x'.join(map(str, r['shape']))} {r['dtype']} | {r['file_mb']:.1f} | "
            f"{'yes' if r['identical'] else 'NO'} | {r['read_nibabel']:.3f} | {r['read_medseg']:.3f} | "
            f"{r['read_nibabel'] / r['read_medseg']:.1f}x | "
            f"{r['write_image_nibabel']:.3f} | {r['write_image_medseg']:.3f} | "
            f"{r['write_image_nibabel'] / r['write_image_medseg']:.1f}x | "
            f"{r['size_image_nibabel']:.1f} / {r['size_image_medseg']:.1f} | "
            f"{r['write_labels_nibabel']:.3f} | {r['write_labels_medseg']:.3f} | "
            f"{r['write_labels_nibabel'] / r['write_labels_medseg']:.1f}x | "
            f"{r['size_labels_nibabel']:.2f} / {r['size_labels_medseg']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    add_no_doc_option(parser)
    args = parser.parse_args(argv)
    missing = [str(p) for p in VOLUMES if not p.is_file()]
    if missing:
        raise SystemExit(f"missing shared data: {', '.join(missing)}; run from a checkout with ../shared beside it")
    with tempfile.TemporaryDirectory() as work:
        rows = [measure(path, args.repeats, Path(work)) for path in VOLUMES]
    markdown = report(rows, args.repeats)
    print(markdown)
    if not args.no_doc:
        update_section("nifti_io", markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
