"""The cells task: profiles, loss and class weights, phases, and a smoke run through the CLI."""

from __future__ import annotations

import argparse
import dataclasses
import json

import keras
import numpy as np
import pytest

from an2dl_kit.augment.cells import CellsAugment
from an2dl_kit.errors import KitError
from an2dl_kit.tasks import cells

EXPECTED_FILES = {"submission.csv", "submission.zip", "model.keras", "history.csv", "metrics.json",
                  "learning_curves.png", "confusion_matrix.png", "augmentation_preview.png"}


def test_profiles_are_frozen_and_complete():
    assert set(cells.PROFILES) == {"kaggle", "local", "smoke"}
    kaggle = cells.PROFILES["kaggle"]
    assert (kaggle.backbone, kaggle.weights, kaggle.batch_size, kaggle.label_smoothing) == (
        "convnext_base", "imagenet", 64, 0.1)
    assert kaggle.finetune_epochs > 0 and not kaggle.allow_random_fallback
    assert cells.PROFILES["local"].budget_s <= 600
    with pytest.raises(dataclasses.FrozenInstanceError):
        kaggle.epochs = 1


def test_overrides_apply_and_unknown_ones_are_refused():
    profile = cells.resolve_profile("local", backbone="mobilenet", seed=None)
    assert profile.backbone == "mobilenet" and profile.seed == cells.PROFILES["local"].seed
    with pytest.raises(KitError, match="cells profile override colour: unknown field"):
        cells.resolve_profile("local", colour="red")
    with pytest.raises(KitError, match="profile 'huge': unknown"):
        cells.resolve_profile("huge")


def test_phases_freeze_then_finetune_only_for_pretrained_backbones():
    kaggle = cells.PROFILES["kaggle"]
    pretrained = cells._phases(kaggle, pretrained=True)
    assert [(p.name, p.trainable) for p in pretrained] == [("head", "head"), ("finetune", "all_but_bn")]
    assert [p.learning_rate for p in pretrained] == [kaggle.learning_rate, kaggle.finetune_learning_rate]
    scratch = cells._phases(kaggle, pretrained=False)
    assert scratch == [cells.PhasePlan("train", kaggle.epochs, kaggle.learning_rate, "all")]
    warm = cells._phases(dataclasses.replace(kaggle, warmup_epochs=1), pretrained=False)
    assert [(p.name, p.epochs, p.warmup) for p in warm] == [("warmup", 1, True), ("train", kaggle.epochs, False)]


def test_epochs_are_fitted_to_the_budget():
    # Steady 20 s epochs; the first one also paid 10 s of start-up, paid again by the next phase.
    assert cells.fitted_epochs(40, remaining_s=310.0, epoch_seconds=[30.0, 20.0]) == 15
    assert cells.fitted_epochs(40, remaining_s=300.0, epoch_seconds=[20.0]) == 15
    assert cells.fitted_epochs(10, remaining_s=300.0, epoch_seconds=[20.0]) == 10
    assert cells.fitted_epochs(40, remaining_s=5.0, epoch_seconds=[20.0]) == 1
    assert cells.fitted_epochs(40, remaining_s=float("inf"), epoch_seconds=[20.0]) == 40
    assert cells.fitted_epochs(40, remaining_s=300.0, epoch_seconds=[]) == 40


def test_warmup_ramps_the_learning_rate_then_holds():
    schedule = cells.make_optimizer(2e-3, steps_per_epoch=10, restart_epochs=1.0, t_mul=2.0, weight_decay=0.0,
                                    warmup_epochs=2)._learning_rate
    assert [round(float(schedule(step)), 6) for step in (0, 10, 20, 50)] == [0.0, 1e-3, 2e-3, 2e-3]


def test_restart_period_is_converted_from_epochs_to_steps():
    optimizer = cells.make_optimizer(1e-3, steps_per_epoch=50, restart_epochs=2.0, t_mul=2.0, weight_decay=1e-4)
    schedule = optimizer._learning_rate
    assert isinstance(optimizer, keras.optimizers.AdamW)
    assert schedule.first_decay_steps == 100
    assert float(schedule(0)) == pytest.approx(1e-3)
    assert float(schedule(99)) < 1e-4
    assert float(schedule(100)) == pytest.approx(1e-3)  # the restart


def _tiny_compiled_model():
    inputs = keras.Input((4, 4, 3))
    scaled = keras.layers.Rescaling(1 / 255)(inputs)  # unsaturated probabilities: no clipping in the loss
    outputs = keras.layers.Dense(8, activation="softmax")(keras.layers.Flatten()(scaled))
    model = keras.Model(inputs, outputs)
    cells.compile_classifier(model, learning_rate=1e-3, steps_per_epoch=10, profile=cells.PROFILES["local"],
                             jit_compile=False)
    return model


