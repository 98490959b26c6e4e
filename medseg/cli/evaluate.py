"""``medseg evaluate PRED REF``: Dice, HD95 and surface Dice per class per case, CSV + summary;
with ``--instances``: DSB2018 score, AP@0.5, box mAP and object counts of instance maps."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` subcommand."""
    parser = subparsers.add_parser(
        "evaluate",
        help="score predicted label maps against references (Dice, HD95, NSD)",
        description="Score predicted label maps against reference label maps: Dice, 95th-percentile Hausdorff "
        "distance (mm) and normalised surface Dice per class per case. PRED and REF are two label "
        "files or two folders of label files matched by case name. Grids must match. With --instances, "
        "instance maps are scored instead: DSB2018 score, AP@0.5, COCO box mAP and object counts.",
    )
    parser.add_argument("prediction", type=Path, metavar="PRED", help="predicted label file or folder")
    parser.add_argument("reference", type=Path, metavar="REF", help="reference label file or folder")
    parser.add_argument("-o", "--output", type=Path, help="write per-case metrics to this CSV file")
    parser.add_argument(
        "--labels",
        nargs="+",
        metavar="VALUE[=NAME]",
        help="label values to score, optionally named, e.g. 1=Anterior 2=Posterior "
        "(default: every non-zero value found)",
    )
    parser.add_argument(
        "--tolerance", type=float, default=1.0, metavar="MM", help="surface Dice tolerance in mm (default 1)"
    )
    parser.add_argument(
        "--instances",
        action="store_true",
        help="PRED and REF are instance maps (0 = background, one id per object): report the "
        "DSB2018 score, AP@0.5, COCO box mAP and object counts instead of per-class metrics",
    )
    parser.set_defaults(func=run)


def parse_labels(items: list[str] | None) -> tuple[list[int] | None, dict[int, str]]:
    """``["1=Anterior", "2"]`` -> ([1, 2], {1: "Anterior"}); ConfigError on a non-integer value."""
    from medseg.errors import ConfigError

    if not items:
        return None, {}
    values, names = [], {}
    for item in items:
        value, _, name = item.partition("=")
        try:
            label = int(value)
        except ValueError:
            raise ConfigError(
                f"--labels entry {item!r} must be an integer label value, optionally VALUE=NAME"
            ) from None
        if label <= 0:
            raise ConfigError(f"--labels entry {item!r}: label values to score must be positive (0 is background)")
        values.append(label)
        if name:
            names[label] = name
    return values, names


def run(args: argparse.Namespace) -> int:
    """Evaluate, print the summary table, write the CSV when asked."""
    import logging

    from medseg.errors import ConfigError
    from medseg.evaluation import evaluate, format_summary, summarize, write_metrics_csv

    if args.tolerance <= 0:
        raise ConfigError(f"--tolerance must be positive (mm), got {args.tolerance}")
    if args.instances:
        return run_instances(args)
    classes, names = parse_labels(args.labels)
    log = logging.getLogger("medseg.evaluate")
    results = evaluate(
        args.prediction, args.reference, classes, args.tolerance, on_case=lambda r: log.debug("evaluated %s", r.case)
    )
    print(f"{len(results)} case(s)")
    print(format_summary(summarize(results), names, args.tolerance))
    if args.output:
        write_metrics_csv(results, args.output, names)
        print(f"per-case metrics: {args.output}")
    return 0


def run_instances(args: argparse.Namespace) -> int:
    """Evaluate instance maps, print the summary, write the per-image CSV and summary JSON when asked."""
    import logging

    from medseg.errors import ConfigError
    from medseg.evaluation.instance_eval import evaluate_instances, format_instance_summary, write_instance_reports

    if args.labels:
        raise ConfigError(
            "--labels selects classes of label maps; instance maps are scored class-agnostic, drop --labels"
        )
    log = logging.getLogger("medseg.evaluate")
    evaluation = evaluate_instances(
        args.prediction, args.reference, on_case=lambda s: log.debug("evaluated %s", s.case)
    )
    print(format_instance_summary(evaluation))
    if args.output:
        summary = write_instance_reports(evaluation, args.output)
        print(f"per-image metrics: {args.output}; summary: {summary}")
    return 0
