"""The kit on more than one device, under a time budget, interrupted, and seeded.

- Mirroring: a child process splits the CPU into two logical devices before TensorFlow starts (it cannot be
  done in the pytest process once TensorFlow is initialised), then reports what `setup_runtime` chose, how
  a distributed dataset splits the global batch, and fit/evaluate/predict of both task models built and
  compiled the way the tasks do it. The tests assert on that report.
- Budget, resume and determinism drive the real `run` of both tasks (smoke profile, synthetic data).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
CHILD_FLAG = "--mirrored-child"
REPLICAS = 2
PER_REPLICA_BATCH = 4
# 10 samples in global batches of 8: one full batch, then a partial one (1 sample per replica).
SAMPLES = 10
REPORT_PREFIX = "MIRRORED_REPORT "


# --- the child process ----------------------------------------------------------------------------------


def _split_cpu() -> None:
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * REPLICAS)


def _batch_split(strategy, global_batch: int) -> list[list[list[int]]]:
    """The element ids each replica receives, batch by batch, from a distributed dataset of SAMPLES ids."""
    import tensorflow as tf

    dataset = tf.data.Dataset.range(SAMPLES).batch(global_batch)
    return [[t.numpy().tolist() for t in strategy.experimental_local_results(batch)]
            for batch in strategy.experimental_distribute_dataset(dataset)]


def _exercise(runtime, model, x, y) -> dict:
    """fit (through the kit's Batches), evaluate and predict a compiled model under the runtime's strategy."""
    from an2dl_kit.pipeline import Batches
    from an2dl_kit.training import weight_average_callbacks

    batch = runtime.global_batch(PER_REPLICA_BATCH)
    batches = Batches(x, y, batch_size=batch, seed=0)
    average = weight_average_callbacks(model)
    history = model.fit(batches.dataset(), steps_per_epoch=batches.num_batches, epochs=1, shuffle=False,
                        verbose=0, callbacks=average)
    evaluation = model.evaluate(x, y, batch_size=batch, verbose=0, return_dict=True)
    predictions = model.predict(x, batch_size=batch, verbose=0)
    variable = model.trainable_variables[0]
    copies = runtime.strategy.experimental_local_results(variable.value)
    return {
        "weight_average": bool(average),
        "variable_type": type(variable.value).__name__,
        "copies": len(copies),
        "copies_equal": all(np.array_equal(copies[0].numpy(), c.numpy()) for c in copies),
        "train_loss": float(history.history["loss"][0]),
        "eval_loss": float(evaluation["loss"]),
        "prediction_shape": list(predictions.shape),
        "prediction_dtype": str(predictions.dtype),
        "probability_sums": [float(predictions.sum(axis=-1).min()), float(predictions.sum(axis=-1).max())],
    }


def _cells_case(runtime) -> dict:
    """The smoke profile's classifier, compiled as tasks/cells.py compiles it."""
    from an2dl_kit.models.cells import build_classifier
    from an2dl_kit.tasks import resolve_config
    from an2dl_kit.tasks.cells import compile_classifier, onehot

    config = resolve_config("cells", "smoke")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (SAMPLES, 96, 96, 3)).astype("float32")
    y = onehot(rng.integers(0, 8, SAMPLES))
    with runtime.scope():
        model, _ = build_classifier(config.model.backbone, "none", image_size=config.model.image_size,
                                    head_units=config.model.head_units)
        compile_classifier(model, config, runtime)
    return _exercise(runtime, model, x, y)


def _mars_case(runtime, overrides: dict | None = None) -> dict:
    """The smoke profile's U-Net, with its loss and metrics, as tasks/mars.py builds it."""
    from an2dl_kit.tasks import mars, resolve_config

    rng = np.random.default_rng(0)
    x = mars.HOOKS.to_inputs(rng.uniform(0, 255, (SAMPLES, 64, 128)))
    y = rng.integers(0, 5, (SAMPLES, 64, 128)).astype("uint8")
    with runtime.scope():
        model, _ = mars.build_and_compile(resolve_config("mars", "smoke", overrides), runtime)
    return _exercise(runtime, model, x, y)


