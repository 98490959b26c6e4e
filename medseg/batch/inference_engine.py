"""The real batch engine: :class:`medseg.inference.Predictor` loaded once per worker,
:func:`medseg.inference.predict_case` per case (outputs named by the batch's case id)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from medseg.batch.cases import Case
from medseg.batch.engine import ModelIdentity, model_identity
from medseg.errors import InputError

#: Stats keys dropped before the ledger (the ledger has the source; paths may name people).
_PRIVATE_STATS = ("source", "case_id")


@dataclass(frozen=True)
class PredictEngine:
    """Model folders plus prediction and output options; picklable, so it travels to workers."""

    model_dirs: tuple[Path, ...]
    predict: Any = None  # PredictOptions
    output: Any = None  # OutputOptions
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_cli(cls, args: argparse.Namespace) -> "PredictEngine":
        """From ``medseg batch`` arguments (``-m``, ``--device``, ``--precision``, ``--tta``, ...)."""
        from medseg.inference import OutputOptions, PredictOptions

        predict = PredictOptions(device=args.device, precision=args.precision, tta=args.tta, fast=args.fast)
        output = OutputOptions(dicom_seg=not args.no_seg, qc=not args.no_qc, probabilities=args.probabilities,
                               resample=args.resample, rtstruct=getattr(args, "rtstruct", False),
                               seg_nrrd=getattr(args, "seg_nrrd", False), viewer=not getattr(args, "no_viewer", False),
                               viewer_assets=str(Path(args.output).resolve()))
        return cls(tuple(Path(m) for m in args.model), predict, output)

    def identity(self) -> ModelIdentity:
        """Folder names and a hash of the model files (checks the folders exist)."""
        return model_identity(self.model_dirs)

    def load(self, threads: int) -> Any:
        """Load every model once: the worker's Predictor, using ``threads`` CPU threads unless set."""
        from medseg.inference import PredictOptions, Predictor

        options = self.predict or PredictOptions()
        if options.threads is None:
            options = replace(options, threads=threads)
        return Predictor.from_folders(list(self.model_dirs), options)

    def run_case(self, predictor: Any, case: Case, out_dir: Path) -> Any:
        """Segment one case into ``out_dir`` with outputs named ``<case_id>...``."""
        from medseg.inference import OutputOptions, predict_case

        result = predict_case(predictor, case_source(case), out_dir, self.output or OutputOptions(), case_id=case.case_id)
        stats = {k: v for k, v in result.stats.items() if k not in _PRIVATE_STATS}
        return replace(result, stats=stats)


def case_source(case: Case) -> Any:
    """What ``predict_case`` reads for a batch case: a ``CaseSource`` of channel files or one series."""
    from medseg.inference import CaseSource

    if case.series is not None:
        return CaseSource(case.case_id, series=case.series)
    folders = [p for p in case.images if p.is_dir()]
    if not folders:
        return CaseSource(case.case_id, paths=tuple(case.images))
    if len(case.images) > 1:
        raise InputError(f"case {case.case_id}: a DICOM folder must be the only image of a case; convert the channels to NIfTI first")
    from medseg.io.dicom import discover_series, select_series

    infos = discover_series(folders[0])
    if case.series_select is None and sum(info.is_image for info in infos) != 1:
        raise InputError(
            f"case {case.case_id}: {folders[0]} does not hold exactly one image series; add a 'series' column "
            "(index, UID or description pattern) to the manifest"
        )
    return CaseSource(case.case_id, series=select_series(infos, case.series_select))
