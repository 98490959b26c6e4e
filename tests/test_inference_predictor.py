"""The predictor with stub networks: exact source grid, resampling inverse, TTA, ensembles, 2D."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.errors import ConfigError, InputError
from medseg.inference import PredictOptions, Predictor
from medseg.inference.loading import LoadedModel
from medseg.io.files import read_volume_file
from medseg.volume import Volume
from tests.inference_stubs import Threshold, expected_labels, make_plan, stub_info

CPU = dict(device="cpu", threads=1, precision="fp32")


@pytest.fixture(scope="module")
def hippo(shared_data) -> Volume:
    return read_volume_file(shared_data / "msd_hippocampus" / "imagesTr" / "hippocampus_003.nii.gz")


def zscore(volume: Volume) -> np.ndarray:
    x = np.asarray(volume.array, dtype=np.float32)
    return (x - x.mean(dtype=np.float64)) / x.std(dtype=np.float64)


def oblique_volume(shape=(23, 31, 11)) -> Volume:
    """A synthetic oblique, anisotropic, LPS-stored volume with two bright asymmetric blocks."""
    angle = np.deg2rad(17)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = np.diag([-1, -1, 1]) @ rot @ np.diag([0.9, 1.1, 3.0])
    affine[:3, 3] = [40.0, -12.0, 7.5]
    i, j, _k = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij")
    array = 0.01 * i + 0.02 * j  # a smooth background gradient
    array[5:15, 8:14, 3:6] += 3.0
    array[5:8, 8:25, 3:9] += 1.5
    return Volume(array, affine)


def test_labels_lie_exactly_on_the_source_grid_without_resampling(hippo):
    predictor = Predictor.from_network(Threshold(), make_plan(), stub_info(), PredictOptions(**CPU))
    prediction = predictor.predict([hippo])
    labels = prediction.labels
    assert labels.kind == "label" and labels.array.dtype == np.uint8
    assert labels.spatial_shape == hippo.spatial_shape and np.array_equal(labels.affine, hippo.affine)
    agree = (labels.array == expected_labels(zscore(hippo))).mean()
    assert agree > 0.999
    assert labels.meta.label_names == {0: "background", 1: "Anterior", 2: "Posterior"}
    assert set(prediction.timings) == {"preprocess", "network", "inverse"}


def test_resampled_plan_restores_onto_the_oblique_source_grid():
    volume = oblique_volume()
    plan = make_plan(spacing=(1.5, 1.5, 1.5), patch=(16, 16, 8))
    for fast in (False, True):
        predictor = Predictor.from_network(Threshold(), plan, stub_info(), PredictOptions(fast=fast, **CPU))
        prediction = predictor.predict([volume], probabilities=True)
        labels = prediction.labels
        assert labels.spatial_shape == volume.spatial_shape
        assert np.array_equal(labels.affine, volume.affine)
        expected = expected_labels(zscore(volume))
        fg = expected > 0
        dice = 2 * ((labels.array > 0) & fg).sum() / ((labels.array > 0).sum() + fg.sum())
        assert dice > 0.8, (fast, dice)  # resampling 1 -> 3 mm slices and back blurs edges only
        probs = prediction.probabilities
        assert probs.dtype == np.float16 and probs.shape == (3, *volume.spatial_shape)
        np.testing.assert_allclose(probs.astype(np.float32).sum(0), 1.0, atol=5e-3)


def test_mirroring_tta_keeps_labels_of_a_pointwise_network(hippo):
    plain = Predictor.from_network(Threshold(), make_plan(), stub_info(), PredictOptions(**CPU)).predict([hippo])
    tta = Predictor.from_network(Threshold(), make_plan(), stub_info(), PredictOptions(tta="all", **CPU)).predict(
        [hippo]
    )
    np.testing.assert_array_equal(plain.labels.array, tta.labels.array)


def test_ensemble_averages_probabilities(hippo):
    plan, runtime_opts = make_plan(), PredictOptions(**CPU)
    single = [Predictor.from_network(Threshold(t1=t), plan, stub_info(), runtime_opts) for t in (-0.5, 0.5)]
    p = [s.predict([hippo], probabilities=True).probabilities.astype(np.float32) for s in single]
    models = [LoadedModel(f"m{n}", stub_info(), plan, s.models[0].backend) for n, s in enumerate(single)]
    ensemble = Predictor(models, runtime_opts, single[0].runtime).predict([hippo], probabilities=True)
    np.testing.assert_allclose(ensemble.probabilities.astype(np.float32), (p[0] + p[1]) / 2, atol=2e-3)
    mean = (p[0] + p[1]) / 2
    differ = ensemble.labels.array != np.argmax(mean, axis=0)
    top2 = np.sort(mean, axis=0)[-2:]
    assert (top2[1] - top2[0])[differ].max(initial=0) < 2e-3  # only float16 near-ties may differ


def test_ensemble_of_different_plans_meets_on_the_source_grid(hippo):
    runtime_opts = PredictOptions(**CPU)
    a = Predictor.from_network(Threshold(), make_plan(), stub_info(), runtime_opts)
    b = Predictor.from_network(Threshold(), make_plan(spacing=(2.0, 2.0, 2.0)), stub_info(), runtime_opts)
    ensemble = Predictor([a.models[0], b.models[0]], runtime_opts, a.runtime)
    assert len(ensemble._groups) == 2
    labels = ensemble.predict([hippo]).labels
    assert labels.same_grid(hippo)
    assert (labels.array == a.predict([hippo]).labels.array).mean() > 0.85


def test_incompatible_ensemble_and_wrong_channel_count_are_user_errors(hippo):
    runtime_opts = PredictOptions(**CPU)
    a = Predictor.from_network(Threshold(), make_plan(), stub_info(), runtime_opts)
    other = LoadedModel(
        "other", stub_info(labels={0: "background", 1: "liver", 2: "spleen"}), make_plan(), a.models[0].backend
    )
    with pytest.raises(ConfigError, match="different labels"):
        Predictor([a.models[0], other], runtime_opts, a.runtime)
    with pytest.raises(InputError, match="1 input channel"):
        a.predict([hippo, hippo])


def test_2d_model_predicts_slice_by_slice(hippo):
    for axis in (0, 2):
        plan = make_plan(slice_axis=axis)
        predictor = Predictor.from_network(Threshold(dims=2), plan, stub_info(dims=2), PredictOptions(**CPU))
        labels = predictor.predict([hippo]).labels
        assert labels.same_grid(hippo)
        assert (labels.array == expected_labels(zscore(hippo))).mean() > 0.999


def test_nnunet_style_network_runs_end_to_end(hippo):
    from medseg.networks import build_model

    plan = make_plan(patch=(16, 24, 16))
    torch.manual_seed(0)
    net = build_model("unet", 3, 1, 3, plan.config_3d)
    for precision in ("fp32", "auto"):
        predictor = Predictor.from_network(
            net, plan, stub_info(), PredictOptions(device="cpu", threads=1, precision=precision)
        )
        labels = predictor.predict([hippo]).labels
        assert labels.same_grid(hippo) and labels.array.max() <= 2


def test_oblique_tcia_dicom_series_round_trips_onto_its_grid(shared_data):
    from medseg.io.dicom import discover_series, load_series

    folder = shared_data / "dicom_tcia_brain_tumor_progression" / "dicom" / "PGBM-003" / "11-T1post-18670"
    volume = load_series(discover_series(folder)[0]).volume
    assert np.abs(volume.direction - np.round(volume.direction)).max() > 0.1  # oblique
    plan = make_plan(spacing=(1.4, 1.4, 6.5), patch=(32, 32, 8))
    for fast in (False, True):
        predictor = Predictor.from_network(Threshold(), plan, stub_info(), PredictOptions(fast=fast, **CPU))
        labels = predictor.predict([volume]).labels
        assert labels.spatial_shape == volume.spatial_shape and np.array_equal(labels.affine, volume.affine)
        expected = expected_labels(zscore(volume)) > 0
        dice = 2 * ((labels.array > 0) & expected).sum() / ((labels.array > 0).sum() + expected.sum())
        assert dice > 0.85, (fast, dice)


def test_predict_runs_through_predict_preprocessed_which_takes_read_only_float16_arrays(hippo, monkeypatch):
    """The one path from a preprocessed array to probabilities: predict() calls it, and the
    trainer's periodic validation calls it on memory-mapped (read-only, maybe float16) caches."""
    import warnings

    from medseg.model.preprocess import argmax_labels, preprocess_case, restore_labels

    plan = make_plan()  # 1 mm, like the hippocampus source: the labels come back by exact indexing
    predictor = Predictor.from_network(Threshold(), plan, stub_info(), PredictOptions(**CPU))
    calls = []
    original = predictor.predict_preprocessed
    monkeypatch.setattr(predictor, "predict_preprocessed", lambda *a, **k: calls.append(1) or original(*a, **k))
    expected = predictor.predict([hippo]).labels.array
    assert len(calls) == 1
    pre = preprocess_case([hippo], plan)
    cached = np.array(pre.array, dtype=np.float16)
    cached.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns on non-writable arrays
        probabilities = predictor.predict_preprocessed(cached)
    assert probabilities.shape == (3, *pre.array.shape[1:]) and probabilities.dtype == np.float32
    assert np.allclose(probabilities.sum(0), 1.0, atol=1e-5)
    labels = np.asarray(restore_labels(argmax_labels(probabilities), pre.record).array)
    assert (labels == expected).mean() > 0.999  # float16 rounding may move a voxel on a threshold