def _mars_weight_average_case(runtime) -> dict:
    """The same with the weight average on, swapped in and out of every replica's copy."""
    return _mars_case(runtime, {"ema_momentum": 0.9})


def mirrored_child() -> dict:
    _split_cpu()
    from an2dl_kit.runtime import setup_runtime

    runtime = setup_runtime(seed=0)
    report = {"runtime": runtime.as_dict(), "global_batch": runtime.global_batch(PER_REPLICA_BATCH),
              "split": _batch_split(runtime.strategy, runtime.global_batch(PER_REPLICA_BATCH))}
    for task, case in (("cells", _cells_case), ("mars", _mars_case), ("mars_ema", _mars_weight_average_case)):
        try:
            report[task] = case(runtime)
        except Exception as error:  # reported, so the parent test names the failing task
            report[task] = {"error": f"{type(error).__name__}: {error}"}
    return report


# --- the tests ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mirrored():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, __file__, CHILD_FLAG], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith(REPORT_PREFIX)]
    assert done.returncode == 0 and lines, f"child failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return json.loads(lines[-1][len(REPORT_PREFIX):])


@pytest.mark.slow
def test_two_logical_cpus_get_mirrored_strategy(mirrored):
    assert mirrored["runtime"]["strategy"] == "MirroredStrategy"
    assert mirrored["runtime"]["replicas"] == REPLICAS
    assert mirrored["runtime"]["precision"] == "float32"
    assert mirrored["global_batch"] == REPLICAS * PER_REPLICA_BATCH


@pytest.mark.slow
def test_per_replica_batches_add_up_to_the_global_batch(mirrored):
    split = mirrored["split"]
    assert [[len(part) for part in batch] for batch in split] == [[4, 4], [1, 1]]
    assert [sum(len(part) for part in batch) for batch in split] == [8, 2]
    seen = sorted(i for batch in split for part in batch for i in part)
    assert seen == list(range(SAMPLES)), "every element reaches exactly one replica"


@pytest.mark.slow
@pytest.mark.parametrize(("task", "shape"), [("cells", [SAMPLES, 8]), ("mars", [SAMPLES, 64, 128, 5]),
                                             ("mars_ema", [SAMPLES, 64, 128, 5])])
def test_task_model_trains_evaluates_and_predicts_mirrored(mirrored, task, shape):
    report = mirrored[task]
    assert "error" not in report, report.get("error")
    assert report["weight_average"] == (task == "mars_ema")
    assert report["variable_type"] == "MirroredVariable", "model variables were not created in the scope"
    assert report["copies"] == REPLICAS
    assert report["copies_equal"], "replica copies diverged: gradients were not all-reduced"
    assert np.isfinite(report["train_loss"]) and np.isfinite(report["eval_loss"])
    assert report["prediction_shape"] == shape
    assert report["prediction_dtype"] == "float32"
    assert report["probability_sums"] == pytest.approx([1.0, 1.0], abs=1e-4)


# --- budget, resume and determinism of real runs (smoke profile, synthetic data) ---------------------------

TASKS = ("cells", "mars")
OUTPUT_SHAPE = {"cells": (8,), "mars": (64, 128, 5)}
# Enough epochs that only the budget (or the interruption) can end the first phase.
LONG = {"epochs": 1000, "patience": 1000}
RESUMABLE = {"epochs": 3, "patience": 100}
# A re-run on Kaggle has less time left than the run it resumes, so it passes another budget.
FIRST_BUDGET_S, RERUN_BUDGET_S = 900.0, 700.0


class Interrupted(RuntimeError):
    """Stands in for a kernel killed between two epochs."""


def run_smoke(task: str, data: Path, out: Path, **overrides) -> dict:
    from an2dl_kit.tasks import run

    return run(task, data, out, "smoke", overrides=overrides)


def load_test_images(task: str, data: Path) -> np.ndarray:
    from an2dl_kit.data import io

    if task == "cells":
        return io.load_cells_test(data / "cells" / "test_set.npz")
    return io.load_mars(data / "mars" / "mars_for_students.npz").test


