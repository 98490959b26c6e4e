"""Train a recipe end to end by composing the small pieces of :mod:`medseg.training`.

``train(recipe, TrainOptions(run_dir))`` prepares the data (dataset -> plan -> cache -> split),
builds the network, loss, optimiser and schedule, runs epochs (``loop.run_epoch``), validates
every ``validation.every`` epochs on the cached preprocessed cases (``Session.validate``),
writes logs and checkpoints after every epoch, stops at the epoch budget or the wall-clock
budget, then runs the final validation on the source files through the inference ``Predictor``
(``Session.validate_final``), decides the post-processing and writes the model folder
``RUN_DIR/model`` whose metrics are what ``medseg predict`` + ``medseg evaluate`` report on the
validation cases (see :mod:`medseg.training.validation`).

Run folder::

    RUN_DIR/recipe.json  budget.json  plan.json  splits.json  training_log.csv  curves.png
    RUN_DIR/checkpoint_last.pt  checkpoint_best.pt  tensorboard/ (when installed)
    RUN_DIR/model/       the self-contained model folder (see model_folder.py)
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from medseg.errors import ConfigError
from medseg.io.atomic import atomic_write_text, ensure_writable_dir
from medseg.model.folder import ModelSpec, save_model_folder
from medseg.model.runtime import package_versions
from medseg.training import checkpoint as ckpt
from medseg.training import distributed
from medseg.training.checkpoint import Progress
from medseg.training.instance_session import InstanceSession
from medseg.training.logs import TensorBoard, plot_curves, write_log_csv
from medseg.training.loop import run_epoch
from medseg.training.progress import TrainingBar
from medseg.training.session import Session, build_session, network_spec, schedule_budget
from medseg.training.validation import ValidationResult, decide_postprocessing, validation_settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainOptions:
    """Command-line level options; ``None`` keeps the recipe's value.

    ``minutes`` and ``epochs`` set the run's total budget (counting earlier sessions of a resumed
    run); a resumed run keeps the values an earlier session was given until new ones are
    (``RUN_DIR/budget.json``). ``on_epoch_end(progress)`` is called after each epoch's
    checkpoint is written (an exception raised there stops training as a kill would).
    """

    run_dir: Path
    resume: bool = False
    fold: int | None = None
    minutes: float | None = None
    device: str | None = None
    progress_bar: bool = True
    on_epoch_end: Callable[[Progress], None] | None = field(default=None, compare=False)
    epochs: int | None = None


#: the --minutes/--epochs values given to a run, kept for its resumed sessions
BUDGET_FLAGS = "budget.json"


def apply_options(recipe, options: TrainOptions, budget: dict[str, Any] | None = None):
    """The recipe with ``--fold``, ``--device`` and the budget applied.

    ``budget`` holds ``minutes``/``epochs`` values (default: those of ``options``; see
    :func:`budget_flags`). Raises ConfigError for a non-positive budget.
    """
    if options.fold is not None:
        recipe = replace(recipe, dataset=replace(recipe.dataset, fold=options.fold))
    budget = _given(options) if budget is None else budget
    if budget.get("minutes") is not None and budget["minutes"] <= 0:
        raise ConfigError(f"--minutes must be positive, got {budget['minutes']}")
    if budget.get("epochs") is not None and budget["epochs"] < 1:
        raise ConfigError(f"--epochs must be at least 1, got {budget['epochs']}")
    if budget:
        recipe = replace(recipe, budget=replace(recipe.budget, **budget))
    if options.device is not None:
        recipe = replace(recipe, runtime=replace(recipe.runtime, device=options.device))
    return recipe


def _given(options: TrainOptions) -> dict[str, Any]:
    return {k: v for k, v in (("minutes", options.minutes), ("epochs", options.epochs)) if v is not None}


def budget_flags(run_dir: Path, options: TrainOptions) -> dict[str, Any]:
    """The ``--minutes``/``--epochs`` values of this run: this command's, else (on ``--resume``) those
    an earlier session was given (``RUN_DIR/budget.json``), so a plain ``--resume`` keeps the budget
    and a new value replaces it. Keys nobody gave are absent (the recipe's values apply)."""
    saved: dict[str, Any] = {}
    path = run_dir / BUDGET_FLAGS
    if options.resume and path.is_file():
        try:
            saved = {
                k: v
                for k, v in json.loads(path.read_text(encoding="utf-8")).items()
                if k in ("minutes", "epochs") and v is not None
            }
        except (OSError, ValueError, AttributeError):
            log.warning("%s is unreadable; using the recipe's budget and this command's options", path)
    return {**saved, **_given(options)}


def check_run_dir(run_dir: Path, resume: bool) -> None:
    """A fresh run needs a folder without a checkpoint; ``--resume`` needs one with it."""
    has_checkpoint = (run_dir / ckpt.LAST).is_file()
    if has_checkpoint and not resume:
        raise ConfigError(f"{run_dir} already holds a training run; pass --resume to continue it or choose another -o")
    if resume and not has_checkpoint:
        raise ConfigError(f"--resume: {run_dir} has no {ckpt.LAST} to continue from; start without --resume")
    ensure_writable_dir(run_dir)


def save_recipe(run_dir: Path, recipe, resume: bool) -> None:
    """Keep the recipe beside the run; on resume, warn about sections that changed."""
    path = run_dir / "recipe.json"
    current = recipe.to_dict()
    if resume and path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        changed = [k for k in current if saved.get(k) != current[k]]
        if changed:
            log.warning("resuming with a recipe that differs in: %s", ", ".join(changed))
    atomic_write_text(path, json.dumps(current, indent=2) + "\n")


def train(recipe, options: TrainOptions) -> Path:
    """Train ``recipe`` into ``options.run_dir``; returns the model folder ``run_dir/model``."""
    run_dir = Path(options.run_dir)
    apply_options(recipe, options)  # checks the options before anything touches the folder
    check_run_dir(run_dir, options.resume)
    flags = budget_flags(run_dir, options)
    recipe = apply_options(recipe, options, flags)
    if distributed.context_from_env().is_main:  # under torchrun only rank 0 writes files
        save_recipe(run_dir, recipe, options.resume)
        atomic_write_text(run_dir / BUDGET_FLAGS, json.dumps(flags, indent=2) + "\n")
    session = build_session(recipe, run_dir, options.resume)
    board = TensorBoard(run_dir / "tensorboard") if session.dist.is_main else None
    try:
        progress = session.restore(run_dir / ckpt.LAST) if options.resume else Progress()
        if options.resume and _finished(session, progress):
            log.warning(
                "the budget is already spent (%s); nothing more to train, pass a larger --minutes or "
                "--epochs to continue",
                _spent(session, progress),
            )
        progress = run_epochs(session, progress, board, options)
        return finish(session, progress, board) if session.dist.is_main else run_dir / "model"
    finally:
        if board is not None:
            board.close()
        distributed.cleanup(session.dist)


def _spent(session: Session, progress: Progress) -> str:
    """``"epoch 4 of 4, 2.1 of 2.0 minutes"``: where the run stands against its budget."""
    budget = session.recipe.budget
    text = f"epoch {progress.epoch} of {budget.epochs}"
    if budget.minutes:
        text += f", {progress.elapsed_seconds / 60:.1f} of {budget.minutes:g} minutes"
    return text


def budget_seconds(recipe) -> float | None:
    """The wall-clock budget in seconds (None without one)."""
    return schedule_budget(recipe)[1]


def run_epochs(session: Session, progress: Progress, board: TensorBoard | None, options: TrainOptions) -> Progress:
    """Epoch loop from ``progress`` until the epoch or time budget ends; checkpoints every epoch.

    Validates every ``validation.every`` epochs except after the last one (``finish`` does that).
    """
    batches = session.batches(progress.iteration)
    bar = _progress_bar(session, progress, options.progress_bar and session.dist.is_main)
    try:
        while not _finished(session, progress):
            row = train_one_epoch(session, progress, batches, bar, budget_seconds(session.recipe))
            if not _finished(session, progress) and progress.epoch % session.recipe.validation.every == 0:
                row.update(validation_columns(session, progress, *_timed(session.validate)))
                progress.elapsed_seconds = distributed.all_reduce(progress.elapsed_seconds, session.dist, "max")
            progress.history.append(row)
            _write_epoch_outputs(session, progress, board, row)
            bar.show(progress.iteration, progress.elapsed_seconds, force=True)
            if options.on_epoch_end is not None:
                options.on_epoch_end(progress)
    finally:
        bar.close()
        del batches  # stops DataLoader workers
    return progress


def _finished(session: Session, progress: Progress) -> bool:
    budget = budget_seconds(session.recipe)
    out_of_time = budget is not None and progress.elapsed_seconds >= budget
    return progress.epoch >= session.recipe.budget.epochs or out_of_time


def _timed(function: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    return function(), time.perf_counter() - start


def train_one_epoch(
    session: Session, progress: Progress, batches: Iterator, bar: TrainingBar, budget: float | None
) -> dict:
    """One epoch (cut short when the time budget ends); updates ``progress``; returns its log row."""
    start, spent_before = time.perf_counter(), progress.elapsed_seconds
    local = lambda: spent_before + time.perf_counter() - start  # noqa: E731
    elapsed = distributed.agreed(local, session.dist)  # same on all ranks (a collective: every rank calls it)
    done = 0

    def set_lr(iteration: int) -> float:
        return session.schedule.step(iteration, elapsed())

    def on_iteration(loss: torch.Tensor) -> None:
        nonlocal done
        done += 1
        bar.show(progress.iteration + done, local(), loss)

    stop = (lambda: elapsed() >= budget) if budget else None
    result = run_epoch(
        session.step,
        batches,
        session.recipe.budget.iterations_per_epoch,
        set_lr,
        progress.iteration,
        on_iteration,
        should_stop=stop,
    )
    progress.epoch += 1
    progress.iteration += result.iterations
    progress.elapsed_seconds = elapsed()
    loss = distributed.all_reduce(result.loss, session.dist)  # mean over ranks
    return {
        "epoch": progress.epoch,
        "iteration": progress.iteration,
        "train_loss": loss,
        "lr": session.step.optimizer.param_groups[0]["lr"],
        "epoch_seconds": result.seconds,
        "iterations_per_second": result.iterations / max(result.seconds, 1e-9),
    }


def validation_columns(session: Session, progress: Progress, result: ValidationResult, seconds: float) -> dict:
    """Log columns of a validation; counts its time in the budget and keeps the best checkpoint."""
    progress.elapsed_seconds += seconds
    row = session.validation_row(result, seconds)
    if result.mean > progress.best_score:
        progress.best_score, progress.best_epoch = result.mean, progress.epoch
        session.save_checkpoint(session.run_dir / ckpt.BEST, progress)
    return row


def _write_epoch_outputs(
    session: Session, progress: Progress, board: TensorBoard | None, row: dict, what: str = "epoch"
) -> None:
    if not session.dist.is_main:
        return
    write_log_csv(session.run_dir / "training_log.csv", progress.history)
    assert board is not None  # rank 0 always has one (``train``)
    board.log(row, progress.iteration)
    session.save_checkpoint(session.run_dir / ckpt.LAST, progress)
    message = ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k not in ("epoch", "iteration"))
    log.info("%s %d (iteration %d): %s", what, progress.epoch, progress.iteration, message)


def finish(session: Session, progress: Progress, board: TensorBoard | None) -> Path:
    """Final validation on the source files, logged (before post-processing) on the last
    epoch's row; the post-processing decision; curves; the model folder, whose metrics are the
    validation scores with that post-processing applied."""
    result, seconds = _timed(session.validate_final)
    if progress.history and "val_dice_mean" not in progress.history[-1]:
        row = progress.history[-1]
        row.update(validation_columns(session, progress, result, seconds))
        _write_epoch_outputs(session, progress, board, row, "final validation, epoch")
    curves = plot_curves(progress.history, session.run_dir / "curves.png")
    if isinstance(session, InstanceSession):  # instance metrics, no class post-processing
        spec = session.model_spec(progress, result)
    else:
        postprocessing = decide_postprocessing(result, session.plan.labels)
        final = result.with_postprocessing(postprocessing["keep_largest_component"])
        spec = model_spec(session, progress, final, postprocessing)
    folder = save_model_folder(
        session.run_dir / "model",
        session.network,
        spec,
        session.plan,
        log_csv=session.run_dir / "training_log.csv",
        curves=curves,
    )
    log.info(
        "model folder: %s (validation %s)",
        folder,
        spec.metrics.get("dice") or {k: spec.metrics.get(k) for k in ("dsb_score", "ap50")},
    )
    return folder


def model_spec(session: Session, progress: Progress, result: ValidationResult, postprocessing: dict) -> ModelSpec:
    """The ModelSpec of the trained network (inference network: no deep supervision), with the
    post-processing decision and ``result`` (the final validation with it applied) as metrics."""
    rows = progress.history
    speed = [r["iterations_per_second"] for r in rows if "iterations_per_second" in r]
    metrics: dict[str, Any] = {
        "dice": {session.class_name(c): round(float(d), 6) for c, d in zip(result.classes, result.mean_per_class)},
        "mean_dice": round(result.mean, 6),
        "validation_cases": len(result.case_ids),
        "validation": validation_settings(session.predictor),
        "epochs": progress.epoch,
        "iterations": progress.iteration,
        "training_seconds": round(progress.elapsed_seconds, 1),
        "iterations_per_second": round(sum(speed) / len(speed), 3) if speed else None,
        "best_epoch": progress.best_epoch,
        "best_mean_dice": round(progress.best_score, 6),
        "device": str(session.device),
        "precision": session.precision,
    }
    return replace(
        network_spec(session.recipe, session.plan),
        postprocessing=postprocessing,
        versions=package_versions(),
        metrics=metrics,
    )


def _progress_bar(session: Session, progress: Progress, enabled: bool) -> TrainingBar:
    """The progress bar against whichever budget ends the run first (see :mod:`medseg.training.progress`)."""
    budget = session.recipe.budget
    return TrainingBar(
        session.recipe.name,
        budget.epochs * budget.iterations_per_epoch,
        budget_seconds(session.recipe),
        progress.iteration,
        progress.elapsed_seconds,
        enabled,
    )
