"""The Ray backend on a local Ray instance: one model per actor, driver-only ledger, isolation."""

from __future__ import annotations

from pathlib import Path

import pytest

from medseg.batch.ledger import Ledger
from medseg.batch.runner import BatchOptions
from medseg.batch.session import run_session
from medseg.cases import SelectionRules

ray = pytest.importorskip("ray")  # about 7 s here, most of it starting Ray


@pytest.fixture(scope="module")
def local_ray():
    import test_batch_fakes

    ray.cloudpickle.register_pickle_by_value(test_batch_fakes)  # actors need not import the tests
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


def test_ray_actors_hold_one_model_each_and_record_like_local(local_ray, tmp_path: Path) -> None:
    from test_batch_fakes import FakeEngine, write_cases

    write_cases(tmp_path / "in", 5)
    engine = FakeEngine(fail_on=("case_001",), crash_on=("case_003",))
    options = BatchOptions(outdir=tmp_path / "out", workers=2, executor="ray", threads=1, progress=False)
    result = run_session(tmp_path / "in", lambda: engine, options, SelectionRules())
    assert result.summary.exit_code == 3
    with Ledger(tmp_path / "out" / "ledger.sqlite") as ledger:
        rows = {r.case_id: r for r in ledger.rows()}
        loads = ledger.model_loads(result.summary.run_id)
    assert [rows[c].status for c in sorted(rows)] == ["done", "failed", "done", "failed", "done"]
    assert "truncated" in rows["case_001"].error and "Ray worker died" in rows["case_003"].error
    assert len(loads) >= 2 and len({l["worker"] for l in loads}) == len(loads)  # one load per actor, ever
    assert {rows[c].worker for c in ("case_000", "case_002", "case_004")} <= {l["worker"] for l in loads}
    assert all((tmp_path / "out" / o.path).is_file() for r in rows.values() for o in r.outputs)
    again = run_session(
        tmp_path / "in",
        lambda: FakeEngine(),
        BatchOptions(outdir=tmp_path / "out", workers=2, executor="ray", threads=1, progress=False, retry_failed=True),
        SelectionRules(),
    )
    assert (again.summary.ran, again.summary.exit_code) == (2, 0)