def assert_valid_outputs(task: str, data: Path, out: Path) -> dict:
    """submission.csv passes the checker with one row per test image, model.keras reloads and predicts
    probabilities of the right shape, metrics.json holds the shared keys and names files that exist."""
    import keras

    from an2dl_kit.submission import check_submission

    x = load_test_images(task, data)
    check_submission(out / "submission.csv", task, len(x))
    model = keras.saving.load_model(out / "model.keras")
    batch = x[:4].astype("float32").reshape((-1, *model.input_shape[1:]))
    probabilities = model.predict(batch, verbose=0)
    assert probabilities.shape == (len(batch), *OUTPUT_SHAPE[task])
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-4)
    from an2dl_kit.tasks.runner import METRICS_KEYS

    metrics = json.loads((out / "metrics.json").read_text())
    assert tuple(metrics) == METRICS_KEYS
    assert metrics["task"] == task and metrics["runtime"]["replicas"] == 1
    missing = [name for name in metrics["files"] if not (out / name).is_file()]
    assert not missing, f"metrics.json lists files that were not written: {missing}"
    return metrics


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_budget_stops_the_run_and_every_output_is_written(task, synthetic_dir, tmp_path):
    metrics = run_smoke(task, synthetic_dir, tmp_path, budget_s=3.0, **LONG)
    first = metrics["phases"][0]
    assert first["stopped_by_budget"] is True
    assert 1 <= first["epochs_run"] < LONG["epochs"]
    assert all(phase["epochs_run"] == 0 for phase in metrics["phases"][1:])
    assert_valid_outputs(task, synthetic_dir, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_interrupted_run_resumes_after_its_first_epoch(task, synthetic_dir, tmp_path, monkeypatch):
    import pandas as pd

    from an2dl_kit import training

    recorder = training._HistoryRecorder
    record_epoch = recorder.on_epoch_end

    def record_then_die(self, epoch, logs=None):
        record_epoch(self, epoch, logs)
        raise Interrupted(f"killed after epoch {epoch}")

    monkeypatch.setattr(recorder, "on_epoch_end", record_then_die)
    with pytest.raises(Interrupted):
        run_smoke(task, synthetic_dir, tmp_path, budget_s=FIRST_BUDGET_S, **RESUMABLE)
    assert list(pd.read_csv(tmp_path / "history.csv")["epoch"]) == [0]
    assert (tmp_path / "model.keras").is_file(), "the best model so far must survive the interruption"

    monkeypatch.setattr(recorder, "on_epoch_end", record_epoch)
    started = []
    begin_epoch = recorder.on_epoch_begin

    def note_start(self, epoch, logs=None):
        started.append((self.phase, epoch))
        begin_epoch(self, epoch, logs)

    monkeypatch.setattr(recorder, "on_epoch_begin", note_start)
    metrics = run_smoke(task, synthetic_dir, tmp_path, budget_s=RERUN_BUDGET_S, **RESUMABLE)
    first = metrics["phases"][0]["name"]
    assert [epoch for phase, epoch in started if phase == first] == [1, 2], (
        "did not resume at epoch 1; a re-run with another budget must match the backup's signature")
    history = pd.read_csv(tmp_path / "history.csv")
    assert list(history.loc[history["phase"] == first, "epoch"]) == [0, 1, 2]
    assert metrics["phases"][0]["epochs_run"] == 2
    assert_valid_outputs(task, synthetic_dir, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_seeded_cpu_runs_predict_identically(task, synthetic_dir, tmp_path):
    import keras

    runs = [tmp_path / "a", tmp_path / "b"]
    for out in runs:
        run_smoke(task, synthetic_dir, out, seed=7)
    first, second = (assert_valid_outputs(task, synthetic_dir, out) for out in runs)
    assert (runs[0] / "submission.csv").read_bytes() == (runs[1] / "submission.csv").read_bytes()
    assert first["validation_tta"] == second["validation_tta"]
    x = load_test_images(task, synthetic_dir).astype("float32")
    a, b = (keras.saving.load_model(out / "model.keras") for out in runs)
    shaped = x.reshape((-1, *a.input_shape[1:]))
    np.testing.assert_array_equal(a.predict(shaped, verbose=0), b.predict(shaped, verbose=0))


if __name__ == "__main__" and CHILD_FLAG in sys.argv:
    print(REPORT_PREFIX + json.dumps(mirrored_child()), flush=True)
