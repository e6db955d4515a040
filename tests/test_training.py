import json
import os
import warnings

import keras
import numpy as np
import pandas as pd
import pytest

from an2dl_kit.plots import learning_curves as plot_learning_curves
from an2dl_kit.training import Deadline, Schedule, epoch_pace, fit_phase, tracing_excess


def data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    return x, y


def tiny_model(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def fit(model, out_dir, **kwargs):
    x, y = data()
    defaults = dict(name="p1", epochs=4, out_dir=out_dir, monitor="val_loss", mode="min", patience=10,
                    verbose=0)
    return fit_phase(model, (x, y), (x[:32], y[:32]), **{**defaults, **kwargs})


class StopAtEpoch(keras.callbacks.Callback):
    """Simulates a kernel killed at the start of the given epoch."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


class SimulatedClock:
    """A seconds counter that only the simulated work below moves: a slow machine, made deterministic."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class SimulatedWork(keras.callbacks.Callback):
    """Every training batch takes `batch_s` on `clock`, and every epoch ends with `closing_s` of work after the
    budget planner's, like saving a model."""

    def __init__(self, clock, batch_s, closing_s=0.0):
        super().__init__()
        self.clock, self.batch_s, self.closing_s = clock, batch_s, closing_s

    def on_train_batch_begin(self, batch, logs=None):
        self.clock.now += self.batch_s

    def on_epoch_end(self, epoch, logs=None):
        self.clock.now += self.closing_s


def test_phase_writes_history_best_model_and_result(tmp_path):
    result = fit(tiny_model(), tmp_path)
    history = pd.read_csv(tmp_path / "history.csv")
    assert list(history["epoch"]) == [0, 1, 2, 3]
    assert set(history["phase"]) == {"p1"}
    assert result.epochs_run == 4
    assert result.best_value == pytest.approx(history["val_loss"].min(), rel=1e-6)
    assert result.best_epoch == int(history["val_loss"].idxmin())
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    x, y = data()
    assert reloaded.evaluate(x[:32], y[:32], verbose=0)[0] == pytest.approx(result.best_value, rel=1e-4)
    assert not list(tmp_path.rglob("*.part*")), "temporary files left behind"


def test_model_ends_with_the_best_weights(tmp_path):
    model = tiny_model()
    result = fit(model, tmp_path, epochs=6)
    x, y = data()
    assert model.evaluate(x[:32], y[:32], verbose=0)[0] == pytest.approx(result.best_value, rel=1e-4)


def test_exhausted_budget_stops_after_one_batch(tmp_path):
    x, y = data(n=512)
    model = tiny_model()
    result = fit_phase(model, (x, y), (x[:32], y[:32]), name="p1", epochs=50, out_dir=tmp_path,
                       deadline=Deadline(budget_s=1e-9), verbose=0, patience=50)
    assert result.stopped_by_budget is True
    assert result.epochs_run == 0  # the budget was gone before the phase began


def test_budget_stops_before_an_epoch_that_would_not_fit(tmp_path):
    # Two batches of 0.1 s: 0.2 s an epoch, 0.22 s with the margin. After epoch 8 (1.6 s) 0.4 s are left and a
    # ninth starts; after it 0.2 s < 0.22 s are left, so it is the last.
    clock = SimulatedClock()
    result = fit(tiny_model(), tmp_path, epochs=10_000, patience=10_000, deadline=Deadline(2.0, clock=clock),
                 callbacks=(SimulatedWork(clock, 0.1),))
    assert result.stopped_by_budget is True
    assert result.epochs_run == 9
    assert clock() == pytest.approx(1.8)
    assert (tmp_path / "model.keras").exists()


def test_interrupted_phase_resumes_where_it_stopped(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_model(), tmp_path, epochs=4, callbacks=(StopAtEpoch(2),))
    assert list(pd.read_csv(tmp_path / "history.csv")["epoch"]) == [0, 1]
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append(epoch)

    result = fit(tiny_model(seed=1), tmp_path, epochs=4, callbacks=(Record(),))
    assert seen == [2, 3]
    assert result.resumed is True
    assert list(pd.read_csv(tmp_path / "history.csv")["epoch"]) == [0, 1, 2, 3]
    assert result.best_epoch in range(4)


def test_resumed_phase_says_where_it_resumes_and_how_old_the_backup_is(tmp_path, capsys):
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_model(), tmp_path, epochs=5, callbacks=(StopAtEpoch(2),))
    metadata = tmp_path / "backup" / "p1" / "state" / "training_metadata.json"
    written = metadata.stat().st_mtime - 300
    os.utime(metadata, (written, written))
    capsys.readouterr()
    fit(tiny_model(), tmp_path, epochs=5)
    lines = [line for line in capsys.readouterr().out.splitlines() if "resuming" in line]
    assert len(lines) == 1
    assert lines[0].endswith("phase p1: resuming at epoch 3 of 5 from a backup written 5 min ago")


