"""Typed option groups for prediction: how the network runs, and what is written per case."""

from __future__ import annotations

from dataclasses import dataclass, field

from medseg.choices import BACKENDS, DEVICES, DICOM_VALUES, PRECISIONS, TTA_MODES
from medseg.errors import ConfigError, check_choice
from medseg.inference.postprocess import PostprocessOptions


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    check_choice(name, value, choices)


@dataclass(frozen=True)
class PredictOptions:
    """How the models run; fixed when a :class:`~medseg.inference.predictor.Predictor` is created.

    ``backend``: ``auto`` = OpenVINO on the CPU when it is installed (exported once to ONNX and
    cached in ``cache_dir``, default ``$XDG_CACHE_HOME/medseg/onnx``), else PyTorch; or one of
    ``torch``, ``onnxruntime``, ``openvino``.
    ``tta``: ``off`` or ``all`` (mirroring over every spatial axis, 8 passes in 3D).
    ``tiles_per_batch``: tiles per network call (None = 2 on CPU, 4 on CUDA).
    ``fast``: argmax on the preprocessed grid, then nearest-neighbour back to the source grid
    (instead of resampling probabilities linearly). ``threads``: CPU threads (None = all
    available). ``precision``: auto = bf16 on CPUs with native bf16, fp16 AMP on CUDA, else fp32.
    ``strict``: refuse a case whose input does not suit the model's training data
    (:mod:`medseg.inference.suitability`) instead of predicting it with warnings.
    """

    device: str = "auto"
    backend: str = "auto"
    precision: str = "auto"
    tta: str = "off"
    overlap: float = 0.5
    tiles_per_batch: int | None = None
    fast: bool = False
    threads: int | None = None
    cache_dir: str | None = None
    strict: bool = False

    def __post_init__(self) -> None:
        _choice("device", self.device, DEVICES)
        _choice("backend", self.backend, BACKENDS)
        _choice("precision", self.precision, PRECISIONS)
        _choice("TTA mode", self.tta, TTA_MODES)
        if not 0.0 <= self.overlap < 1.0:
            raise ConfigError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.tiles_per_batch is not None and self.tiles_per_batch < 1:
            raise ConfigError(f"tiles per batch must be at least 1, got {self.tiles_per_batch}")


@dataclass(frozen=True)
class OutputOptions:
    """What :func:`~medseg.inference.predictor.predict_case` writes besides the label file.

    ``dicom_seg``: a DICOM SEG when the input was DICOM. ``probabilities``: the 4D class
    probabilities. ``qc``: the QC PNG. ``postprocess``: label post-processing. How DICOM series are
    read (:func:`medseg.io.dicom.load_series`): ``resample``: a series with gantry tilt, gaps or
    uneven slice spacing is resampled onto a regular grid (labels then lie on that grid and no SEG
    is written) instead of being refused; ``allow_missing_slices``: a series some of whose files
    cannot be read is loaded from the readable ones (reported; a gap they leave is refused unless
    ``resample``) instead of being refused; ``values``: ``rescaled`` (default) or ``real-world``.
    ``rtstruct``: a DICOM RTSTRUCT when the input was DICOM (needs rt-utils). ``seg_nrrd``: a 3D
    Slicer segmentation. ``viewer``: the case's NiiVue viewer page (skipped, with one warning, when
    the NiiVue bundle is not installed); ``viewer_assets``: the folder whose ``viewer_assets/``
    the pages share (default: the case's output folder). Slicer/ITK-SNAP colour tables are always written.
    """

    dicom_seg: bool = True
    probabilities: bool = False
    qc: bool = True
    postprocess: PostprocessOptions = field(default_factory=PostprocessOptions)
    resample: bool = False
    rtstruct: bool = False
    seg_nrrd: bool = False
    viewer: bool = True
    viewer_assets: str | None = None
    allow_missing_slices: bool = False
    values: str = "rescaled"

    def __post_init__(self) -> None:
        _choice("values", self.values, DICOM_VALUES)
