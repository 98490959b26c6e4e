"""Write a trained medseg 3D U-Net as an nnU-Net v2 model folder (``medseg export --format nnunet``).

The folder holds ``dataset.json``, ``plans.json`` and ``fold_<N>/checkpoint_final.pth``, the layout
``nnUNetv2_predict_from_modelfolder -m DIR -f N`` reads, so nnU-Net's own predictor runs the *same
weights* medseg uses (the nnU-Net comparison in docs/benchmarks.md does exactly that). medseg's
``unet`` family and nnU-Net's ``PlainConvUNet`` have the same layers (two conv-InstanceNorm-LeakyReLU
per stage, strided-conv downsampling, transposed-convolution upsampling, upsampled features
concatenated before the skip), so the weights map one to one:

- medseg convolutions carry no bias, so the nnU-Net plans set ``conv_bias: false`` (which also
  drops the transposed-convolution bias) and both networks compute the same function;
- nnU-Net works on SimpleITK arrays, whose axes are the reverse of nibabel's ``[i, j, k]``, so
  every convolution kernel, the patch size, the kernel sizes, the strides and the spacing are
  reversed. medseg reorients to RAS first and nnU-Net does not; the two see the same array only
  for images stored in RAS-permuted order without flips (true for the MSD hippocampus and the
  synthetic CT of the benchmarks), which :func:`check_storage_order` tells.

Not carried over: medseg's post-processing (keep-largest-component) and its resampling code
(nnU-Net resamples with its own, so on images that need resampling labels can differ at edges).

nnU-Net reads its checkpoint with ``torch.load(weights_only=False)``; the file written here is a
plain dict of tensors, numbers and strings (``torch.load(..., weights_only=True)`` reads it too).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from medseg.errors import ConfigError, GeometryError, InputError
from medseg.io.atomic import atomic_path, atomic_write_text, ensure_writable_dir

if TYPE_CHECKING:
    from medseg.model.folder import ModelSpec
    from medseg.model.plan import NetworkConfig, Normalization, Plan

TRAINER = "nnUNetTrainer"
PLANS = "nnUNetPlans"
CONFIGURATION = "3d_fullres"
CHECKPOINT = "checkpoint_final.pth"
#: medseg normalisation scheme -> nnU-Net normalisation class
NORMALIZATION_CLASSES = {"zscore": "ZScoreNormalization", "ct": "CTNormalization", "none": "NoNormalization"}


def check_storage_order(affine: np.ndarray) -> None:
    """Refuse an image whose voxel axes need a flip to reach RAS.

    Needs the image's 4x4 voxel-to-RAS affine. Promises nothing when the axes are a permutation
    of RAS without flips (medseg and nnU-Net then see the same array, so the exported weights give
    the same result); raises :class:`GeometryError` otherwise."""
    import nibabel as nib

    flips = nib.orientations.io_orientation(np.asarray(affine))[:, 1]
    if (flips < 0).any():
        raise GeometryError(
            f"image axes {''.join(nib.aff2axcodes(affine))} need flips to reach RAS; the "
            "nnU-Net export gives medseg's results only on images stored without flips"
        )


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
    """``PlainConvUNet`` weights (conv_bias False, deep-supervision heads zero) from a medseg 3D ``unet``.

    Needs a network built by ``build_model("unet", 3, ...)``. Promises every key nnU-Net's
    ``PlainConvUNet`` loads, as fp32 CPU tensors with the spatial kernel axes reversed."""
    net: Any = getattr(network, "net", network)  # the DynUNet inside PadToStride (dynamic module attributes)
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


def _normalization(norm: Normalization) -> tuple[str, dict[str, float | None]]:
    """nnU-Net's normalisation class name and intensity properties for one medseg channel (the
    properties CTNormalization reads: clip percentiles, mean, std; none for the other schemes)."""
    if norm.scheme != "ct":
        return NORMALIZATION_CLASSES[norm.scheme], {}
    return "CTNormalization", {
        "mean": norm.mean,
        "std": norm.std,
        "percentile_00_5": norm.clip_low,
        "percentile_99_5": norm.clip_high,
        "median": norm.mean,
        "min": norm.clip_low,
        "max": norm.clip_high,
    }


def _architecture(config: NetworkConfig) -> dict[str, Any]:
    """The ``PlainConvUNet`` description of a medseg 3D U-Net configuration (axes reversed)."""
    stages = len(config.features)
    return {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": stages,
            "features_per_stage": list(config.features),
            "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": [list(k)[::-1] for k in config.kernel_sizes],
            "strides": [list(s)[::-1] for s in config.strides],
            "n_conv_per_stage": [2] * stages,
            "n_conv_per_stage_decoder": [2] * (stages - 1),
            "conv_bias": False,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def nnunet_plans(plan: Plan, config: NetworkConfig) -> dict[str, Any]:
    """nnU-Net v2 plans with one ``3d_fullres`` configuration matching medseg's plan and 3D network.

    Needs the model's plan and its 3D network configuration. Promises a JSON-ready dict whose patch
    size, spacing, kernel sizes and strides are medseg's in reversed (SimpleITK) axis order."""
    schemes, intensity = zip(*(_normalization(n) for n in plan.normalization))
    spacing = [float(s) for s in plan.target_spacing][::-1]
    resampling = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    configuration = {
        "data_identifier": f"{PLANS}_{CONFIGURATION}",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": int(config.batch_size),
        "patch_size": list(config.patch_size)[::-1],
        "median_image_size_in_voxels": list(config.patch_size)[::-1],
        "spacing": spacing,
        "normalization_schemes": list(schemes),
        "use_mask_for_norm": [False] * len(schemes),
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": resampling,
        "resampling_fn_seg_kwargs": {**resampling, "is_seg": True, "order": 1},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {**resampling, "order": 1},
        "architecture": _architecture(config),
        "batch_dice": False,
    }
    return {
        "dataset_name": f"Dataset999_{plan.name}",
        "plans_name": PLANS,
        "original_median_spacing_after_transp": spacing,
        "original_median_shape_after_transp": list(config.patch_size),
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {CONFIGURATION: configuration},
        "experiment_planner_used": "medseg export",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {str(i): v for i, v in enumerate(intensity)},
    }


