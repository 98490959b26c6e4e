"""Write a medseg U-Net model folder as an nnU-Net v2 model folder (benchmarks only).

The nnU-Net comparisons in ``medseg.benchmarks.nnunet`` run nnU-Net's own predictor on the
*same weights* medseg uses. medseg's ``unet`` family and nnU-Net's ``PlainConvUNet`` have the
same layers (two conv-InstanceNorm-LeakyReLU per stage, strided-conv downsampling, transposed
convolution upsampling, upsampled features concatenated before the skip), so the weights map
one to one:

- medseg convolutions carry no bias, so the nnU-Net plans set ``conv_bias: false`` (which also
  drops the transposed-convolution bias) and both networks compute the same function;
- nnU-Net works on SimpleITK arrays, whose axes are the reverse of nibabel's ``[i, j, k]``, so
  every convolution kernel, the patch size, the kernel sizes, the strides and the spacing are
  reversed. medseg reorients to RAS first; the two agree exactly only for images stored in
  RAS-permuted order without flips (true for the MSD hippocampus and the synthetic CT here),
  which :func:`check_storage_order` enforces.

nnU-Net reads its checkpoint with ``torch.load(weights_only=False)``; the file written here is a
plain dict of tensors and strings made in this process, never a pickle loaded from elsewhere.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

TRAINER = "nnUNetTrainer"
PLANS = "nnUNetPlans"
CONFIGURATION = "3d_fullres"


def check_storage_order(affine: np.ndarray) -> None:
    """Refuse images whose voxel axes need a flip to reach RAS (the two tools would then see
    differently flipped arrays and the weights would not carry over)."""
    import nibabel as nib

    flips = nib.orientations.io_orientation(np.asarray(affine))[:, 1]
    if (flips < 0).any():
        raise ValueError(f"image axes {nib.aff2axcodes(affine)} need flips to reach RAS; "
                         "the nnU-Net weight mapping is exact only without flips")


def _reverse(weight: torch.Tensor) -> torch.Tensor:
    """A conv kernel ``(out, in, a, b, c)`` for arrays whose spatial axes are reversed."""
    dims = list(range(weight.ndim))
    return weight.permute(dims[:2] + dims[2:][::-1]).contiguous()


def _block(prefix: str, block: torch.nn.Module) -> dict[str, torch.Tensor]:
    """nnU-Net ``StackedConvBlocks`` keys for a MONAI ``UnetBasicBlock`` (conv1/norm1, conv2/norm2)."""
    out = {}
    for j in (0, 1):
        conv, norm = getattr(block, f"conv{j + 1}").conv, getattr(block, f"norm{j + 1}")
        weight, scale, shift = _reverse(conv.weight.detach()), norm.weight.detach(), norm.bias.detach()
        # each conv and norm is registered twice: by name and in ``all_modules`` (conv, norm, act)
        for conv_key, norm_key in (("conv", "norm"), ("all_modules.0", "all_modules.1")):
            out[f"{prefix}.convs.{j}.{conv_key}.weight"] = weight
            out[f"{prefix}.convs.{j}.{norm_key}.weight"] = scale.clone()
            out[f"{prefix}.convs.{j}.{norm_key}.bias"] = shift.clone()
    return out


def nnunet_state_dict(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``PlainConvUNet`` weights (conv_bias False, deep supervision heads zero) from medseg's ``unet``."""
    net = getattr(network, "net", network)
    encoder_blocks = [net.input_block, *net.downsamples, net.bottleneck]
    state: dict[str, torch.Tensor] = {}
    for s, block in enumerate(encoder_blocks):
        for key, value in _block(f"encoder.stages.{s}.0", block).items():
            state[key] = value
            state[f"decoder.{key}"] = value  # the decoder keeps a reference to the encoder
    n_dec = len(net.upsamples)
    for d, up in enumerate(net.upsamples):
        state[f"decoder.transpconvs.{d}.weight"] = _reverse(up.transp_conv.conv.weight.detach())
        state.update(_block(f"decoder.stages.{d}", up.conv_block))
    head = net.output_block.conv.conv
    classes = head.weight.shape[0]
    for d, up in enumerate(net.upsamples):
        channels = up.conv_block.conv2.conv.weight.shape[0]
        shape = (classes, channels) + (1,) * (head.weight.ndim - 2)
        unused = d < n_dec - 1  # deep-supervision heads: not used by the predictor
        state[f"decoder.seg_layers.{d}.weight"] = torch.zeros(shape) if unused else head.weight.detach().clone()
        state[f"decoder.seg_layers.{d}.bias"] = torch.zeros(classes) if unused else head.bias.detach().clone()
    return {k: v.float().cpu() for k, v in state.items()}


