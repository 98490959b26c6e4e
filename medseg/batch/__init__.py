"""Batch runs over scanner exports: ``medseg batch`` (see docs/batch.md).

Modules along the flow::

    (cases come from medseg.cases: discovery, selection rules, naming, privacy, shared with predict)
    ledger.py           the SQLite ledger in OUTDIR (status, timings, outputs + SHA-256, model)
    runner.py           resume decisions and the driver loop  session.py   one invocation end to end
    engine.py           the Engine contract and per-case execution in workers
    inference_engine.py the real engine: Predictor once per worker, predict_case per case
    executor.py         driver <-> executor events          local.py / ray_executor.py  the workers
    report.py           summary.csv and report.html

Public API::

    from medseg.batch import run_session, dry_run, BatchOptions, load_rules, PredictEngine
"""

from medseg.batch.inference_engine import PredictEngine
from medseg.batch.runner import BatchOptions, BatchSummary
from medseg.batch.session import SessionResult, dry_run, run_session
from medseg.cases import SelectionRules, load_rules

__all__ = [
    "BatchOptions",
    "BatchSummary",
    "PredictEngine",
    "SelectionRules",
    "SessionResult",
    "dry_run",
    "load_rules",
    "run_session",
]
