"""What a model tells its DICOM SEGs (label codes in model.json), and ``medseg predict`` writing a SEG
on a real anonymised export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medseg.cli import main
from medseg.errors import ConfigError
from medseg.io.seg import CodedTerm, SegmentCoding
from medseg.model.folder import ModelSpec, read_model_description
from medseg.pretrained import resolve_model_path

ANONYMISED = "dicom_dicom2nifti_testdata/tests/data/siemens/anatomical/001"
LABELS = {0: "background", 1: "Anterior", 2: "Posterior"}
TERM = {"code": "5366008", "scheme": "SCT", "meaning": "Hippocampus"}
CATEGORY = {"code": "91723000", "scheme": "SCT", "meaning": "Anatomical Structure"}


NETWORK = {
    "patch_size": [16, 16, 16],
    "batch_size": 2,
    "features": [4, 8, 16],
    "kernel_sizes": [[3, 3, 3]] * 3,
    "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
}


def spec_data(label_metadata: object) -> dict:
    return {
        "family": "unet",
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": 3,
        "labels": LABELS,
        "network": NETWORK,
        "label_metadata": label_metadata,
        "format_version": 1,
    }


def test_label_metadata_round_trips_through_model_json() -> None:
    spec = ModelSpec.from_dict(
        spec_data(
            {
                "2": {
                    "category": CATEGORY,
                    "type": TERM,
                    "modifier": {"code": "255551008", "scheme": "SCT", "meaning": "Posterior"},
                }
            }
        )
    )
    assert spec.label_metadata == {
        2: SegmentCoding(CodedTerm(**CATEGORY), CodedTerm(**TERM), CodedTerm("255551008", "SCT", "Posterior"))
    }
    assert ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    plain = ModelSpec.from_dict(spec_data({}))
    assert "label_metadata" not in plain.to_dict()  # written only when set: older model.json files stay as they were


@pytest.mark.parametrize(
    "metadata, message",
    [
        ({"3": {"category": CATEGORY, "type": TERM}}, "label 3, which is not a foreground label"),
        ({"0": {"category": CATEGORY, "type": TERM}}, "label 0, which is not a foreground label"),
        ({"one": {"category": CATEGORY, "type": TERM}}, "key 'one' is not a label value"),
        ({"1": {"type": TERM}}, "label_metadata.1 must be an object with the keys category, type"),
        ({"1": {"category": CATEGORY, "type": TERM, "colour": "red"}}, "label_metadata.1 must be an object"),
        ({"1": {"category": CATEGORY, "type": {"code": "5366008", "meaning": "x"}}}, "label_metadata.1.type must be"),
        ({"1": {"category": CATEGORY, "type": {**TERM, "code": ""}}}, "label_metadata.1.type: a code's code must be"),
        (
            {"1": {"category": CATEGORY, "type": {**TERM, "meaning": "m" * 65}}},
            "meaning must be a non-empty text of at most 64",
        ),
        (["not", "a", "mapping"], "label_metadata must be an object keyed by label value"),
    ],
)
def test_bad_label_metadata_is_a_config_error(metadata: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        ModelSpec.from_dict(spec_data(metadata))


def test_shipped_hippocampus_model_codes_its_labels() -> None:
    spec, _ = read_model_description(resolve_model_path("hippocampus"))
    for label, modifier in ((1, "Anterior"), (2, "Posterior")):
        coding = spec.label_metadata[label]
        assert (coding.category.code, coding.type.code, coding.type.meaning) == ("91723000", "5366008", "Hippocampus")
        assert coding.modifier is not None and coding.modifier.meaning == modifier


def test_predict_writes_a_seg_on_an_anonymised_export(shared_data: Path, tmp_path: Path) -> None:
    """The issue's case: a series without PatientSex/AccessionNumber/FrameOfReferenceUID crashed the
    SEG writer (exit 1, no manifest). Now: exit 0, a SEG that reads back as the labels, named and coded."""
    from medseg.io.dicom import discover_series, load_series
    from medseg.io.files import read_volume_file
    from medseg.io.seg import read_seg
    from tests.inference_stubs import make_plan, save_random_model

    model = save_random_model(tmp_path / "hippo", make_plan(patch=(16, 24, 16)))
    spec = json.loads((model / "model.json").read_text())
    spec["label_metadata"] = {"1": {"category": CATEGORY, "type": TERM}}
    (model / "model.json").write_text(json.dumps(spec))
    source = shared_data / ANONYMISED
    first = pydicom.dcmread(next(p for p in sorted(source.iterdir()) if p.suffix == ".dcm"), stop_before_pixels=True)
    assert not {"PatientSex", "AccessionNumber", "FrameOfReferenceUID"} & set(first.dir())
    out = tmp_path / "out"
    code = main(
        [
            "-q",
            "predict",
            "-m",
            str(model),
            "-i",
            str(source),
            "-o",
            str(out),
            "--no-qc",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--backend",
            "torch",
        ]
    )
    assert code == 0
    (case,) = json.loads((out / "medseg_run.json").read_text())["cases"]
    labels = read_volume_file(case["outputs"]["labels"], kind="label")
    assert set(np.unique(labels.array)) == {0, 1, 2}
    seg = read_seg(case["outputs"]["seg"], load_series(discover_series(source)[0], min_slices=1))
    assert np.array_equal(seg.array, labels.array)
    header = pydicom.dcmread(case["outputs"]["seg"], stop_before_pixels=True)
    assert header.SeriesDescription == "medseg hippo segmentation"
    first_segment, second_segment = header.SegmentSequence
    assert (first_segment.SegmentLabel, first_segment.SegmentAlgorithmName) == ("Anterior", "medseg hippo")
    assert first_segment.SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Hippocampus"
    assert second_segment.SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Tissue"  # no code in model.json
