"""Inference: a scan in, a labelled volume on the exact source grid out.

Public API (see docs/inference.md)::

    from medseg.inference import Predictor, PredictOptions, OutputOptions, predict_case

    with Predictor.from_folders(["models/hippo"], PredictOptions(device="auto")) as predictor:
        result = predict_case(predictor, "scan.nii.gz", "out/", OutputOptions())

Modules along the flow (device, threads and precision come from :mod:`medseg.model.runtime`): ``loading`` / ``backends``
(model folders, torch / ONNX Runtime / OpenVINO) -> ``sliding`` (Gaussian-blended batched
tiles, mirroring TTA) -> ``predictor`` (preprocess, ensemble, exact inverse) -> ``postprocess``
-> ``writer`` / ``outputs`` / ``qc`` (files). ``export`` writes ONNX, ``export_nnunet`` an nnU-Net v2
model folder. Inputs become cases in :mod:`medseg.cases` (shared with ``medseg batch``).
"""

from medseg.inference.options import OutputOptions, PredictOptions
from medseg.inference.postprocess import PostprocessOptions
from medseg.inference.predictor import CaseResult, Prediction, Predictor, predict_case

__all__ = [
    "CaseResult",
    "OutputOptions",
    "PostprocessOptions",
    "PredictOptions",
    "Prediction",
    "Predictor",
    "predict_case",
]
