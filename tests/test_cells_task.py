"""The cells task's own pieces: phases, loss and class weights, metrics, and a smoke run through the CLI."""

from __future__ import annotations

import json
from types import SimpleNamespace

import keras
import numpy as np
import pytest

from an2dl_kit.augment.cells import CellsAugment
from an2dl_kit.tasks import cells, resolve_config
from an2dl_kit.tasks.runner import METRICS_KEYS

EXPECTED_FILES = {"submission.csv", "submission.zip", "test_probs.npz", "val_probs.npz", "model.keras", "history.csv",
                  "metrics.json", "learning_curves.png", "confusion_matrix.png", "augmentation_preview.png",
                  "examples.npz"}
CPU = SimpleNamespace(kind="cpu", jit_compile=False, scaled_lr=lambda lr: lr)


def test_phases_freeze_then_finetune_only_for_pretrained_backbones():
    kaggle = resolve_config("cells", "kaggle")
    pretrained = cells.phases(kaggle, CPU, pretrained=True)
    assert [(p.name, p.epochs) for p in pretrained] == [("head", 40), ("finetune", 40)]
    assert [p.schedule.peak for p in pretrained] == [1e-4, 1e-5]
    # Restarts every 4 of 40 epochs, doubling: the reference solution's schedule in progress units.
    assert (pretrained[0].schedule.first_period, pretrained[0].schedule.t_mul) == (0.1, 2.0)
    scratch = cells.phases(kaggle, CPU, pretrained=False)
    assert [(p.name, p.epochs, p.schedule.warmup) for p in scratch] == [("train", 40, False)]
    local = resolve_config("cells", "local")
    warm = cells.phases(local, CPU, pretrained=False)
    assert [(p.name, p.epochs, p.schedule.warmup) for p in warm] == [("warmup", 2, True), ("train", 200, False)]
    assert warm[1].schedule.first_period == 1.0  # one cosine over the epochs that fit the budget


def _tiny_compiled_model():
    inputs = keras.Input((4, 4, 3))
    scaled = keras.layers.Rescaling(1 / 255)(inputs)  # unsaturated probabilities: no clipping in the loss
    outputs = keras.layers.Dense(8, activation="softmax")(keras.layers.Flatten()(scaled))
    model = keras.Model(inputs, outputs)
    cells.compile_classifier(model, resolve_config("cells", "local"), CPU)
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
    assert isinstance(model.optimizer, keras.optimizers.AdamW) and model.optimizer.weight_decay == 1e-4


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


def test_preview_rows_show_one_image_per_class_first():
    labels = np.array([2, 2, 0, 1, 0, 2])
    rows = cells.preview_rows(labels, 8, seed=0)
    assert sorted(labels[rows]) == [0, 1, 2]


def test_the_shifted_validation_copies_follow_their_generator_and_keep_the_labels():
    x_val = np.random.default_rng(0).integers(0, 256, (12, 96, 96, 3), dtype=np.uint8)
    data = SimpleNamespace(x_val=x_val, y_val=np.arange(12) % 8)
    config = resolve_config("cells", "smoke", ["tta_select_shift=robust_strong", "tta_select_copies=3"])

    def copies(seed, settings=config):
        return cells.HOOKS.shifted_validation(settings, data, np.random.default_rng(seed))

    images, labels, what = copies(0)
    assert images.shape == (36, 96, 96, 3) and images.dtype == np.uint8
    assert list(labels) == list(data.y_val) * 3 and what == "3 robust_strong copies of them"
    assert np.array_equal(images, copies(0)[0]) and not np.array_equal(images, copies(1)[0])
    assert not np.array_equal(images[:12], x_val) and not np.array_equal(images[:12], images[12:24])
    one = resolve_config("cells", "smoke", ["tta_select_shift=robust_strong", "tta_select_copies=1"])
    single, _, what = copies(0, one)
    assert np.array_equal(single, images[:12]) and what == "their robust_strong copy"
    none = resolve_config("cells", "smoke", ["tta_select_shift=none"])
    assert cells.HOOKS.shifted_validation(none, data, np.random.default_rng(0)) is None


@pytest.fixture(scope="module")
def smoke_run(synthetic_dir, tmp_path_factory):
    from an2dl_kit.cli import main

    out = tmp_path_factory.mktemp("cells_smoke")
    code = main(["train", "cells", "--data", str(synthetic_dir), "--out", str(out), "--profile", "smoke",
                 "--set", "tta=identity,flip_lr"])
    return code, out


@pytest.mark.slow
def test_smoke_run_writes_every_file_and_a_valid_submission(smoke_run, synthetic_dir, capsys):
    from an2dl_kit.cli import main

    code, out = smoke_run
    assert code == 0
    assert EXPECTED_FILES <= {p.name for p in out.iterdir()}
    metrics = json.loads((out / "metrics.json").read_text())
    assert tuple(metrics) == METRICS_KEYS
    assert set(metrics["files"]) == EXPECTED_FILES
    assert (metrics["task"], metrics["profile"]) == ("cells", "smoke")
    assert metrics["overrides"] == {"tta": "identity,flip_lr"}
    assert metrics["config"]["inference"]["tta"] == "identity,flip_lr"
    selection = metrics["tta"]["selection"]
    assert selection["images"] == (f"{metrics['samples']['validation']} validation images + 6 robust_strong copies of "
                                  "them")
    assert metrics["tta"]["views"] == (["identity", "flip_lr"] if selection["views"] >= selection["identity"]
                                       else ["identity"])
    assert metrics["phases"][0]["name"] == "train" and "history" not in metrics["phases"][0]
    assert len(metrics["validation"]["confusion_matrix"]) == 8
    assert metrics["tta"]["gain"] == pytest.approx(metrics["validation_tta"]["accuracy"]
                                                   - metrics["validation"]["accuracy"])
    assert metrics["model"]["backbone"] == "small_cnn" and len(metrics["details"]["class_weights"]) == 8
    assert metrics["test"] is not None and metrics["seconds"]["training"] > 0
    counts, cleaning = metrics["cleaning"]["class_counts"], metrics["cleaning"]
    assert sum(counts["raw"]) == cleaning["kept"] + sum(cleaning["removed"].values())
    assert sum(counts["cleaned"]) == cleaning["kept"] and sum(counts["train"]) == metrics["samples"]["train"]
    assert counts["validation"] == [sum(row) for row in metrics["validation"]["confusion_matrix"]]
    capsys.readouterr()
    assert main(["check", str(out / "submission.csv"), "--task", "cells", "--test",
                 str(synthetic_dir / "cells" / "test_set.npz")]) == 0
    assert "16" in capsys.readouterr().out
