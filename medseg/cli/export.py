"""``medseg export``: write a trained model as ONNX plus its preprocessing spec (docs/inference.md)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from medseg.pretrained import resolve_model_path

log = logging.getLogger("medseg.export")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export`` parser."""
    p = subparsers.add_parser(
        "export", help="export a trained model to ONNX (for --backend onnxruntime / openvino)",
        description="Write model.onnx (dynamic batch axis; spatial axes = the plan's patch size unless "
        "--dynamic-spatial), plan.json and medseg_export.json (labels, channels, preprocessing, windowing).",
    )
    p.add_argument("-m", "--model", required=True, type=resolve_model_path, metavar="MODEL", help="trained model folder")
    p.add_argument("-o", "--output", required=True, type=Path, metavar="DIR", help="export folder")
    p.add_argument("--dynamic-spatial", action="store_true", help="dynamic spatial axes instead of the patch size")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export, then report the largest logit difference between ONNX Runtime and PyTorch."""
    from medseg.inference.export import export_model_folder
    from medseg.inference.loading import EXPORT_JSON

    onnx_path = export_model_folder(args.model, args.output, dynamic_spatial=args.dynamic_spatial)
    spec = json.loads((args.output / EXPORT_JSON).read_text())
    diff = spec.get("max_abs_diff_vs_torch")
    checked = f"; max |onnxruntime - torch| logit difference {diff:.2e}" if diff is not None else ""
    log.info("wrote %s (%s)%s", onnx_path, EXPORT_JSON, checked)
    return 0
