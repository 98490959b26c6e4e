"""``medseg export``: write a trained model as ONNX plus its preprocessing spec, or as an nnU-Net v2
model folder (docs/inference.md)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from medseg.pretrained import resolve_model_path

log = logging.getLogger("medseg.export")

#: export formats, the default first
FORMATS = ("onnx", "nnunet")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export`` parser."""
    p = subparsers.add_parser(
        "export",
        help="export a trained model to ONNX (for --backend onnxruntime / openvino) or nnU-Net v2",
        description="--format onnx (default): write model.onnx (dynamic batch axis; spatial axes = the plan's "
        "patch size unless --dynamic-spatial), plan.json and medseg_export.json (labels, channels, preprocessing, "
        "windowing). --format nnunet: write an nnU-Net v2 model folder (dataset.json, plans.json, "
        "fold_N/checkpoint_final.pth) for nnUNetv2_predict_from_modelfolder; 3D 'unet' models only.",
    )
    p.add_argument(
        "-m", "--model", required=True, type=resolve_model_path, metavar="MODEL", help="trained model folder"
    )
    p.add_argument("-o", "--output", required=True, type=Path, metavar="DIR", help="export folder")
    # checked in run() so a wrong value gets medseg's one-line error with the closest choice
    p.add_argument("--format", default="onnx", metavar="{onnx,nnunet}", help="what to write (default onnx)")
    p.add_argument(
        "--dynamic-spatial", action="store_true", help="onnx: dynamic spatial axes instead of the patch size"
    )
    p.add_argument("--fold", type=int, metavar="N", help="nnunet: the fold folder to write, fold_N (default 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check the options, then export in the chosen format."""
    from medseg.errors import ConfigError, check_choice

    check_choice("export format", args.format, FORMATS)
    if args.format == "nnunet" and args.dynamic_spatial:
        raise ConfigError("--dynamic-spatial applies to --format onnx only; drop it for --format nnunet")
    if args.format == "onnx" and args.fold is not None:
        raise ConfigError("--fold applies to --format nnunet only; drop it for --format onnx")
    return export_nnunet(args) if args.format == "nnunet" else export_onnx(args)


def export_onnx(args: argparse.Namespace) -> int:
    """Export to ONNX, then report the largest logit difference between ONNX Runtime and PyTorch."""
    from medseg.inference.export import export_model_folder
    from medseg.inference.loading import EXPORT_JSON

    onnx_path = export_model_folder(args.model, args.output, dynamic_spatial=args.dynamic_spatial)
    spec = json.loads((args.output / EXPORT_JSON).read_text())
    diff = spec.get("max_abs_diff_vs_torch")
    checked = f"; max |onnxruntime - torch| logit difference {diff:.2e}" if diff is not None else ""
    log.info("wrote %s (%s)%s", onnx_path, EXPORT_JSON, checked)
    return 0


def export_nnunet(args: argparse.Namespace) -> int:
    """Write the nnU-Net v2 model folder and say how nnU-Net runs it."""
    from medseg.inference.export_nnunet import write_nnunet_model

    fold = 0 if args.fold is None else args.fold
    out = write_nnunet_model(args.model, args.output, fold)
    log.info(
        "wrote nnU-Net v2 model folder %s (dataset.json, plans.json, fold_%d/checkpoint_final.pth); run it "
        "with: nnUNetv2_predict_from_modelfolder -m %s -f %d -i IN -o OUT",
        out,
        fold,
        out,
        fold,
    )
    return 0