def _normalization(norm: Any) -> tuple[str, dict[str, float]]:
    if norm.scheme == "ct":
        return "CTNormalization", {"mean": norm.mean, "std": norm.std, "percentile_00_5": norm.clip_low,
                                   "percentile_99_5": norm.clip_high, "median": norm.mean,
                                   "min": norm.clip_low, "max": norm.clip_high}
    return "ZScoreNormalization", {}


def nnunet_plans(plan: Any, config: Any, classes: int) -> dict[str, Any]:
    """nnU-Net v2 plans with one ``3d_fullres`` configuration matching medseg's plan and network."""
    schemes, intensity = zip(*(_normalization(n) for n in plan.normalization))
    stages = len(config.features)
    arch = {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": stages, "features_per_stage": list(config.features),
            "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": [list(k)[::-1] for k in config.kernel_sizes],
            "strides": [list(s)[::-1] for s in config.strides],
            "n_conv_per_stage": [2] * stages, "n_conv_per_stage_decoder": [2] * (stages - 1),
            "conv_bias": False, "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }
    spacing = [float(s) for s in plan.target_spacing][::-1]
    configuration = {
        "data_identifier": f"{PLANS}_{CONFIGURATION}", "preprocessor_name": "DefaultPreprocessor",
        "batch_size": int(config.batch_size), "patch_size": list(config.patch_size)[::-1],
        "median_image_size_in_voxels": list(config.patch_size)[::-1], "spacing": spacing,
        "normalization_schemes": list(schemes), "use_mask_for_norm": [False] * len(schemes),
        "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "architecture": arch, "batch_dice": False,
    }
    return {
        "dataset_name": f"Dataset999_{plan.name}", "plans_name": PLANS,
        "original_median_spacing_after_transp": spacing, "original_median_shape_after_transp": list(config.patch_size),
        "image_reader_writer": "SimpleITKIO", "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "configurations": {CONFIGURATION: configuration}, "experiment_planner_used": "medseg export",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {str(i): v for i, v in enumerate(intensity)},
    }


def write_nnunet_model(medseg_folder: str | Path, out: str | Path, fold: int = 0) -> Path:
    """Write ``out/{plans,dataset}.json`` and ``out/fold_<fold>/checkpoint_final.pth`` for the
    medseg ``unet`` model folder; returns ``out`` (nnU-Net's ``-m`` model folder)."""
    from medseg.model.folder import load_model_folder

    trained = load_model_folder(medseg_folder)
    if trained.spec.family != "unet" or trained.spec.spatial_dims != 3:
        raise ValueError("only 3D 'unet' model folders map onto nnU-Net's PlainConvUNet")
    plan, config = trained.plan, trained.spec.network_config()
    out = Path(out)
    (out / f"fold_{fold}").mkdir(parents=True, exist_ok=True)
    labels = {name: int(value) for value, name in sorted(trained.spec.labels.items())}
    dataset = {"channel_names": {str(i): c for i, c in enumerate(plan.channels)}, "labels": labels,
               "numTraining": 0, "file_ending": ".nii.gz"}
    (out / "dataset.json").write_text(json.dumps(dataset, indent=1))
    (out / "plans.json").write_text(json.dumps(nnunet_plans(plan, config, trained.spec.out_channels), indent=1))
    checkpoint = {
        "network_weights": nnunet_state_dict(trained.network), "trainer_name": TRAINER,
        "init_args": {"plans": json.loads((out / "plans.json").read_text()), "configuration": CONFIGURATION,
                      "fold": fold, "dataset_json": dataset},
        "inference_allowed_mirroring_axes": (0, 1, 2),
    }
    torch.save(checkpoint, out / f"fold_{fold}" / "checkpoint_final.pth")
    return out
