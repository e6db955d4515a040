"""The training loop both tasks share: one `fit_phase` per phase of a run.

A phase is one `model.fit` with the callbacks every run needs:
- early stopping on the monitored metric, and the phase's best weights restored at its end (or, with
  `keep="last"`, the last epoch's weights kept: every epoch counts as the best);
- an atomic best-model checkpoint, `out_dir/model.keras`, so a run stopped at any point (Kaggle's 12-hour
  limit, a lost session) still leaves its best model among its outputs;
- `keras.callbacks.BackupAndRestore` under `out_dir/backup/<phase>`: re-running the same command resumes
  the interrupted epoch count, and a finished phase is skipped with its best weights reloaded;
- a time budget (`Deadline`) checked after every batch and before every epoch, and with a `Schedule` the
  learning rate planned over the epochs that fit in it (one rule for both tasks and every phase);
- a `history.csv` row per epoch, with the phase name, for the learning-curve plot.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from an2dl_kit.config import KEEP_WEIGHTS
from an2dl_kit.files import atomic_path, write_json
from an2dl_kit.pipeline import Batches
from an2dl_kit.runtime import log

HISTORY_FILE = "history.csv"
MODEL_FILE = "model.keras"
# BackupAndRestore's folder inside a phase's backup folder.
BACKUP_STATE = "state"
# Stop when the time left is below the expected epoch time (`epoch_pace`) times this margin.
EPOCH_TIME_MARGIN = 1.1


class Deadline:
    """A wall-clock budget shared by every phase of one run.

    Args:
        budget_s: seconds from now until training must stop; None means no limit.
        reserve_s: seconds held back from training for inference and writing outputs.
        clock: the seconds counter the budget and the epoch timings read; tests pass a simulated one so that
            a slow machine is deterministic.
    """

    def __init__(self, budget_s: float | None, reserve_s: float = 0.0, clock: Callable[[], float] = time.monotonic):
        self.budget_s = budget_s
        self.reserve_s = reserve_s
        self.clock = clock
        self._start = clock()

    def elapsed(self) -> float:
        return self.clock() - self._start

    def remaining(self) -> float:
        if self.budget_s is None:
            return math.inf
        return self.budget_s - self.reserve_s - self.elapsed()


@dataclass
class PhaseResult:
    name: str
    epochs_run: int
    best_epoch: int
    best_value: float
    seconds: float
    stopped_by_budget: bool
    resumed: bool = False
    history: dict[str, list[float]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The result without the per-epoch history, for metrics.json."""
        out = asdict(self)
        del out["history"]
        return out


def _improved(value: float, best: float | None, mode: str) -> bool:
    if best is None or not np.isfinite(best):
        return np.isfinite(value)
    return value < best if mode == "min" else value > best


@dataclass(frozen=True)
class Schedule:
    """The learning rate as a function of training progress, 0 at the first batch and 1 at the end of the
    last epoch that fits: `_BudgetPlanner` re-plans that end after every epoch, so a budget-limited run still
    completes its schedule instead of being cut at a high rate. Both tasks and every phase use it.

    Args:
        peak: the highest rate.
        warmup: ramp linearly from 0 to `peak` instead of decaying.
        floor: the cosine's lowest rate as a fraction of `peak`.
        first_period: the first cosine period as a fraction of the run (1.0: one cosine, no restart); later
            periods grow by `t_mul` (Keras' CosineDecayRestarts with m_mul 1, in progress units).
        t_mul: period growth factor after each restart.
    """

    peak: float
    warmup: bool = False
    floor: float = 0.01
    first_period: float = 1.0
    t_mul: float = 2.0

    def rate(self, progress: float) -> float:
        progress = min(max(progress, 0.0), 1.0)
        if self.warmup:
            return self.peak * progress
        period, start = self.first_period, 0.0
        while start + period <= progress and start + period < 1.0 and period > 0:
            start, period = start + period, period * self.t_mul
        fraction = min((progress - start) / period, 1.0) if period > 0 else 1.0
        return self.peak * (self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * fraction)))


def epoch_pace(seconds: list[float]) -> float:
    """Seconds an epoch (or the saving after it) is expected to take: the median after the first epoch, which
    also pays for tracing the evaluation step (or writing the first checkpoint); a median, so that one slow
    epoch on a shared machine does not halve the plan."""
    if not seconds:
        return 0.0
    return float(np.median(seconds[1:])) if len(seconds) > 1 else float(seconds[0])


def tracing_excess(batch_seconds: list[float]) -> float:
    """How much longer the first batch of a loop took than the median of the others: in the first epoch of a
    phase, the time spent tracing and compiling the step, which later epochs do not pay again."""
    if len(batch_seconds) < 2:
        return 0.0
    return max(batch_seconds[0] - float(np.median(batch_seconds[1:])), 0.0)


