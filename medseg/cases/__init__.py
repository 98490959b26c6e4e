"""From one input path to cases: the one discovery, naming and series selection of ``medseg predict``
and ``medseg batch`` (see docs/architecture.md). Sits above :mod:`medseg.io`, below inference and batch.

Modules along the flow::

    discover.py   discover_cases(input, rules, namer, series=, channels=) -> Discovery
    rules.py      SelectionRules ([select] of a recipe), load_rules, series_reasons (--series)
    manifest.py   read_manifest (CSV: case,image[,image_*][,series])
    overwrite.py  check_output_outside_input, check_planned_outputs (never write over an input)
    naming.py     Namer (readable or pseudonymised case ids), sanitize, safe_join
    privacy.py    patient-name redaction: patient_name_parts, redact, redacting_logs, held_logs
    case.py       InputCase, Skipped, Discovery
    read.py       read_case(case, resample, allow_missing_slices=, values=) -> channel volumes (+ DicomSeries); case_series

Public API::

    from medseg.cases import discover_cases, read_case, SelectionRules, Namer

    found = discover_cases("export/", series=None, channels=1)
    for case in found.cases:
        volumes, dicom = read_case(case)
"""

from medseg.cases.case import Discovery, InputCase, Skipped
from medseg.cases.discover import discover_cases, series_case
from medseg.cases.manifest import read_manifest
from medseg.cases.naming import Namer, safe_join, sanitize
from medseg.cases.overwrite import check_output_outside_input, check_planned_outputs
from medseg.cases.read import case_series, read_case
from medseg.cases.rules import SelectionRules, load_rules, series_reasons, slice_plane

__all__ = [
    "Discovery",
    "InputCase",
    "Namer",
    "SelectionRules",
    "Skipped",
    "case_series",
    "check_output_outside_input",
    "check_planned_outputs",
    "discover_cases",
    "load_rules",
    "read_case",
    "read_manifest",
    "safe_join",
    "sanitize",
    "series_case",
    "series_reasons",
    "slice_plane",
]
