"""Training/validation splits: the fixed 80/20 split and k-fold cross-validation.

Both are deterministic from the seed: case ids are sorted, then shuffled with
``numpy.random.default_rng(seed)``. A run saves its splits to ``splits.json`` in the run folder
and reuses that file on resume, so the split never changes under a run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg.errors import ConfigError, InputError
from medseg.io.atomic import atomic_write_text

SPLIT_METHODS = ("fixed-80-20", "kfold")


@dataclass(frozen=True)
class Split:
    """One fold: ids to train on and ids to validate on (disjoint, sorted)."""

    train: tuple[str, ...]
    val: tuple[str, ...]


def make_splits(case_ids: Sequence[str], method: str = "fixed-80-20", folds: int = 5, seed: int = 0) -> list[Split]:
    """All folds of ``method``: one Split for ``fixed-80-20``, ``folds`` Splits for ``kfold``.

    Needs at least 2 cases (``folds`` for k-fold). Every case is validated exactly once across
    k folds; the fixed split validates ``round(0.2 * n)`` cases (at least 1).
    """
    ids = sorted(set(case_ids))
    if len(ids) != len(case_ids):
        raise InputError("case ids must be unique to split a dataset")
    order = list(np.random.default_rng(seed).permutation(len(ids)))
    shuffled = [ids[i] for i in order]
    if method == "fixed-80-20":
        if len(ids) < 2:
            raise InputError(f"the fixed 80/20 split needs at least 2 cases, the dataset has {len(ids)}")
        n_val = min(max(1, round(0.2 * len(ids))), len(ids) - 1)
        chunks = [shuffled[:n_val]]
    elif method == "kfold":
        if folds < 2 or len(ids) < folds:
            raise InputError(f"{folds}-fold cross-validation needs at least {max(folds, 2)} cases, got {len(ids)}")
        chunks = [list(c) for c in np.array_split(np.array(shuffled, dtype=object), folds)]
    else:
        raise ConfigError(f"unknown split {method!r}; choose one of {', '.join(SPLIT_METHODS)}")
    return [Split(tuple(sorted(set(ids) - set(val))), tuple(sorted(val))) for val in chunks]


def select_split(splits: Sequence[Split], fold: int) -> Split:
    """The Split for ``fold``, with a clear error when it does not exist."""
    if not 0 <= fold < len(splits):
        raise ConfigError(f"fold {fold} does not exist; this split has folds 0..{len(splits) - 1}")
    return splits[fold]


def save_splits(path: Path, splits: Sequence[Split], method: str, seed: int) -> None:
    """Write ``splits.json``: ``{"method", "seed", "folds": [{"train": [...], "val": [...]}, ...]}``."""
    payload = {"method": method, "seed": seed, "folds": [{"train": list(s.train), "val": list(s.val)} for s in splits]}
    atomic_write_text(path, json.dumps(payload, indent=1) + "\n")


def load_splits(path: Path) -> list[Split]:
    """Read ``splits.json`` written by :func:`save_splits`."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return [Split(tuple(f["train"]), tuple(f["val"])) for f in data["folds"]]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(f"{path} is not a valid splits file ({exc}); delete it to recreate the split") from None


def splits_for_run(path: Path, case_ids: Sequence[str], method: str, folds: int, seed: int) -> list[Split]:
    """Reuse ``path`` when it exists and covers exactly ``case_ids``; otherwise create and save it."""
    if path.is_file():
        splits = load_splits(path)
        known = set(splits[0].train) | set(splits[0].val)
        if known != set(case_ids):
            raise InputError(
                f"{path} was made for other cases than the dataset now has; delete it or use a new run folder"
            )
        return splits
    splits = make_splits(case_ids, method, folds, seed)
    save_splits(path, splits, method, seed)
    return splits
