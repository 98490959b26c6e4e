"""DICOM scanner exports -> series -> :class:`medseg.volume.Volume` (RAS).

Typical use::

    from medseg.io.dicom import discover_series, format_series_table, select_series, load_series

    infos = discover_series("export/")          # headers only, every series (images and others)
    print(format_series_table(infos))
    series = load_series(select_series(infos, "t1*"))   # checked geometry, decoded pixels
    volume = series.volume                       # RAS, [i, j, k(, t)]

or in one call ``load_volume("export/", select="t1*")``. See docs/dicom.md.
"""

from __future__ import annotations

from medseg.io.dicom.discover import discover_series, format_series_table, series_of_datasets
from medseg.io.dicom.load import MIN_SLICES, load_series, load_volume
from medseg.io.dicom.select import select_series
from medseg.io.dicom.series import DicomSeries, SeriesInfo

__all__ = [
    "MIN_SLICES",
    "DicomSeries",
    "SeriesInfo",
    "discover_series",
    "format_series_table",
    "load_series",
    "load_volume",
    "select_series",
    "series_of_datasets",
]
