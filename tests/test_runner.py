"""The shared task runner: one metrics.json schema, TTA through named views, compare, the CLI wiring."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from an2dl_kit.errors import KitError
from an2dl_kit.tasks import runner


class _PixelModel:
    """An 'identity-like' model: each pixel's probabilities depend only on that pixel, so every flip view
    predicts the same maps once undone."""

    def predict(self, x, batch_size=None, verbose=0):
        v = np.asarray(x, np.float32)
        logits = np.concatenate([v * k for k in range(5)], axis=-1)
        return np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)


def test_dense_tta_on_an_identity_like_model_returns_the_plain_prediction():
    x = np.random.default_rng(0).uniform(size=(3, 64, 128, 1)).astype(np.float32)
    identity, mean = runner.predict_views(_PixelModel(), x, ("identity", "flip_lr", "flip_ud"), dense=True,
                                          batch_size=2)
    # The input is not symmetric: a view left flipped (not undone) would change the mean.
    np.testing.assert_allclose(mean, identity, rtol=1e-6)
    np.testing.assert_allclose(identity, _PixelModel().predict(x), rtol=1e-6)


@pytest.fixture(scope="module")
def smoke_metrics(synthetic_dir, tmp_path_factory):
    from an2dl_kit.tasks import run

    saved = {}
    for task in ("cells", "mars"):
        out = tmp_path_factory.mktemp(task)
        run(task, synthetic_dir, out, "smoke")
        saved[task] = json.loads((out / "metrics.json").read_text())
    return saved


@pytest.mark.slow
def test_both_tasks_write_the_documented_metrics_keys(smoke_metrics, synthetic_dir):
    cells, mars = smoke_metrics["cells"], smoke_metrics["mars"]
    assert tuple(cells) == tuple(mars) == runner.METRICS_KEYS
    for key in ("seconds", "tta", "samples", "machine", "runtime"):
        assert set(cells[key]) == set(mars[key]), key
    assert set(cells["seconds"]) == {"training", "training_cpu", "predict", "total"}
    assert {"name", "params"} <= set(cells["model"]) & set(mars["model"])
    assert set(cells["config"]) == set(mars["config"]) == {"data", "model", "training", "augmentation",
                                                           "inference", "run"}


def test_summary_lines_show_both_validations_and_the_gain():
    hooks = runner.hooks_for("cells")
    scores = {"accuracy": 0.5, "precision": 0.4, "recall": 0.3, "f1": 0.2}
    metrics = {"validation": scores, "validation_tta": {**scores, "accuracy": 0.6}, "test": None,
               "tta": {"configured": ["identity", "flip_lr"], "views": ["identity", "flip_lr"], "gain": 0.1,
                       "selection": {"images": "8 validation images + a copy", "identity": 0.5, "views": 0.5625}},
               "postprocess": {}}
    lines = runner.summary_lines(hooks, metrics)
    assert lines[0].startswith("validation ") and "accuracy 0.5000" in lines[0]
    assert "accuracy 0.6000" in lines[1]
    assert lines[2] == ("TTA gain +0.1000 (2 views); submitted with identity, flip_lr, chosen on 8 validation "
                        "images + a copy (0.5000 -> 0.5625)")
    assert len(lines) == 3


def _args(tmp_path, **kwargs) -> argparse.Namespace:
    base = dict(task="cells", data=None, out=tmp_path, profile="smoke", budget=30.0, seed=None, backbone=None,
                weights=None, loss=None, set=None, vary=None, backbones=None, losses=None)
    return argparse.Namespace(**{**base, **kwargs})


def test_compare_runs_one_variant_per_value_and_writes_a_table(tmp_path, monkeypatch):
    calls = []

    def fake_run(task, data, out_dir, profile, *, overrides=None, provenance=None):
        calls.append((task, out_dir.name, profile, list(overrides)))
        scores = {"accuracy": 0.5, "precision": 0.4, "recall": 0.3, "f1": 0.2, "confusion_matrix": np.eye(2, dtype=int)}
        return {"validation": scores, "validation_tta": {**scores, "accuracy": 0.55}, "test_tta": None,
                "phases": [{"epochs_run": 3}], "model": {"params": 123}, "seconds": {"training": 9.5}}

    monkeypatch.setattr(runner, "run", fake_run)
    assert runner.compare_cli(_args(tmp_path, backbones="small_cnn, mobilenet")) == 0
    assert calls == [("cells", "small_cnn", "smoke", ["budget_s=30.0", "weights=none", "backbone=small_cnn"]),
                     ("cells", "mobilenet", "smoke", ["budget_s=30.0", "backbone=mobilenet"])]
    table = (tmp_path / "compare_cells.md").read_text()
    assert "| small_cnn | 0.5000 | 0.5500 | 0.4000 | 0.3000 | 0.2000 | 3 | 123 | 9.5000 |" in table
    assert (tmp_path / "compare_cells.csv").read_text().startswith("variant,plain_accuracy,accuracy,precision")
    assert "confusion" not in table and len(table.strip().splitlines()) == 4  # header, rule, two variants


def test_compare_checks_every_variant_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "run", lambda *a, **k: pytest.fail("trained before checking every variant"))
    with pytest.raises(KitError, match="loss 'hinge': unknown; choose one of cce, dice, tversky, focal, lovasz"):
        runner.compare_cli(_args(tmp_path, task="mars", losses="cce,hinge"))
    with pytest.raises(KitError, match="--vary loss=cce,dice"):
        runner.compare_cli(_args(tmp_path, task="mars"))


def test_cli_shortcuts_become_validated_overrides(tmp_path):
    args = _args(tmp_path, budget=None, seed=3, loss="dice", set=["epochs=2", "tta=none"])
    assert runner.cli_overrides(args) == ["seed=3", "loss=dice", "epochs=2", "tta=none"]


TRAINED_STATISTICS = ["bn_adapt=none"]  # the stand-in models below are not Keras models: nothing to adapt


class _SideModel:
    """Predicts class 0 (p 0.9) when an image's brightest pixel is on the left, class 1 (p 0.99) when on the
    right: a left-right flip turns every class-0 image into a confident class-1 one."""

    def predict(self, x, batch_size=None, verbose=0):
        column = np.asarray(x).max(axis=(1, 3)).argmax(axis=1)
        right = column >= np.asarray(x).shape[2] // 2
        probabilities = np.full((len(x), 8), 0.001, np.float32)
        probabilities[~right, 0], probabilities[right, 1] = 0.9, 0.99
        return probabilities


def _side_images(labels: np.ndarray) -> np.ndarray:
    images = np.zeros((len(labels), 96, 96, 3), np.uint8)
    for i, label in enumerate(labels):
        images[i, 48, 10 if label == 0 else 85] = 255
    return images


def test_tta_selection_keeps_identity_when_the_other_views_hurt():
    from an2dl_kit.tasks import resolve_config

    hooks = runner.hooks_for("cells")
    labels = np.array([0, 1] * 8)
    data = runner.RunData(_side_images(labels), labels, _side_images(labels), labels, _side_images(labels),
                          labels, cleaning={})
    plan = runner.TrainingPlan(_SideModel(), None, None, [], {}, batch_size=4)
    config = resolve_config("cells", "smoke", ["tta=identity,flip_lr", "tta_select_shift=none", *TRAINED_STATISTICS])
    results = runner.evaluate(hooks, config, plan, data)
    assert results.validation["accuracy"] == 1.0 and results.validation_tta["accuracy"] == 0.5
    assert results.views == ("identity",)
    assert results.selection == {"images": "16 validation images", "identity": 1.0, "views": 0.5}
    assert results.test_tta["accuracy"] == 1.0 and results.test_labels.tolist() == labels.tolist()
    forced_config = resolve_config("cells", "smoke", ["tta=identity,flip_lr", "tta_select=false", *TRAINED_STATISTICS])
    forced = runner.evaluate(hooks, forced_config, plan, data)
    assert forced.views == ("identity", "flip_lr") and forced.test_tta["accuracy"] == 0.5
    assert forced.selection == {}


def test_a_shifted_validation_copy_can_outvote_the_clean_images(monkeypatch):
    """Views that cost 8 of 16 clean validation images but win all 16 shifted ones are kept: the decision
    pools both sets (24 of 32 right with the views, 16 without)."""
    from an2dl_kit.tasks import resolve_config

    hooks = runner.hooks_for("cells")
    labels = np.array([0, 1] * 8)
    data = runner.RunData(_side_images(labels), labels, _side_images(labels), labels, None, None, cleaning={})
    plan = runner.TrainingPlan(_SideModel(), None, None, [], {}, batch_size=4)
    # Class-1 cells whose bright pixel sits left: identity calls them 0, the flip-averaged prediction 1.
    shifted = (_side_images(np.zeros(16, int)), np.ones(16, int), "a shifted copy")
    monkeypatch.setattr(hooks, "shifted_validation", lambda config, data, rng: shifted)
    results = runner.evaluate(hooks, resolve_config("cells", "smoke", ["tta=identity,flip_lr", *TRAINED_STATISTICS]),
                               plan, data)
    assert results.validation_tta["accuracy"] == 0.5
    assert results.selection == {"images": "16 validation images + a shifted copy", "identity": 0.5,
                                 "views": 0.75}
    assert results.views == ("identity", "flip_lr")
