"""The Mars task end to end on tiny synthetic data, its CLI, and flip TTA through the kit's prediction path."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from an2dl_kit.errors import KitError
from an2dl_kit.tasks import mars as T

SHARED_KEYS = {"task", "profile", "config", "runtime", "versions", "provenance", "phases", "validation",
               "validation_tta", "tta_gain", "files", "seconds_total"}
OUTPUTS = {"submission.csv", "model.keras", "history.csv", "metrics.json", "learning_curves.png",
           "class_iou.png", "predictions.png"}


@pytest.fixture(scope="module")
def smoke_run(synthetic_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("mars_smoke")
    metrics = T.run(synthetic_dir, out, "smoke", provenance={"commit": "test"})
    return out, metrics


def test_smoke_run_writes_every_output(smoke_run):
    out, metrics = smoke_run
    assert OUTPUTS <= {p.name for p in out.iterdir()}
    assert set(metrics["files"]) == OUTPUTS
    for name in OUTPUTS:
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "metrics.json").read_text())
    assert SHARED_KEYS <= set(saved)
    assert saved["task"] == "mars" and saved["profile"] == "smoke" and saved["provenance"] == {"commit": "test"}
    assert set(saved["validation"]["iou"]) == {"soil", "bedrock", "sand", "big rock"}
    assert saved["tta_gain"] == pytest.approx(saved["validation_tta"]["miou"] - saved["validation"]["miou"])
    assert saved["phases"][0]["epochs_run"] == 1
    assert "test" in saved and "test_tta" in saved  # synthetic data ships test labels
    assert 0.0 <= saved["test_tta"]["miou"] <= 1.0
    assert saved["validation_tta"]["background_predicted"] == 0.0  # never background


def test_smoke_submission_passes_the_checker(smoke_run, synthetic_dir, capsys):
    from an2dl_kit.cli import main
    from an2dl_kit.submission import read_mars_csv

    out, _ = smoke_run
    test_npz = synthetic_dir / "mars" / "mars_for_students.npz"
    assert main(["check", str(out / "submission.csv"), "--task", "mars", "--test", str(test_npz)]) == 0
    masks = read_mars_csv(out / "submission.csv")
    assert masks.shape[1:] == (64, 128) and masks.min() >= 1


def test_smoke_model_reloads_and_predicts(smoke_run):
    from an2dl_kit.models.mars import load_model

    out, _ = smoke_run
    y = load_model(out / "model.keras")(np.zeros((1, 64, 128, 1), np.float32), training=False)
    assert tuple(y.shape) == (1, 64, 128, 5)
    compiled = load_model(out / "model.keras", compile=True)
    assert compiled.loss.terms == ("cce",) and compiled.loss.ignore_background


class _PixelModel:
    """An 'identity-like' model: each pixel's probabilities depend only on that pixel, so every flip view
    predicts the same maps once undone."""

    def predict(self, x, batch_size=None, verbose=0):
        v = np.asarray(x, np.float32)
        logits = np.concatenate([v * k for k in range(5)], axis=-1)
        return np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)


def test_flip_tta_on_identity_like_model_returns_plain_prediction():
    x = np.random.default_rng(0).uniform(size=(3, 64, 128, 1)).astype(np.float32)
    plain, tta = T.predict_labels(_PixelModel(), x, ("identity", "flip_lr", "flip_ud"), cleanup=0,
                                  never_background=True, batch_size=2)
    # The input is not symmetric: a view left flipped (not undone) would change the merged labels.
    np.testing.assert_array_equal(tta, plain)
    assert plain.min() >= 1


def test_profiles_and_overrides_are_validated():
    assert set(T.PROFILES) == {"kaggle", "local", "smoke"}
    assert T.resolve_profile("local", loss="cce+dice", width=None).loss == "cce+dice"
    for bad, message in ((dict(loss="lovasz"), "--loss lovasz"), (dict(augment="x"), "augment"),
                         (dict(colour=1), "unknown field"), (dict(augment_mode="both"), "augment_mode")):
        with pytest.raises(KitError, match=message):
            T.resolve_profile("smoke", **bad)
    with pytest.raises(KitError, match="unknown"):
        T.resolve_profile("huge")


def test_compare_refuses_an_unknown_loss_before_training(tmp_path):
    import argparse

    args = argparse.Namespace(data=tmp_path, out=tmp_path / "cmp", profile="smoke", budget=None,
                              losses="cce,hinge")
    with pytest.raises(KitError, match="--losses hinge"):
        T.compare_cli(args)


@pytest.mark.slow
def test_compare_writes_a_loss_table(synthetic_dir, tmp_path, capsys):
    import argparse

    args = argparse.Namespace(data=synthetic_dir, out=tmp_path, profile="smoke", budget=None, losses="cce,dice")
    assert T.compare_cli(args) == 0
    import pandas as pd

    table = pd.read_csv(tmp_path / "compare_losses.csv")
    assert list(table["loss"]) == ["cce", "dice"]
    assert {"miou", "accuracy", "iou_soil", "iou_big_rock", "train_seconds"} <= set(table.columns)
    assert "| loss |" in Path(tmp_path / "compare_losses.md").read_text()


def test_resume_signature_ignores_budget_but_not_the_recipe():
    base = T.resolve_profile("local")
    assert T.resume_signature(base) == T.resume_signature(T.resolve_profile("local", budget_s=60.0, workers=3))
    assert T.resume_signature(base) != T.resume_signature(T.resolve_profile("local", loss="focal"))


class _FakeDeadline:
    def __init__(self, remaining: float):
        self.left = remaining

    def remaining(self) -> float:
        return self.left


def test_budget_cosine_plans_over_the_epochs_that_fit():
    import time
    from types import SimpleNamespace

    deadline = _FakeDeadline(float("inf"))
    schedule = T.BudgetCosine(1.0, epochs=10, deadline=deadline, steps_per_epoch=4, floor=0.02)
    schedule.set_model(SimpleNamespace(optimizer=keras.optimizers.AdamW(1.0)))

    def lr():
        return float(schedule.model.optimizer.learning_rate)

    schedule.on_epoch_begin(0)
    schedule.on_train_batch_begin(0)
    assert lr() == pytest.approx(1.0)
    schedule.on_train_batch_begin(2)
    assert 0.9 < lr() < 1.0  # 5% of a 10-epoch plan
    # Epoch 0 took 100 s and 250 s are left: with the 1.1 margin two more epochs fit, three in all.
    schedule.epoch_start = time.monotonic() - 100.0
    deadline.left = 250.0
    logs = {}
    schedule.on_epoch_end(0, logs)
    assert schedule.planned == 3 and "learning_rate" in logs
    schedule.on_epoch_begin(2)
    schedule.on_train_batch_begin(3)
    assert lr() == pytest.approx(0.02 + 0.98 * 0.5 * (1 + np.cos(np.pi * (2.75 / 3))), rel=1e-6)
    assert lr() < 0.05
    # More time later never raises the rate again.
    deadline.left = 1e6
    schedule.on_epoch_end(2, {})
    schedule.on_epoch_begin(3)
    schedule.on_train_batch_begin(0)
    assert lr() < 0.05


def test_pass_slices_cover_every_tile_once_per_pass():
    x = np.arange(10, dtype=np.float32)[:, None]
    batches = T.PassSlices(x, x, batch_size=3, parts=2, seed=1)
    seen = []
    for epoch in range(4):
        batches.set_epoch(epoch)
        assert batches.num_batches == 2  # 5 tiles per slice
        seen.append(np.concatenate([batches[i][0][:, 0] for i in range(batches.num_batches)]))
    np.testing.assert_array_equal(np.sort(np.concatenate(seen[:2])), np.arange(10))
    np.testing.assert_array_equal(np.sort(np.concatenate(seen[2:])), np.arange(10))
    assert not np.array_equal(np.concatenate(seen[:2]), np.concatenate(seen[2:]))  # a new shuffle per pass