def test_label_smoothing_and_class_weights_reach_the_loss():
    model = _tiny_compiled_model()
    labels = np.array([0, 3, 3, 7])
    weights = cells.class_weight_vector(np.array([0, 3, 3, 3, 7, 7]))
    np.testing.assert_allclose(weights[[0, 3, 7]], [2.0, 2 / 3, 1.0], rtol=1e-6)
    x, y, sample_weight = CellsAugment("none", class_weights=weights)(
        np.random.default_rng(0).integers(0, 256, (4, 4, 4, 3)).astype(np.uint8), labels,
        np.random.default_rng(0))
    np.testing.assert_allclose(sample_weight, [2.0, 2 / 3, 2 / 3, 1.0], rtol=1e-6)

    # Confident and right (0.9 on the true class): smoothing makes the loss ~4x larger here.
    probabilities = (0.9 * y + 0.1 / 7 * (1 - y)).astype(np.float32)
    smoothed = y * 0.9 + 0.1 / 8
    per_sample = -(smoothed * np.log(probabilities)).sum(axis=1)
    expected = (per_sample * sample_weight).sum() / len(x)
    loss = model.compute_loss(x=x, y=y, y_pred=probabilities, sample_weight=sample_weight)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    unsmoothed = -(y * np.log(probabilities)).sum(axis=1)
    assert float(loss) > 3 * (unsmoothed * sample_weight).mean()
    assert model.loss.get_config()["label_smoothing"] == 0.1


def test_precision_and_recall_use_the_top_class_not_a_threshold():
    metrics = {m.name: m for m in cells.make_metrics()}
    assert list(metrics) == ["accuracy", "precision", "recall", "f1"]
    y = cells.onehot(np.array([0, 1, 2]))
    p = np.full((3, 8), 0.01, np.float32)
    p[0, 0] = 0.7  # right and confident
    p[1, 1] = 0.4  # right, but below a 0.5 threshold
    p[2, 3], p[2, 2] = 0.4, 0.3  # wrong
    for metric in metrics.values():
        metric.update_state(y, p)
    # With Keras' default 0.5 threshold precision would be 1.0 and recall 1/3.
    for name in ("accuracy", "precision", "recall"):
        assert float(metrics[name].result()) == pytest.approx(2 / 3), name


def test_compare_writes_one_row_per_backbone(tmp_path, monkeypatch):
    calls = []

    def fake_run(data, out_dir, profile, *, budget_s=None, backbone=None, weights=None):
        calls.append((backbone, weights, profile, budget_s))
        scores = {"accuracy": 0.5, "precision": 0.4, "recall": 0.3, "f1": 0.2}
        return {"backbone": backbone, "weights_used": "none", "validation": scores,
                "validation_tta": {**scores, "accuracy": 0.55}, "params": 123, "seconds": {"training": 9.5}}

    monkeypatch.setattr(cells, "run", fake_run)
    args = argparse.Namespace(data=None, out=tmp_path, profile="smoke", budget=30.0,
                              backbones="small_cnn, mobilenet")
    assert cells.compare_cli(args) == 0
    assert calls == [("small_cnn", "none", "smoke", 30.0), ("mobilenet", None, "smoke", 30.0)]
    table = (tmp_path / "compare_cells.md").read_text()
    assert "| small_cnn | none | 0.5000 | 0.4000 | 0.3000 | 0.2000 | 0.5500 | 123 | 9.5000 |" in table
    assert (tmp_path / "compare_cells.csv").read_text().startswith("backbone,weights,accuracy,precision")
    with pytest.raises(KitError, match="--backbones vgg: unknown backbone"):
        cells.compare_cli(argparse.Namespace(data=None, out=tmp_path, profile="smoke", budget=None,
                                             backbones="vgg"))


@pytest.fixture(scope="module")
def smoke_run(synthetic_dir, tmp_path_factory):
    from an2dl_kit.cli import main

    out = tmp_path_factory.mktemp("cells_smoke")
    code = main(["train", "cells", "--data", str(synthetic_dir), "--out", str(out), "--profile", "smoke"])
    return code, out


@pytest.mark.slow
def test_smoke_run_writes_every_file_and_a_valid_submission(smoke_run, synthetic_dir, capsys):
    from an2dl_kit.cli import main

    code, out = smoke_run
    assert code == 0
    assert EXPECTED_FILES <= {p.name for p in out.iterdir()}
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("task", "profile", "config", "runtime", "versions", "provenance", "phases", "validation",
                "validation_tta", "tta_gain", "files", "seconds_total"):
        assert key in metrics
    assert set(metrics["files"]) == EXPECTED_FILES
    assert metrics["task"] == "cells" and metrics["profile"] == "smoke"
    assert metrics["phases"][0]["name"] == "train" and "history" not in metrics["phases"][0]
    assert len(metrics["validation"]["confusion_matrix"]) == 8
    assert {"precision", "recall", "f1"} <= set(metrics["validation_tta"])
    assert metrics["tta_gain"] == pytest.approx(metrics["validation_tta"]["accuracy"]
                                                - metrics["validation"]["accuracy"])
    assert "keras" in metrics["versions"] and metrics["seconds"]["training"] > 0
    assert set(metrics["seconds"]["phases"]) == {"train"}
    capsys.readouterr()
    assert main(["check", str(out / "submission.csv"), "--task", "cells", "--test",
                 str(synthetic_dir / "cells" / "test_set.npz")]) == 0
    assert "16" in capsys.readouterr().out
