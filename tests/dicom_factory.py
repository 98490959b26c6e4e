"""Write small real-content DICOM series for archive tests: a hippocampus crop (MSD Task04, shipped in
``sample_data/hippocampus``) as a classic MR series, one instance per axial slice.

The crops are 1 mm isotropic and small (about 35 x 50 x 36), so the shipped model segments one in
well under a second: the archive tests stay fast while the images are real.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.volume import LPS_TO_RAS


def write_mr_series(
    nifti: Path,
    folder: Path,
    *,
    patient_name: str,
    patient_id: str,
    study_uid: str | None = None,
    series_number: int = 1,
    description: str = "T1 hippocampus crop",
    study_date: str = "20240102",
    slices: int | None = None,
) -> tuple[str, str]:
    """Write ``nifti`` (3D) into ``folder`` as an MR series; returns (StudyInstanceUID, SeriesInstanceUID).

    Geometry follows the NIfTI affine (RAS) converted to LPS; pixel values become uint16. ``slices``
    keeps only the first slices (a localizer-like stub).
    """
    import nibabel as nib
    from pydicom.uid import generate_uid

    image = nib.load(str(nifti))
    data = np.asarray(image.dataobj, dtype=np.float64)
    scaled = np.round(data / max(float(data.max()), 1.0) * 4000).astype(np.uint16)
    lps = LPS_TO_RAS @ image.affine
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    frame_uid = generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(scaled.shape[2] if slices is None else slices):
        ds = _slice_dataset(scaled[:, :, k], lps, k)
        ds.update(
            _identity(
                patient_name, patient_id, study_uid, series_uid, frame_uid, series_number, description, study_date
            )
        )
        ds.InstanceNumber = k + 1
        ds.save_as(folder / f"{k + 1:04d}.dcm", enforce_file_format=True)
    return study_uid, series_uid


def _slice_dataset(plane: np.ndarray, lps: np.ndarray, k: int):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    columns, rows = plane.shape  # array [i, j]: i along the row direction (columns of the slice)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    row_dir, col_dir = lps[:3, 0] / spacing[0], lps[:3, 1] / spacing[1]
    ds.ImageOrientationPatient = [float(f"{v:.6f}") for v in (*row_dir, *col_dir)]
    ds.ImagePositionPatient = [float(f"{v:.4f}") for v in (lps @ np.array([0, 0, k, 1.0]))[:3]]
    ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]  # row spacing, column spacing
    ds.SliceThickness = float(spacing[2])
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.ascontiguousarray(plane.T).tobytes()  # rows x columns
    return ds


def _identity(
    patient_name: str,
    patient_id: str,
    study_uid: str,
    series_uid: str,
    frame_uid: str,
    series_number: int,
    description: str,
    study_date: str,
):
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.PatientName, ds.PatientID = patient_name, patient_id
    ds.PatientBirthDate, ds.PatientSex = "", "O"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = study_date, "120000", "1", ""
    ds.ReferringPhysicianName = ""
    ds.Modality, ds.SeriesNumber, ds.SeriesDescription = "MR", series_number, description
    ds.Manufacturer, ds.ImageType = "medseg-tests", ["ORIGINAL", "PRIMARY", "AXIAL"]
    return ds


#: (case file, patient name, patient id, study key, series number, description, slices) of :func:`write_crop_export`
CROP_EXPORT = (
    ("hippocampus_020", "Doe^Jane", "P1", "a", 1, "T1 hippocampus crop", None),
    ("hippocampus_020", "Doe^Jane", "P1", "a", 2, "Localizer", 2),
    ("hippocampus_107", "Roe^Richard", "P2", "b", 1, "T1 hippocampus crop", None),
    ("hippocampus_217", "Roe^Richard", "P2", "b", 2, "T1 hippocampus crop repeat", None),
)


def write_crop_export(root: Path, sample_data: Path, rows: tuple = CROP_EXPORT) -> dict[str, Path]:
    """A small export of real hippocampus crops: two patients, two studies, three image series and a
    2-slice localizer (skipped by the default rules). Returns series folder by SeriesInstanceUID."""
    from pydicom.uid import generate_uid

    studies: dict[str, str] = {}
    folders: dict[str, Path] = {}
    for name, patient, pid, study, number, description, slices in rows:
        study_uid = studies.setdefault(study, generate_uid())
        folder = root / f"study_{study}" / f"series_{number}"
        _, series_uid = write_mr_series(
            sample_data / "hippocampus" / "imagesTs" / f"{name}.nii.gz",
            folder,
            patient_name=patient,
            patient_id=pid,
            study_uid=study_uid,
            series_number=number,
            description=description,
            slices=slices,
        )
        folders[series_uid] = folder
    return folders


def write_dx_image(path: Path, pixels: np.ndarray, **attributes: object) -> Path:
    """A single-frame DX file of ``pixels`` (rows x columns, stored as uint16) with ``attributes`` set."""
    from pydicom import Dataset
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 0
    for key, value in attributes.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path
