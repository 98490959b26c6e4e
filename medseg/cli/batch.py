"""``medseg batch INPUT -m MODEL -o OUTDIR``: segment every selected series of an export, resumably."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from medseg.choices import EXECUTORS
from medseg.cli.archive_options import add_archive_options, archive_input, archive_options
from medseg.cli.options import add_prediction_options, output_options, predict_options
from medseg.pretrained import resolve_model_path

if TYPE_CHECKING:
    from medseg.batch.inference_engine import PredictEngine
    from medseg.batch.runner import BatchOptions

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``batch`` subcommand."""
    p = subparsers.add_parser(
        "batch",
        help="segment many studies: resumable, parallel, with a ledger and an HTML report",
        description="Segment every selected series of a scanner export (or every row of a CSV manifest) into "
        "OUTDIR. A ledger in OUTDIR makes reruns resume; failed cases do not stop the run. Exit code 0 when all "
        "cases are done, 3 when some failed, 2 for bad input or options.",
    )
    p.add_argument(
        "input",
        metavar="INPUT",
        help="export folder (searched recursively), volume file, CSV manifest "
        "(case,image[,...]), or a DICOM archive: http(s)://HOST/dicom-web or dimse://AET@HOST:PORT",
    )
    p.add_argument(
        "-m",
        "--model",
        type=resolve_model_path,
        action="append",
        default=[],
        metavar="FOLDER",
        help="trained model folder or a shipped model name (hippocampus); repeat for an ensemble",
    )
    p.add_argument(
        "-o", "--output", type=Path, required=True, metavar="OUTDIR", help="output folder (ledger, cases/, report)"
    )
    add_batch_options(p)
    add_prediction_options(p)
    add_archive_options(p)
    p.set_defaults(func=run)


def add_batch_options(p: argparse.ArgumentParser, dry_run: bool = True) -> None:
    """The options of a batch run (selection recipe, workers, resume, naming), shared with ``watch`` and ``listen``."""
    p.add_argument("--recipe", type=Path, metavar="TOML", help="series selection rules ([select] table)")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="worker processes (local) or actors (ray), each loading the model once (default 1)",
    )
    p.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help="where the workers run: local processes or a Ray cluster (default local)",
    )
    if dry_run:
        p.add_argument(
            "--dry-run", action="store_true", help="list what would run and why series are skipped; write nothing"
        )
    p.add_argument("--force", action="store_true", help="redo cases that are already done")
    p.add_argument("--retry-failed", action="store_true", help="run failed cases again")
    p.add_argument(
        "--pseudonymise", action="store_true", help="pseudonymised output names; the mapping goes to a separate CSV"
    )
    p.add_argument(
        "--mapping",
        type=Path,
        metavar="CSV",
        help="where to write the pseudonym mapping (default OUTDIR/pseudonym_map.csv)",
    )
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="fail a case that takes longer than this")
    p.add_argument("--ray-address", metavar="ADDRESS", help="Ray cluster to join (default: RAY_ADDRESS or a local Ray)")
    p.add_argument(
        "--gpus-per-worker", type=float, default=0.0, metavar="G", help="GPUs each Ray actor reserves (default 0)"
    )


def make_engine(args: argparse.Namespace) -> PredictEngine:
    """The inference engine for the chosen models and the prediction options (as ``medseg predict`` takes them)."""
    from medseg.batch.engine import check_model_folders
    from medseg.batch.inference_engine import PredictEngine
    from medseg.inference.loading import read_spec

    check_model_folders(args.model)
    labels = read_spec(args.model[0]).labels
    return PredictEngine(tuple(args.model), predict_options(args), output_options(args, labels))


def batch_options(args: argparse.Namespace) -> BatchOptions:
    from medseg.batch.runner import BatchOptions
    from medseg.errors import ConfigError

    if args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.workers}")
    if args.timeout is not None and args.timeout <= 0:
        raise ConfigError(f"--timeout must be positive, got {args.timeout}")
    return BatchOptions(
        outdir=args.output,
        workers=args.workers,
        executor=args.executor,
        force=args.force,
        retry_failed=args.retry_failed,
        timeout=args.timeout,
        threads=args.threads,
        progress=not getattr(args, "quiet", False),
        ray_address=args.ray_address,
        gpus_per_worker=args.gpus_per_worker,
        extra={"models": [str(m) for m in args.model]},
    )


def _channels(models: list[Path]) -> int:
    """Input channels of the first model; 1 without one (a dry run lists every volume file as a case)."""
    from medseg.inference.loading import read_spec

    return read_spec(models[0]).in_channels if models else 1


def _print_dry_run(lines: list[tuple[str, str, str]]) -> None:
    width = max((len(c) for c, _, _ in lines), default=4)
    print(f"{'case'.ljust(width)}  action  reason")
    for case_id, action, reason in lines:
        print(f"{case_id.ljust(width)}  {action.ljust(6)}  {reason}")
    totals = {a: sum(1 for _, x, _ in lines if x == a) for a in ("run", "keep", "skip", "fail")}
    print(
        f"{totals['run']} to run, {totals['keep']} kept from earlier runs, {totals['skip']} skipped, {totals['fail']} failing"
    )


def run(args: argparse.Namespace) -> int:
    """Run the batch; returns 0 (all done), 3 (some failed) or raises MedsegError (exit 2)."""
    from medseg.batch.session import dry_run, run_session
    from medseg.cases import load_rules
    from medseg.errors import ConfigError

    rules = load_rules(args.recipe)
    options = batch_options(args)
    source = archive_input(args)
    if args.dry_run:
        _print_dry_run(
            dry_run(
                source,
                args.output,
                rules,
                args.pseudonymise,
                args.force,
                args.retry_failed,
                args.series,
                _channels(args.model),
            )
        )
        return 0
    if not args.model:
        raise ConfigError("give the model folder with -m MODEL (or use --dry-run to only list the cases)")
    result = run_session(
        source,
        lambda: make_engine(args),
        options,
        rules,
        args.pseudonymise,
        args.mapping,
        args.series,
        archive_options(args),
    )
    s = result.summary
    out = sys.stderr if getattr(args, "quiet", False) else sys.stdout
    print(
        f"batch: {s.done} done, {s.failed} failed in this run; {s.skipped_done} done before, "
        f"{s.kept_failed} failed before, {s.not_selected} series not selected. Report: {result.report_html}",
        file=out,
    )
    if result.pushes is not None:
        print(result.pushes.line(), file=out)
    return result.exit_code
