"""medseg: segment medical volumes from real scanner exports.

The data flow, one subpackage per stage::

    io/ (read DICOM, NIfTI, NRRD, MHA -> Volume)  ->  training/  ->  inference/  ->  io/ (write)

Everything passes one object, :class:`medseg.volume.Volume`: a voxel array plus its RAS affine.
Research scripts use the short API re-exported here (:mod:`medseg.api`, docs/python-api.md)::

    import medseg
    result = medseg.segment(medseg.read("scan.nii.gz"), model="hippocampus")
    medseg.write(result.labels, "labels.nii.gz")
"""

from medseg.api import load_model, read, run_batch, segment, write
from medseg.errors import MedsegError
from medseg.version import __version__
from medseg.volume import Volume, VolumeMeta

__all__ = ["MedsegError", "Volume", "VolumeMeta", "__version__", "load_model", "read", "run_batch", "segment", "write"]
