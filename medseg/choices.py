"""The names a user chooses from, shared by the library's checks and the command-line parsers.

Import-light (no torch), so ``medseg --help`` stays instant while ``medseg predict`` and
``medseg batch`` offer exactly the choices the library accepts.
"""

from __future__ import annotations

#: Where the network runs (medseg.model.runtime).
DEVICES = ("auto", "cpu", "cuda")
#: Numeric precision of the network (medseg.model.runtime).
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: The inference runtime that runs the network (medseg.inference.backends).
BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
#: Test-time augmentation (medseg.inference.options).
TTA_MODES = ("off", "all")
#: Keep-largest-component post-processing (medseg.inference.postprocess).
LARGEST_COMPONENT_MODES = ("auto", "on", "off")
#: Where ``medseg batch`` runs its workers (medseg.batch.runner).
EXECUTORS = ("local", "ray")
#: What the voxel values of a DICOM series are: rescaled (modality) or real-world values (medseg.io.dicom.load).
DICOM_VALUES = ("rescaled", "real-world")