def test_predict_preprocessed_needs_to_know_the_plan_of_a_mixed_ensemble():
    runtime_opts = PredictOptions(**CPU)
    a = Predictor.from_network(Threshold(), make_plan(), stub_info(), runtime_opts)
    b = Predictor.from_network(Threshold(), make_plan(spacing=(2.0, 2.0, 2.0)), stub_info(), runtime_opts)
    mixed = Predictor(a.models + b.models, runtime_opts, a.runtime)
    array = np.zeros((1, 16, 16, 16), dtype=np.float32)
    with pytest.raises(ConfigError, match="preprocess differently"):
        mixed.predict_preprocessed(array)
    assert mixed.predict_preprocessed(array, make_plan(spacing=(2.0, 2.0, 2.0))).shape == (3, 16, 16, 16)
    with pytest.raises(ConfigError, match="no model of this predictor"):
        mixed.predict_preprocessed(array, make_plan(spacing=(3.0, 3.0, 3.0)))


def test_an_in_memory_network_in_training_mode_is_run_in_eval_mode_on_the_given_runtime():
    from medseg.model.runtime import configure_runtime

    net = torch.nn.Sequential(torch.nn.Conv3d(1, 3, 1), torch.nn.Dropout3d(0.9))
    runtime = configure_runtime("cpu", "fp32", 1)
    predictor = Predictor.from_network(net, make_plan(), stub_info(), PredictOptions(), runtime=runtime)
    assert predictor.runtime is runtime
    net.train()  # the trainer's next step switches it back
    image = np.random.default_rng(0).normal(size=(1, 16, 16, 16)).astype(np.float32)
    first, second = predictor.predict_preprocessed(image), predictor.predict_preprocessed(image)
    assert not net.training and np.array_equal(first, second)  # dropout off: deterministic