def test_fresh_phase_says_nothing_of_resuming(tmp_path, capsys):
    result = fit(tiny_model(), tmp_path, epochs=2)
    assert "resuming" not in capsys.readouterr().out and result.resumed is False


def test_finished_phase_is_skipped_on_rerun_with_its_weights(tmp_path):
    first = tiny_model()
    result = fit(first, tmp_path)
    again = tiny_model(seed=7)
    rerun = fit(again, tmp_path)
    assert rerun.resumed is True and rerun.best_value == result.best_value
    for a, b in zip(first.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_backup_from_another_configuration_is_discarded(tmp_path):
    fit(tiny_model(), tmp_path, signature="a")
    rerun = fit(tiny_model(), tmp_path, signature="b")
    assert rerun.resumed is False and rerun.epochs_run == 4


def test_phase_that_never_beats_the_earlier_best_keeps_earlier_weights(tmp_path):
    model = tiny_model()
    first = fit(model, tmp_path, name="p1")
    kept = [w.copy() for w in model.get_weights()]
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="sparse_categorical_crossentropy")
    second = fit(model, tmp_path, name="p2", best=first.best_value - 10.0, epochs=2)
    assert second.best_value > first.best_value - 10.0
    for a, b in zip(kept, model.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_unknown_monitor_is_named_by_the_kit_before_keras_warns(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        with pytest.raises(KeyError, match="val_miou"):
            fit(tiny_model(), tmp_path, monitor="val_miou", mode="max")


def test_learning_curves_png(tmp_path):
    fit(tiny_model(), tmp_path, name="p1", epochs=2)
    fit(tiny_model(), tmp_path, name="p2", epochs=2)
    png = plot_learning_curves(tmp_path / "history.csv", tmp_path / "curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(pd.read_csv(tmp_path / "history.csv")["phase"]) == ["p1", "p1", "p2", "p2"]
    done = json.loads((tmp_path / "backup" / "p2" / "done.json").read_text())
    assert done["epochs_run"] == 2


def test_resumed_run_replays_the_epochs_it_replaces(tmp_path):
    from an2dl_kit.pipeline import Batches

    def jitter(x, y, rng):
        return x + rng.normal(scale=0.5, size=x.shape).astype("float32"), y

    def run(out_dir, callbacks=()):
        x, y = data()
        batches = Batches(x, y, batch_size=16, transform=jitter, seed=3)
        return fit_phase(tiny_model(), batches, (x[:32], y[:32]), name="p1", epochs=3, out_dir=out_dir,
                         patience=10, verbose=0, callbacks=callbacks)

    run(tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "resumed", callbacks=(StopAtEpoch(1),))
    run(tmp_path / "resumed")
    straight = pd.read_csv(tmp_path / "straight" / "history.csv")
    resumed = pd.read_csv(tmp_path / "resumed" / "history.csv")
    np.testing.assert_allclose(resumed["loss"], straight["loss"], rtol=1e-5)


def test_schedule_cosine_reaches_its_floor_at_the_end():
    schedule = Schedule(2e-3, floor=0.02)
    assert schedule.rate(0.0) == pytest.approx(2e-3)
    assert schedule.rate(0.5) == pytest.approx(2e-3 * (0.02 + 0.98 * 0.5))
    assert schedule.rate(1.0) == pytest.approx(2e-3 * 0.02)
    assert schedule.rate(7.0) == pytest.approx(2e-3 * 0.02)  # past the end it stays at the floor


def test_schedule_restarts_with_growing_periods_and_warmup_ramps():
    # Periods 0.1, 0.2, 0.4... of the run, as CosineDecayRestarts(first 4 of 40 epochs, t_mul 2).
    schedule = Schedule(1.0, floor=0.0, first_period=0.1, t_mul=2.0)
    assert schedule.rate(0.05) == pytest.approx(0.5)
    assert schedule.rate(0.1) == pytest.approx(1.0)  # the first restart
    assert schedule.rate(0.2) == pytest.approx(0.5)  # halfway through the 0.2-long second period
    assert schedule.rate(0.34) == pytest.approx(0.5 * (1 + np.cos(np.pi * 0.1)))  # 0.04 into the 0.4 period
    assert Schedule(1.0, warmup=True).rate(0.25) == pytest.approx(0.25)


def test_epoch_pace_ignores_the_first_epoch_and_one_slow_epoch():
    assert epoch_pace([]) == 0.0
    assert epoch_pace([30.0]) == 30.0
    assert epoch_pace([30.0, 10.0, 11.0, 40.0, 10.0]) == pytest.approx(10.5)


def test_tracing_excess_is_what_the_first_batch_took_beyond_the_others():
    assert tracing_excess([5.0, 1.0, 1.2, 0.8]) == pytest.approx(4.0)
    assert tracing_excess([1.0, 1.0, 1.2]) == 0.0
    assert tracing_excess([5.0]) == 0.0  # one batch: nothing to compare it with


def test_schedule_planned_for_a_budget_reaches_its_last_epoch_within_it(tmp_path):
    from an2dl_kit.pipeline import Batches

    x, y = data()
    clock = SimulatedClock()
    result = fit_phase(tiny_model(), Batches(x, y, batch_size=8), (x[:32], y[:32]), name="p1", epochs=100,
                       out_dir=tmp_path, monitor="val_loss", mode="min", patience=100, verbose=0,
                       deadline=Deadline(6.0, clock=clock), schedule=Schedule(0.05, floor=0.02),
                       callbacks=(SimulatedWork(clock, 0.1),))
    history = pd.read_csv(tmp_path / "history.csv")
    assert result.stopped_by_budget and result.epochs_run == 7  # 0.8 s an epoch, 0.88 s with the margin
    assert clock() == pytest.approx(5.6)
    # The planned schedule ends with the budget: the last epoch trains near the floor, not at the peak.
    assert history["learning_rate"].iloc[-1] < 0.2 * 0.05
    assert history["learning_rate"].is_monotonic_decreasing


def test_time_spent_saving_after_each_epoch_counts_in_the_plan(tmp_path):
    # 0.2 s of batches and 0.3 s of saving an epoch. After the third epoch's batches (1.2 s) its saving is still
    # to come: 0.5 s are left for a 0.55 s epoch, so it is the last. Timing the batches alone would go past 2 s.
    clock = SimulatedClock()
    result = fit(tiny_model(), tmp_path, epochs=100, patience=100, deadline=Deadline(2.0, clock=clock),
                 callbacks=(SimulatedWork(clock, 0.1, closing_s=0.3),))
    assert result.stopped_by_budget and result.epochs_run == 3
    assert clock() == pytest.approx(1.5)


class WeightsAtEpochEnd(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append([w.copy() for w in self.model.get_weights()])


@pytest.mark.parametrize("keep", ["best", "last"])
def test_phase_ends_with_the_best_or_the_last_epoch(tmp_path, keep):
    # Maximising a falling validation loss makes epoch 0 the "best", so the two choices part.
    model, recorder = tiny_model(), WeightsAtEpochEnd()
    result = fit(model, tmp_path, epochs=4, monitor="val_loss", mode="max", keep=keep, callbacks=(recorder,))
    epoch = 0 if keep == "best" else 3
    assert result.best_epoch == epoch
    expected = recorder.weights[epoch]
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    for weights in (model.get_weights(), reloaded.get_weights()):
        assert all(np.array_equal(a, b) for a, b in zip(weights, expected, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(recorder.weights[0], recorder.weights[3], strict=True))


def test_unknown_keep_is_named(tmp_path):
    with pytest.raises(ValueError, match="keep must be one of"):
        fit(tiny_model(), tmp_path, keep="first")


class WeightsAtLastStep(keras.callbacks.Callback):
    """The raw weights after the latest training step, before any weight average swaps in."""

    def on_train_batch_end(self, batch, logs=None):
        self.weights = [w.copy() for w in self.model.get_weights()]


def test_weight_average_is_what_validation_scores_and_the_phase_keeps(tmp_path):
    model = tiny_model()
    model.compile(optimizer=keras.optimizers.Adam(0.05, use_ema=True, ema_momentum=0.9),
                  loss="sparse_categorical_crossentropy")
    raw = WeightsAtLastStep()
    result = fit(model, tmp_path, epochs=3, keep="last", callbacks=(raw,))
    x, y = data()
    scored = model.evaluate(x[:32], y[:32], verbose=0, return_dict=True)["loss"]
    assert scored == pytest.approx(result.history["val_loss"][-1], abs=1e-6)
    assert not all(np.allclose(a, b) for a, b in zip(model.get_weights(), raw.weights, strict=True))
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    assert all(np.array_equal(a, b) for a, b in zip(reloaded.get_weights(), model.get_weights(), strict=True))
