"""Instance models through `medseg train`, `medseg predict` and `medseg batch`: PNG folders in,
uint16 instance maps of the input's H x W, object tables and QC pictures out; model.json metrics
equal `medseg predict` + `medseg evaluate --instances`; Mask R-CNN folders; the 3D path."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medseg.cli import main
from medseg.training.recipe import Recipe
from medseg.training.trainer import TrainOptions, train
from tests.instance_stubs import touching_objects, write_instance_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_png_dataset(root: Path, count: int, shape: tuple[int, int] = (72, 88), seed: int = 0) -> Path:
    """``images/`` (8-bit RGBA PNGs, bright discs on a dark background) + ``labels/`` (uint16 ids)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for n in range(count):
        image, ids = touching_objects(shape, rng, 6, (5.0, 8.0))
        grey = np.clip(image * 200 + 20, 0, 255).astype(np.uint8)
        rgba = np.stack([grey, grey // 2, grey, np.full_like(grey, 255)], axis=-1)
        Image.fromarray(rgba, "RGBA").save(root / "images" / f"img{n}.png")
        Image.fromarray(ids.astype(np.uint16)).save(root / "labels" / f"img{n}.png")
    return root


def recipe(root: Path, family: str = "unet", dims: int = 2, **sections: dict) -> Recipe:
    patch = [64, 64] if dims == 2 else [32, 32, 32]
    data = {
        "name": f"tiny-{family}",
        "dataset": {"path": str(root)},
        "plan": {"patch_size": patch, "batch_size": 2, "base_features": 4},
        "model": {"family": family, "spatial_dims": dims},
        "budget": {"epochs": 2, "iterations_per_epoch": 2},
        "validation": {"every": 1},
        "runtime": {"device": "cpu", "workers": 0, "cache_dir": str(root.parent / "cache"), "precision": "fp32"},
    }
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values}
    return Recipe.from_dict(data)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(PNG dataset, a tiny 2D U-Net instance model trained on it for 4 iterations)."""
    root = tmp_path_factory.mktemp("instances")
    data = write_png_dataset(root / "pngs", 5)
    folder = train(recipe(data), TrainOptions(root / "run", progress_bar=False))
    return data, folder


def test_trained_folder_records_the_instance_method_and_metrics(trained) -> None:
    _, folder = trained
    spec = json.loads((folder / "model.json").read_text())
    assert spec["instances"]["method"] == "watershed" and spec["out_channels"] == 3
    assert spec["instances"]["min_size"] >= 3 and spec["postprocessing"] == {}
    metrics = spec["metrics"]
    assert {"dsb_score", "ap50", "box_map", "true", "predicted", "validation_cases"} <= set(metrics)
    assert metrics["validation_cases"] == 1 and metrics["true"] > 0
    plan = json.loads((folder / "plan.json").read_text())
    assert plan["pixel_grid"] is True and plan["instances"]["anchor_sizes"]


def test_predict_pngs_then_evaluate_equals_model_json(trained, tmp_path: Path, caplog) -> None:
    data, folder = trained
    from medseg.training.splits import load_splits

    val_ids = load_splits(folder.parent / "splits.json")[0].val
    inputs, references = tmp_path / "in", tmp_path / "ref"
    inputs.mkdir()
    references.mkdir()
    for case in val_ids:
        (inputs / f"{case}.png").write_bytes((data / "images" / f"{case}.png").read_bytes())
        (references / f"{case}.png").write_bytes((data / "labels" / f"{case}.png").read_bytes())
    out = tmp_path / "out"
    # as the training validation ran: PyTorch, fp32 (model.json's metrics.validation says so)
    assert (
        main(
            [
                "--quiet",
                "predict",
                "-m",
                str(folder),
                "-i",
                str(inputs),
                "-o",
                str(out),
                "--backend",
                "torch",
                "--precision",
                "fp32",
            ]
        )
        == 0
    )
    for case in val_ids:
        written = np.asarray(Image.open(out / f"{case}.png"))
        source = np.asarray(Image.open(data / "images" / f"{case}.png"))
        assert written.dtype == np.uint16 and written.shape == source.shape[:2]
        table = json.loads((out / f"{case}_objects.json").read_text())
        assert table["count"] == len(np.unique(written)) - 1 and table["spacing_known"] is False
        assert (out / f"{case}_objects.csv").is_file() and (out / f"{case}_objects_qc.png").is_file()
    assert main(["evaluate", str(out), str(references), "--instances", "-o", str(tmp_path / "m.csv")]) == 0
    assert "no reference" not in caplog.text  # the QC pictures beside the maps are not predictions
    summary = json.loads((tmp_path / "m_summary.json").read_text())
    metrics = json.loads((folder / "model.json").read_text())["metrics"]
    assert summary["images"] == len(val_ids)
    assert summary["dsb_score"] == pytest.approx(metrics["dsb_score"], abs=1e-6)
    assert summary["ap50"] == pytest.approx(metrics["ap50"], abs=1e-6)


def test_grey_png_runs_through_a_colour_model_and_batch_counts_objects(trained, tmp_path: Path) -> None:
    data, folder = trained
    inputs = tmp_path / "in"
    inputs.mkdir()
    grey = np.asarray(Image.open(data / "images" / "img0.png"))[..., 0]
    Image.fromarray(grey).save(inputs / "grey.png")
    (inputs / "colour.png").write_bytes((data / "images" / "img1.png").read_bytes())
    out = tmp_path / "batch"
    assert main(["--quiet", "batch", str(inputs), "-m", str(folder), "-o", str(out), "--backend", "torch"]) == 0
    with open(out / "summary.csv", newline="") as handle:
        rows = {r["case"]: r for r in csv.DictReader(handle)}
    assert set(rows) == {"grey", "colour"}
    for case, row in rows.items():
        table = json.loads(next((out / "cases").rglob(f"{case}_objects.json")).read_text())
        assert row["status"] == "done" and int(row["objects"]) == table["count"]
    report = (out / "report.html").read_text()
    assert "<th>objects</th>" in report and "_objects_qc.png" in report


def tiny_detection_folder(root: Path, data: Path) -> Path:
    """A Mask R-CNN model folder (random weights, small heads) planned on ``data``."""
    from medseg.model.folder import ModelSpec, save_model_folder
    from medseg.networks.maskrcnn import DetectionConfig, build_maskrcnn
    from medseg.training.dataset import load_dataset
    from medseg.training.instance_planner import plan_instances
    from medseg.training.planner import apply_overrides

    rec = recipe(data, "maskrcnn", instances={"fpn_channels": 16})
    plan = apply_overrides(plan_instances(load_dataset(data), workers=1), rec.plan, 2)
    config = DetectionConfig(
        fpn_channels=16,
        box_head=32,
        mask_channels=16,
        tile_size=(64, 64),
        anchor_sizes=plan.instances.anchor_sizes,
        aspect_ratios=plan.instances.aspect_ratios,
    )
    network = build_maskrcnn(3, config)
    spec = ModelSpec(
        "maskrcnn",
        2,
        3,
        2,
        dict(plan.labels),
        config.to_dict(),
        instances={"method": "maskrcnn", "score_threshold": 0.05, "min_size": 3, "overlap": 16},
    )
    return save_model_folder(root / "mrcnn", network, spec, plan)


def test_maskrcnn_folder_loads_without_pickles_and_predicts_tiled(trained, tmp_path: Path) -> None:
    from medseg.model.folder import load_model_folder

    data, _ = trained
    folder = tiny_detection_folder(tmp_path, data)
    model = load_model_folder(folder)
    assert type(model.network).__name__ == "MaskRCNN" and not model.network.training
    big = tmp_path / "in"
    big.mkdir()
    image, _ = touching_objects((150, 110), np.random.default_rng(4), 12, (5.0, 8.0))  # several 64 x 64 tiles
    Image.fromarray(np.clip(image * 255, 0, 255).astype(np.uint8)).save(big / "big.png")
    out = tmp_path / "out"
    assert main(["--quiet", "predict", "-m", str(folder), "-i", str(big), "-o", str(out)]) == 0  # auto -> torch
    written = np.asarray(Image.open(out / "big.png"))
    assert written.shape == (150, 110) and written.dtype == np.uint16
    table = json.loads((out / "big_objects.json").read_text())
    assert table["count"] == len(np.unique(written)) - 1
    assert all(0.05 <= row["score"] <= 1 for row in table["objects"])


def test_maskrcnn_without_torchvision_is_a_one_line_install_hint(monkeypatch, tmp_path: Path, capsys) -> None:
    from medseg.errors import ConfigError
    from medseg.networks.maskrcnn import DetectionConfig, build_maskrcnn

    monkeypatch.setitem(sys.modules, "torchvision", None)
    with pytest.raises(ConfigError, match=r"pip install torch==2\.14\.1 torchvision==0\.29\.1") as error:
        build_maskrcnn(3, DetectionConfig())
    assert "\n" not in str(error.value)


def test_maskrcnn_trains_on_instance_batches(trained, tmp_path: Path) -> None:
    data, _ = trained
    folder = train(
        recipe(data, "maskrcnn", instances={"fpn_channels": 16}, budget={"epochs": 1}),
        TrainOptions(tmp_path / "run", progress_bar=False),
    )
    spec = json.loads((folder / "model.json").read_text())
    assert spec["instances"]["method"] == "maskrcnn" and spec["metrics"]["precision"] == "fp32"
    assert (
        spec["network"]["anchor_sizes"] == json.loads((folder / "plan.json").read_text())["instances"]["anchor_sizes"]
    )
    log = (tmp_path / "run" / "training_log.csv").read_text().splitlines()
    assert "val_dsb_score" in log[0] and np.isfinite(float(log[1].split(",")[2]))


def test_3d_instance_path_end_to_end(tmp_path: Path) -> None:
    """A 3D U-Net instance model trains from an MSD-style folder of NIfTI instance maps, and
    `medseg predict` writes a NIfTI instance map on the input grid with its object table."""
    data = write_instance_dataset(tmp_path / "blobs", 4, (32, 32, 32))
    folder = train(recipe(data, dims=3), TrainOptions(tmp_path / "run", progress_bar=False))
    spec = json.loads((folder / "model.json").read_text())
    assert spec["spatial_dims"] == 3 and spec["instances"]["method"] == "watershed"
    out = tmp_path / "out"
    source = data / "imagesTr" / "blob_000.nii.gz"
    assert main(["--quiet", "predict", "-m", str(folder), "-i", str(source), "-o", str(out), "--backend", "torch"]) == 0
    import nibabel as nib

    written, image = nib.load(out / "blob_000.nii.gz"), nib.load(source)
    assert written.shape == image.shape and np.allclose(written.affine, image.affine)
    table = json.loads((out / "blob_000_objects.json").read_text())
    assert table["dims"] == 3 and table["count"] == len(np.unique(np.asarray(written.dataobj))) - 1

    # the same volume as a DICOM series: a DICOM SEG with one segment per object, on the source grid
    from medseg.io.dicom import discover_series, load_series
    from medseg.io.seg import read_seg
    from tests.dicom_factory import write_mr_series

    write_mr_series(source, tmp_path / "dicom", patient_name="Doe^Jane", patient_id="P1", description="blobs")
    dicom_out = tmp_path / "dicom_out"
    assert (
        main(
            [
                "--quiet",
                "predict",
                "-m",
                str(folder),
                "-i",
                str(tmp_path / "dicom"),
                "-o",
                str(dicom_out),
                "--backend",
                "torch",
            ]
        )
        == 0
    )
    segs = list(dicom_out.glob("*_seg.dcm"))
    assert len(segs) == 1, sorted(p.name for p in dicom_out.iterdir())
    ids = np.asarray(nib.load(segs[0].with_name(segs[0].name.replace("_seg.dcm", ".nii.gz"))).dataobj)
    seg = read_seg(segs[0], load_series(discover_series(tmp_path / "dicom")[0]))
    assert np.array_equal(np.asarray(seg.array), ids)  # segment number = instance id, voxel for voxel
    names = seg.meta.label_names or {}
    assert len(names) == int(ids.max()) and sorted(names.values()) == [f"blob {i}" for i in sorted(names)]


def test_3d_unet_instances_separate_touching_balls(tmp_path: Path) -> None:
    """Issue 15's 3D target: a small 3D U-Net instance model, trained here on synthetic volumes of
    touching balls with known ids, reaches AP@0.5 >= 0.9 on volumes it never saw."""
    import nibabel as nib

    from medseg.evaluation.instances import score_instances
    from medseg.inference import PredictOptions, Predictor

    data = write_instance_dataset(tmp_path / "train", 10, (32, 32, 32), seed=0)
    test = write_instance_dataset(tmp_path / "test", 4, (32, 32, 32), seed=1)
    aug = {
        "rotation": False,
        "scaling": [1.0, 1.0],
        "noise": False,
        "blur": False,
        "gamma": False,
        "brightness_contrast": False,
        "low_resolution": False,
    }
    rec = recipe(
        data,
        dims=3,
        plan={"base_features": 8},
        augmentation=aug,
        dataset={"split": "kfold", "folds": 10},
        optimizer={"name": "adamw", "lr": 0.003},
        budget={"epochs": 14, "iterations_per_epoch": 25},
        validation={"every": 100},
    )
    folder = train(rec, TrainOptions(tmp_path / "run", progress_bar=False))
    scores = []
    with Predictor.from_folders([folder], PredictOptions(backend="torch", precision="fp32")) as predictor:
        for image in sorted((test / "imagesTr").glob("*.nii.gz")):
            found = predictor.predict([medseg_read(image)]).instances
            reference = np.asarray(nib.load(test / "labelsTr" / image.name).dataobj)
            scores.append(score_instances(image.name, np.asarray(found.array), reference))
    assert np.mean([s.ap50 for s in scores]) >= 0.9, [(s.n_true, s.n_pred, s.matched50) for s in scores]


def medseg_read(path: Path):
    from medseg.io import read_volume

    return read_volume(path)


def test_predict_never_writes_an_instance_map_over_its_input_png(trained, tmp_path: Path, capsys) -> None:
    """`-i d -o d` or `-i d/img0.png -o d`: `<case>.png` would be the input itself; refused, input intact."""
    data, folder = trained
    work = tmp_path / "d"
    work.mkdir()
    image = work / "img0.png"
    image.write_bytes((data / "images" / "img0.png").read_bytes())
    before = image.read_bytes()
    for source in (work, image):  # the folder, and the one file with its own folder as output
        assert (
            main(["--quiet", "predict", "-m", str(folder), "-i", str(source), "-o", str(work), "--backend", "torch"])
            == 2
        )
        assert image.read_bytes() == before and sorted(p.name for p in work.iterdir()) == ["img0.png"]
    assert "img0.png" in capsys.readouterr().err


def test_python_api_segments_a_colour_png_into_objects(trained) -> None:
    import medseg

    data, folder = trained
    image = medseg.read(data / "images" / "img2.png")  # one (W, H, 1, 3) Volume, alpha dropped
    result = medseg.segment(image, model=str(folder), backend="torch")
    assert result.instances is not None and result.instances.spatial_shape == image.spatial_shape
    assert np.array_equal(np.asarray(result.labels.array) > 0, np.asarray(result.instances.array) > 0)


def test_2d_dicom_input_gets_a_seg_with_one_segment_per_object(tmp_path: Path, capsys) -> None:
    """A real nuclei image stored as a single-frame 2D DICOM (no patient geometry, a patient name in
    its header): the shipped model writes the PNG instance map and a DICOM SEG whose segment n is
    object n, pixel for pixel, referencing the source image; no patient name in any file name."""
    import highdicom as hd
    import pydicom

    from tests.dicom_factory import write_dx_image

    sample = sorted((Path(__file__).parents[1] / "sample_data" / "nuclei" / "images").glob("*.png"))[0]
    grey = np.asarray(Image.open(sample).convert("L")).astype(np.uint16)
    (tmp_path / "in").mkdir()
    source = write_dx_image(tmp_path / "in" / "slide.dcm", grey, PatientName="Doe^Jane", PatientID="P1")
    out = tmp_path / "out"
    argv = ["--quiet", "predict", "-m", "nuclei", "-i", str(source), "-o", str(out), "--backend", "torch", "--rtstruct"]
    assert main(argv) == 0
    assert "no RTSTRUCT written: a 2D DICOM image has no slices to contour" in capsys.readouterr().err
    (seg_path,) = out.glob("*_seg.dcm")  # the case id is the series' (PatientID_study_series), never the name
    ids = np.asarray(Image.open(seg_path.with_name(seg_path.name.replace("_seg.dcm", ".png"))))
    assert ids.shape == grey.shape and ids.max() >= 5
    seg = hd.seg.segread(seg_path)
    uid = pydicom.dcmread(source).SOPInstanceUID
    assert seg.number_of_segments == ids.max() and seg.get_source_image_uids()[0][2] == uid
    assert np.array_equal(seg.get_pixels_by_source_instance([uid], combine_segments=True, relabel=False)[0], ids)
    assert [s.SegmentLabel for s in seg.SegmentSequence][:2] == ["object 1", "object 2"]  # <class> <id>
    assert not any("Doe" in p.name or "Jane" in p.name for p in out.rglob("*"))


def test_a_patch_override_keeps_the_instance_plans_stage_limit(tmp_path: Path) -> None:
    """[plan] patch_size = [128, 128] would give a 6-stage 2D network (down to 4 x 4); instance plans
    stop at 5 stages (docs/instances.md), so the recipe's override must not lift that limit."""
    from medseg.training.dataset import load_dataset
    from medseg.training.instance_planner import MAX_STAGES
    from medseg.training.planner import plan_for_recipe

    data = write_png_dataset(tmp_path / "pngs", 2)
    chosen = recipe(data, plan={"patch_size": [128, 128], "base_features": 16})
    config = plan_for_recipe(chosen, load_dataset(data), workers=1).config_2d
    assert config.patch_size == (128, 128) and len(config.features) == MAX_STAGES
    assert config.features == (16, 32, 64, 128, 256)


def test_a_folder_of_2d_dicom_images_runs_in_batch_and_a_3d_model_refuses_them(tmp_path: Path, capsys) -> None:
    """Folder discovery selects single-frame 2D DICOM images (the min_slices rule is for localizers
    of volumes); a 3D model refuses a 2D image with a one-line error instead of segmenting it."""
    from tests.dicom_factory import write_dx_image

    samples = sorted((Path(__file__).parents[1] / "sample_data" / "nuclei" / "images").glob("*.png"))[:2]
    for n, sample in enumerate(samples):
        (tmp_path / "in" / f"s{n}").mkdir(parents=True)
        grey = np.asarray(Image.open(sample).convert("L")).astype(np.uint16)
        write_dx_image(tmp_path / "in" / f"s{n}" / "img.dcm", grey, PatientName="Doe^Jane", PatientID=f"P{n}")
    out = tmp_path / "batch"
    assert main(["--quiet", "batch", str(tmp_path / "in"), "-m", "nuclei", "-o", str(out), "--backend", "torch"]) == 0
    with open(out / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["status"] for r in rows] == ["done", "done"] and all(int(r["objects"]) >= 5 for r in rows)
    assert len(list(out.rglob("*_seg.dcm"))) == 2
    capsys.readouterr()
    argv = ["--quiet", "predict", "-m", "hippocampus", "-i", str(samples[0]), "-o", str(tmp_path / "h")]
    assert main(argv) == 2
    assert "is a 2D image (png); model hippocampus segments 3D volumes" in capsys.readouterr().err