class _BudgetPlanner(keras.callbacks.Callback):
    """Fit training into the deadline: stop after the batch that exhausts it or before an epoch that would
    not fit, and with a `Schedule` set the learning rate every batch from the progress over the epochs that
    fit. Progress never goes back, so the rate never jumps up again.

    An epoch costs its training and validation (timed without their tracing) plus what the callbacks after
    this one spend at its end, chiefly saving an improved model (seconds for a ConvNeXt); that part of the
    epoch that just ended is still to come when the decision is made, so it is held back from the time left.
    """

    def __init__(self, deadline: Deadline, epochs: int, steps_per_epoch: int, schedule: Schedule | None):
        super().__init__()
        self.deadline, self.epochs, self.schedule = deadline, epochs, schedule
        self.clock = deadline.clock
        self.steps_per_epoch = max(int(steps_per_epoch), 1)
        self.planned, self.progress, self.epoch = epochs, 0.0, 0
        self.seconds: list[float] = []
        self.closing_seconds: list[float] = []
        self._epoch_end: float | None = None
        self.triggered = False

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self._epoch_start = epoch, self.clock()
        if self._epoch_end is not None:
            self.closing_seconds.append(self._epoch_start - self._epoch_end)
        self._batches: dict[str, list[float]] = {"train": [], "test": []}

    def on_test_batch_begin(self, batch, logs=None):
        self._batch_start = self.clock()

    def on_test_batch_end(self, batch, logs=None):
        if hasattr(self, "_batches"):  # validation inside fit, not a separate evaluate()
            self._batches["test"].append(self.clock() - self._batch_start)

    def on_train_batch_begin(self, batch, logs=None):
        self._batch_start = self.clock()
        if self.schedule is None:
            return
        progress = (self.epoch + batch / self.steps_per_epoch) / max(self.planned, 1)
        self.progress = max(self.progress, progress)
        self.model.optimizer.learning_rate.assign(self.schedule.rate(self.progress))

    def on_train_batch_end(self, batch, logs=None):
        self._batches["train"].append(self.clock() - self._batch_start)
        if self.deadline.remaining() <= 0:
            self._stop()

    def on_epoch_end(self, epoch, logs=None):
        self._epoch_end = self.clock()
        excess = sum(tracing_excess(seconds) for seconds in self._batches.values())
        self.seconds.append(self._epoch_end - self._epoch_start - excess)
        closing = epoch_pace(self.closing_seconds)
        step = (epoch_pace(self.seconds) + closing) * EPOCH_TIME_MARGIN
        remaining = self.deadline.remaining() - closing
        if math.isfinite(remaining) and step > 0:
            self.planned = min(self.epochs, epoch + 1 + int(max(remaining, 0.0) // step))
        if remaining < step:
            self._stop()
        if logs is not None and self.schedule is not None:
            logs["learning_rate"] = float(self.schedule.rate(self.progress))

    def _stop(self):
        if not self.triggered:
            log(f"time budget reached ({self.deadline.remaining():.0f} s left): stopping training")
        self.triggered = True
        self.model.stop_training = True


class _BestKeeper(keras.callbacks.Callback):
    """Track the phase's best epoch; save its weights, and the full model when it beats the whole run. With
    `keep_last` every epoch is the best, so the phase ends with, and resumes from, its last epoch."""

    def __init__(self, monitor: str, mode: str, phase_dir: Path, model_path: Path, run_best: float | None,
                 keep_last: bool = False):
        super().__init__()
        self.monitor, self.mode, self.keep_last = monitor, mode, keep_last
        self.phase_dir, self.model_path = phase_dir, model_path
        self.state_path = phase_dir / "best.json"
        self.weights_path = phase_dir / "best.weights.h5"
        state = json.loads(self.state_path.read_text()) if self.state_path.exists() else {}
        self.best_value: float | None = state.get("value")
        self.best_epoch: int = state.get("epoch", -1)
        self.run_best = run_best

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            raise KeyError(f"monitored metric {self.monitor!r} not in the epoch logs: {sorted(logs)}")
        value = float(logs[self.monitor])
        if not self.improved(value, self.best_value):
            return
        self.best_value, self.best_epoch = value, epoch
        self.phase_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.weights_path) as tmp:
            self.model.save_weights(tmp)
        write_json(self.state_path, {"value": value, "epoch": epoch})
        if self.improved(value, self.run_best):
            self.run_best = value
            with atomic_path(self.model_path) as tmp:
                self.model.save(tmp)

    def improved(self, value: float, best: float | None) -> bool:
        return self.keep_last or _improved(value, best, self.mode)

    @property
    def value(self) -> float:
        """The kept epoch's monitored value; NaN before any epoch."""
        return self.best_value if self.best_value is not None else math.nan


class _EpochSync(keras.callbacks.Callback):
    """Tell the training batches which epoch starts: Keras opens their stream just after the first epoch's
    callbacks, so a resumed run's stream starts at the epoch it resumes (later epochs follow in the stream)."""

    def __init__(self, batches):
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch, logs=None):
        self.batches.set_epoch(epoch)


