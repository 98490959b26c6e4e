"""The real batch engine: :class:`medseg.inference.Predictor` loaded once per worker,
:func:`medseg.inference.predict_case` per case (outputs named by the batch's case id)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from medseg.batch.engine import CASES_DIR, ModelIdentity, model_identity
from medseg.cases import InputCase

if TYPE_CHECKING:
    from medseg.inference import CaseResult, OutputOptions, PredictOptions, Predictor

#: Stats keys dropped before the ledger (the ledger has the source; paths may name people).
_PRIVATE_STATS = ("source", "case_id")


@dataclass(frozen=True)
class PredictEngine:
    """Model folders plus prediction and output options (the same ones ``medseg predict`` takes);
    picklable, so it travels to workers. None means the defaults."""

    model_dirs: tuple[Path, ...]
    predict: PredictOptions | None = None
    output: OutputOptions | None = None

    def identity(self) -> ModelIdentity:
        """Folder names and a hash of the model files (checks the folders exist)."""
        return model_identity(self.model_dirs)

    def in_channels(self) -> int:
        """Input channels of the first model (read from its JSON files; the loader checks the rest)."""
        from medseg.inference.loading import read_spec

        return read_spec(self.model_dirs[0]).in_channels

    def load(self, threads: int) -> Predictor:
        """Load every model once: the worker's Predictor, using ``threads`` CPU threads unless set."""
        from medseg.inference import PredictOptions, Predictor

        options = self.predict or PredictOptions()
        if options.threads is None:
            options = replace(options, threads=threads)
        return Predictor.from_folders(list(self.model_dirs), options)

    def run_case(self, predictor: Predictor, case: InputCase, out_dir: Path) -> CaseResult:
        """Segment one case into ``out_dir`` with outputs named ``<case_id>...``."""
        from medseg.inference import OutputOptions, predict_case

        options = self.output or OutputOptions()
        if options.viewer and options.viewer_assets is None:  # one copy of the viewer assets per batch
            options = replace(options, viewer_assets=str(batch_folder(out_dir)))
        result = predict_case(predictor, case, out_dir, options, case_id=case.case_id)
        stats = {k: v for k, v in result.stats.items() if k not in _PRIVATE_STATS}
        return replace(result, stats=stats)


def batch_folder(case_folder: Path) -> Path:
    """The batch output folder of a case folder ``OUTDIR/cases/<case>`` (the folder itself otherwise)."""
    case_folder = Path(case_folder)
    return case_folder.parent.parent if case_folder.parent.name == CASES_DIR else case_folder