def nnunet_dataset(plan: Plan, spec: ModelSpec) -> dict[str, Any]:
    """nnU-Net v2 ``dataset.json``: channel names, labels by name (0 named ``background``, as nnU-Net
    requires), ``.nii.gz`` files. Needs labels 0..K-1 for K network outputs (see :func:`check_convertible`)."""
    labels = {("background" if value == 0 else name): value for value, name in sorted(spec.labels.items())}
    return {
        "channel_names": {str(i): c for i, c in enumerate(plan.channels)},
        "labels": labels,
        "numTraining": 0,
        "file_ending": ".nii.gz",
    }


def check_convertible(spec: ModelSpec) -> None:
    """Raise :class:`ConfigError` unless the model maps onto nnU-Net's ``PlainConvUNet``: a 3D ``unet``
    whose labels are 0..K-1 for its K outputs (nnU-Net has one output per consecutive label)."""
    if spec.family != "unet" or spec.spatial_dims != 3:
        raise ConfigError(
            f"--format nnunet needs a 3D 'unet' model (nnU-Net's PlainConvUNet); this model is a "
            f"{spec.spatial_dims}D {spec.family!r}; export it with --format onnx instead"
        )
    if sorted(spec.labels) != list(range(spec.out_channels)):
        raise ConfigError(
            f"--format nnunet needs labels 0..{spec.out_channels - 1} for the model's "
            f"{spec.out_channels} outputs, got {sorted(spec.labels)}"
        )


def write_nnunet_model(medseg_folder: str | Path, out: str | Path, fold: int = 0) -> Path:
    """Write ``out/{dataset,plans}.json`` and ``out/fold_<fold>/checkpoint_final.pth`` for a trained model.

    Needs a medseg model folder (``medseg train``; not an ONNX export) holding a 3D ``unet`` and a
    fold number >= 0. Promises nnU-Net's ``-m`` model folder ``out`` (returned), each file written
    atomically (files of an earlier export there are replaced); InputError/ConfigError/OutputError
    for a folder that cannot be used, before anything is written."""
    from medseg.inference.loading import folder_kind
    from medseg.model.folder import load_model_folder

    medseg_folder, out = Path(medseg_folder), Path(out)
    if fold < 0:
        raise ConfigError(f"--fold must be 0 or more, got {fold}")
    if folder_kind(medseg_folder) != "model":
        raise InputError(f"{medseg_folder} is an ONNX export; pass the trained model folder")
    trained = load_model_folder(medseg_folder, device="cpu")
    check_convertible(trained.spec)
    plans = nnunet_plans(trained.plan, trained.spec.network_config())
    dataset = nnunet_dataset(trained.plan, trained.spec)
    checkpoint = {
        "network_weights": nnunet_state_dict(trained.network),
        "trainer_name": TRAINER,
        "init_args": {"plans": plans, "configuration": CONFIGURATION, "fold": fold, "dataset_json": dataset},
        "inference_allowed_mirroring_axes": (0, 1, 2),
    }
    ensure_writable_dir(out / f"fold_{fold}")
    atomic_write_text(out / "dataset.json", json.dumps(dataset, indent=1) + "\n")
    atomic_write_text(out / "plans.json", json.dumps(plans, indent=1) + "\n")
    with atomic_path(out / f"fold_{fold}" / CHECKPOINT) as tmp:
        torch.save(checkpoint, tmp)
    return out
