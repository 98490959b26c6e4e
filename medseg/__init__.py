"""medseg: segment medical volumes from real scanner exports.

The data flow, one subpackage per stage::

    io/ (read DICOM, NIfTI, NRRD, MHA -> Volume)  ->  training/  ->  inference/  ->  io/ (write)

Everything passes one object, :class:`medseg.volume.Volume`: a voxel array plus its RAS affine.
"""

from medseg.errors import MedsegError
from medseg.volume import Volume, VolumeMeta

__version__ = "0.1.0"
__all__ = ["MedsegError", "Volume", "VolumeMeta", "__version__"]
