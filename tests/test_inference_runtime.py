"""Device, precision and thread selection; backends; where the stitching buffer lives."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from medseg.errors import ConfigError
from medseg.inference.backends import TorchBackend, require_backend_package
from medseg.inference.predictor import accumulator_device, argmax_labels, softmax_
from medseg.model import runtime as rt


def test_cpu_runtime_threads_and_precision():
    before = torch.get_num_threads()
    try:
        runtime = rt.configure_runtime("cpu", "fp32", threads=1)
        assert runtime.device.type == "cpu" and runtime.precision == "fp32" and torch.get_num_threads() == 1
        assert runtime.autocast_dtype is None
        auto = rt.configure_runtime("cpu", "auto", threads=1)
        assert auto.precision == ("bf16" if rt.cpu_supports_bf16() else "fp32")
        assert 1 <= rt.available_cpus() <= (os.cpu_count() or 1)
    finally:
        torch.set_num_threads(before)


def test_one_precision_rule_set_on_the_cpu(monkeypatch):
    """auto picks bf16 only with native support; an explicit bf16 the CPU cannot run is refused."""
    monkeypatch.setattr(rt, "cpu_supports_bf16", lambda: False)
    cpu = torch.device("cpu")
    assert rt.resolve_precision("auto", cpu) == "fp32"
    with pytest.raises(ConfigError, match="no native bf16"):
        rt.resolve_precision("bf16", cpu)
    monkeypatch.setattr(rt, "cpu_supports_bf16", lambda: True)
    assert rt.resolve_precision("auto", cpu) == "bf16"
    assert rt.resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
        rt.resolve_precision("fp16", cpu)


def test_one_precision_rule_set_on_cuda(monkeypatch):
    """CUDA auto: bf16 where the GPU has it, else fp16 (the same for training and inference)."""
    gpu = torch.device("cuda")
    monkeypatch.setattr(rt, "cuda_supports_bf16", lambda: True)
    assert rt.resolve_precision("auto", gpu) == "bf16"
    monkeypatch.setattr(rt, "cuda_supports_bf16", lambda: False)
    assert rt.resolve_precision("auto", gpu) == "fp16"
    with pytest.raises(ConfigError, match="no bf16"):
        rt.resolve_precision("bf16", gpu)


def test_threads_follow_omp_num_threads_when_set(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert rt.default_threads() == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert rt.default_threads() == rt.available_cpus()


def test_unknown_device_and_missing_gpu_are_user_errors():
    with pytest.raises(ConfigError, match="unknown device"):
        rt.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            rt.resolve_device("cuda")
        assert rt.resolve_device("auto").type == "cpu"


def test_stitching_buffer_placement_is_decided_from_free_memory():
    gpu = torch.device("cuda")
    gib = 1024**3
    assert accumulator_device(gpu, values=gib // 4, free_bytes=8 * gib) == gpu  # 1 GiB fits in 8 - 2
    assert accumulator_device(gpu, values=8 * gib // 4, free_bytes=8 * gib).type == "cpu"
    assert accumulator_device(torch.device("cpu"), values=10**12).type == "cpu"


def test_bf16_torch_backend_agrees_with_fp32():
    if not rt.cpu_supports_bf16():
        pytest.skip("this CPU has no native bf16")
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv3d(1, 8, 3, padding=1), torch.nn.InstanceNorm3d(8), torch.nn.LeakyReLU(), torch.nn.Conv3d(8, 3, 1)
    )
    x = torch.randn(2, 1, 16, 16, 16)
    fp32 = TorchBackend(net, rt.Runtime(torch.device("cpu"), "fp32", 1))(x)
    bf16 = TorchBackend(net, rt.Runtime(torch.device("cpu"), "bf16", 1))(x)
    assert bf16.dtype == torch.float32 and bf16.shape == fp32.shape
    assert float((bf16.argmax(1) == fp32.argmax(1)).float().mean()) > 0.97


def test_backend_returns_full_resolution_output_of_deep_supervision():
    class Deep(torch.nn.Module):
        def forward(self, x):
            return [x * 2, x[:, :, ::2, ::2, ::2]]

    out = TorchBackend(Deep(), rt.Runtime(torch.device("cpu"), "fp32", 1))(torch.ones(1, 2, 4, 4, 4))
    assert out.shape == (1, 2, 4, 4, 4) and float(out.max()) == 2.0


def test_unknown_backend_names_the_choices():
    with pytest.raises(ConfigError, match="torch, onnxruntime, openvino"):
        require_backend_package("tensorrt")


def test_softmax_in_place_and_argmax_labels():
    logits = torch.randn(3, 5, 6, 40)
    expected = torch.softmax(logits, 0)
    out = softmax_(logits.clone(), chunk=7)
    torch.testing.assert_close(out, expected)
    labels = argmax_labels(out.numpy())
    assert labels.dtype == np.uint8
    assert (labels == out.argmax(0).numpy()).all()