class _HistoryRecorder(keras.callbacks.Callback):
    """Append one row per epoch to history.csv (rows of epochs a resumed run repeats are replaced)."""

    def __init__(self, path: Path, phase: str):
        super().__init__()
        self.path, self.phase = path, phase
        self.rows: list[dict[str, Any]] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        import pandas as pd

        row = {"phase": self.phase, "epoch": epoch, "seconds": round(time.monotonic() - self._epoch_start, 3)}
        row.update({k: float(v) for k, v in (logs or {}).items()})
        self.rows.append(row)
        earlier = pd.read_csv(self.path) if self.path.exists() else pd.DataFrame()
        if not earlier.empty:
            earlier = earlier[~((earlier["phase"] == self.phase) & (earlier["epoch"] >= epoch))]
        table = pd.concat([earlier, pd.DataFrame([row])], ignore_index=True)
        with atomic_path(self.path) as tmp:
            table.to_csv(tmp, index=False)


def _load_weights(model: keras.Model, path: Path) -> None:
    """Load weights saved by another phase; its optimizer state (other variables) is meant to be dropped."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        model.load_weights(path)


def _progress_verbosity() -> int:
    """Progress bars on a terminal; one line per epoch in logs (Kaggle keeps every carriage return)."""
    return 1 if sys.stdout.isatty() else 2


def _phase_dir(out_dir: Path, name: str, signature: str) -> Path:
    """The phase's backup folder; a backup made under another configuration signature is discarded."""
    phase_dir = out_dir / "backup" / name
    signature_path = phase_dir / "signature.txt"
    if phase_dir.exists() and (not signature_path.exists() or signature_path.read_text() != signature):
        log(f"phase {name}: discarding a backup made with another configuration")
        shutil.rmtree(phase_dir)
    phase_dir.mkdir(parents=True, exist_ok=True)
    signature_path.write_text(signature)
    return phase_dir


def _finished(model: keras.Model, phase_dir: Path, monitor: str) -> PhaseResult:
    """A phase an earlier run finished: its best weights reloaded, its result read back."""
    _load_weights(model, phase_dir / "best.weights.h5")
    result = PhaseResult(**{**json.loads((phase_dir / "done.json").read_text()), "resumed": True})
    log(f"phase {result.name}: already finished in an earlier run (best {monitor} {result.best_value:.4f}); "
        "skipped")
    return result


def _backup_epoch(phase_dir: Path) -> tuple[int, float] | None:
    """(the epoch an interrupted phase resumes at, the backup's age in seconds) from `BackupAndRestore`'s
    metadata in `phase_dir/state`, or None when there is nothing to resume."""
    metadata = phase_dir / BACKUP_STATE / "training_metadata.json"
    try:
        epoch = int(json.loads(metadata.read_text())["epoch"])
        age = time.time() - metadata.stat().st_mtime
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (epoch, max(age, 0.0)) if epoch > 0 else None


def _announce_resume(phase_dir: Path, name: str, epochs: int) -> bool:
    """Say which epoch an interrupted phase resumes at and how old its backup is; whether it resumes."""
    backup = _backup_epoch(phase_dir)
    if backup is not None:
        log(f"phase {name}: resuming at epoch {backup[0] + 1} of {epochs} from a backup written "
            f"{_age(backup[1])} ago")
    return backup is not None


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _restore_best(model: keras.Model, keeper: _BestKeeper, run_best: float | None, label: str) -> None:
    """Leave `model` with the phase's best weights, or the run's earlier best if the phase never beat it."""
    if keeper.weights_path.exists():
        _load_weights(model, keeper.weights_path)
    if not keeper.improved(keeper.value, run_best) and keeper.model_path.exists():
        log(f"{label}: no improvement on the earlier best {keeper.monitor}; keeping the earlier weights")
        _load_weights(model, keeper.model_path)


def _fit(model: keras.Model, train, val, epochs: int, phase_dir: Path, verbose: int | str,
         callbacks: list) -> keras.callbacks.History:
    """`model.fit` with the epoch backup first and the batches told which epoch starts."""
    callbacks = [keras.callbacks.BackupAndRestore(str(phase_dir / BACKUP_STATE), save_freq="epoch",
                                                  delete_checkpoint=True), *callbacks]
    if isinstance(train, Batches):
        callbacks.append(_EpochSync(train))
        # The stream shuffles itself from its seed and never ends: Keras cuts it into epochs.
        inputs = {"x": train.dataset(), "steps_per_epoch": train.num_batches, "shuffle": False}
    else:
        inputs = {"x": train[0], "y": train[1]}
    return model.fit(
        **inputs,
        validation_data=val,
        epochs=epochs,
        callbacks=callbacks,
        verbose=_progress_verbosity() if verbose == "auto" else verbose,
    )


def weight_average_callbacks(model: keras.Model) -> list[keras.callbacks.Callback]:
    """Where the model's optimizer keeps a moving average of the weights (`use_ema`, under any loss scaling),
    the callback that swaps it in for validation and at every epoch's end, ahead of the callbacks that save
    weights; none otherwise."""
    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)
    return [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if getattr(optimizer, "use_ema", False) else []


def _check_choices(mode: str, keep: str) -> None:
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    if keep not in KEEP_WEIGHTS:
        raise ValueError(f"keep must be one of {KEEP_WEIGHTS.choices}, got {keep!r}")


def fit_phase(model: keras.Model, train, val, *, name: str, epochs: int, out_dir: Path, monitor: str = "val_loss",
              mode: str = "min", patience: int = 10, deadline: Deadline | None = None,
              schedule: Schedule | None = None, best: float | None = None, keep: str = "best",
              signature: str = "", callbacks: tuple = (), verbose: int | str = "auto") -> PhaseResult:
    """Train one phase and leave `model` holding the best weights of the run so far.

    Args:
        model: a compiled model (built inside the runtime's strategy scope).
        train: a `pipeline.Batches` (fed as its `dataset()` stream), or an `(x, y)` tuple of arrays.
        val: anything `validation_data` takes.
        name: the phase's name, used for its backup folder and its history rows.
        epochs: the most epochs to run.
        out_dir: the run's output folder.
        monitor, mode: the metric that picks the best epoch, and whether lower ("min") or higher is better.
        patience: epochs without improvement before early stopping.
        deadline: the run's time budget; None for no budget.
        schedule: the learning rate over the epochs that fit in the deadline (None: the optimizer's own).
        best: the best monitored value of earlier phases of the run; `model.keras` is only overwritten by
            a better epoch, and if this phase never beats it the earlier best weights are reloaded.
        keep: "best" (the best monitored epoch of the run) or "last" (the last epoch's weights, each epoch
            saved as it ends; for a schedule planned to end at the budget, where the best of a small
            validation set can be a lucky epoch halfway through).
        signature: a description of the run's configuration; a backup made under another signature is
            discarded instead of resumed.
        callbacks: extra Keras callbacks.
        verbose: Keras verbosity; "auto" shows progress bars on a terminal and a line per epoch in logs.
    """
    _check_choices(mode, keep)
    out_dir = Path(out_dir)
    phase_dir = _phase_dir(out_dir, name, signature)
    if (phase_dir / "done.json").exists():
        return _finished(model, phase_dir, monitor)
    deadline = deadline or Deadline(None)
    if deadline.remaining() <= 0:
        log(f"phase {name}: no time left in the budget; skipped")
        return PhaseResult(name, 0, -1, best if best is not None else math.nan, 0.0, True)
    budget = _BudgetPlanner(deadline, epochs, getattr(train, "num_batches", None) or 1, schedule)
    keeper = _BestKeeper(monitor, mode, phase_dir, out_dir / MODEL_FILE, best, keep_last=keep == "last")
    recorder = _HistoryRecorder(out_dir / HISTORY_FILE, name)
    log(f"phase {name}: up to {epochs} epochs, monitoring {monitor} ({mode})")
    resumed = _announce_resume(phase_dir, name, epochs)
    start = time.monotonic()
    # The planner precedes the others: it writes the epoch's learning rate into the logs they record. A weight
    # average swaps in ahead of them all at the end of an epoch, so that the keeper saves what validation scored.
    # The keeper precedes early stopping so that a monitor the logs lack fails with its error, not Keras's warning.
    stopping = keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=patience)
    history = _fit(model, train, val, epochs, phase_dir, verbose,
                   [*weight_average_callbacks(model), budget, keeper, stopping, recorder, *callbacks])
    seconds = time.monotonic() - start
    _restore_best(model, keeper, best, f"phase {name}")
    result = PhaseResult(name=name, epochs_run=len(recorder.rows), best_epoch=keeper.best_epoch,
                         best_value=keeper.value, seconds=round(seconds, 2), stopped_by_budget=budget.triggered,
                         resumed=resumed,
                         history={k: [float(v) for v in values] for k, values in history.history.items()})
    write_json(phase_dir / "done.json", asdict(result))
    log(f"phase {name}: {result.epochs_run} epochs in {seconds:.0f} s; {keep} {monitor} "
        f"{result.best_value:.4f} at epoch {result.best_epoch + 1}")
    return result
