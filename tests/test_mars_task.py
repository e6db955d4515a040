"""The Mars task's own pieces end to end on tiny synthetic data: outputs, the checker, reload, pass slices."""

from __future__ import annotations

import json

import numpy as np
import pytest

from an2dl_kit.tasks import mars, run
from an2dl_kit.tasks.runner import METRICS_KEYS

OUTPUTS = {"submission.csv", "test_probs.npz", "val_probs.npz", "model.keras", "history.csv", "metrics.json",
           "learning_curves.png", "class_iou.png", "predictions.png", "augmentation_preview.png", "examples.npz"}


@pytest.fixture(scope="module")
def smoke_run(synthetic_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("mars_smoke")
    metrics = run("mars", synthetic_dir, out, "smoke", provenance={"commit": "test"})
    return out, metrics


@pytest.mark.slow
def test_smoke_run_writes_every_output(smoke_run):
    out, metrics = smoke_run
    assert OUTPUTS <= {p.name for p in out.iterdir()}
    assert set(metrics["files"]) == OUTPUTS
    for name in OUTPUTS:
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "metrics.json").read_text())
    assert tuple(saved) == METRICS_KEYS
    assert saved["task"] == "mars" and saved["profile"] == "smoke" and saved["provenance"] == {"commit": "test"}
    assert set(saved["validation"]["iou"]) == {"soil", "bedrock", "sand", "big rock"}
    assert saved["tta"]["gain"] == pytest.approx(saved["validation_tta"]["miou"] - saved["validation"]["miou"])
    assert saved["phases"][0]["epochs_run"] == 1
    assert 0.0 <= saved["test_tta"]["miou"] <= 1.0  # synthetic data ships test labels
    assert saved["validation_tta"]["background_predicted"] == 0.0  # never background
    assert saved["postprocess"]["majority_filter"] in (0, 5)
    assert len(saved["details"]["class_weights"]) == 5 and saved["details"]["class_weight_history"]
    # One split: it follows the training seed, and val_probs.npz holds its validation tiles and their labels.
    from an2dl_kit.inference.probabilities import open_stored

    split = saved["split"]
    assert (split["folds"], split["fold"], split["split_seed"], saved["oof"]) == (1, None, 0, None)
    stored = open_stored(out / "val_probs.npz")
    assert stored.meta["split"] == split and len(stored.index) == saved["samples"]["validation"]
    assert stored.labels.shape == (len(stored.index), 64, 128) and stored.index.max() < split["rows"]

    counts = saved["cleaning"]["class_counts"]  # pixels per class, for the report's data section
    pixels = 64 * 128
    assert sum(counts["raw"]) == pixels * (saved["cleaning"]["kept"] + sum(saved["cleaning"]["removed"].values()))
    assert sum(counts["cleaned"]) == pixels * saved["cleaning"]["kept"]
    assert [sum(counts[s]) for s in ("train", "validation")] == [pixels * saved["samples"][s]
                                                                 for s in ("train", "validation")]
    assert counts["validation"][1:] == [sum(row) for row in saved["validation"]["confusion_matrix"]][1:]
    with np.load(out / "examples.npz") as examples:
        assert examples["preview"].shape == examples["preview_masks"].shape == (4, 4, 64, 128)
        assert examples["images"].dtype == np.uint8 and examples["predicted"].shape == examples["truth"].shape


@pytest.mark.slow
def test_smoke_submission_passes_the_checker(smoke_run, synthetic_dir, capsys):
    from an2dl_kit.cli import main
    from an2dl_kit.submission import read_mars_csv

    out, _ = smoke_run
    test_npz = synthetic_dir / "mars" / "mars_for_students.npz"
    assert main(["check", str(out / "submission.csv"), "--task", "mars", "--test", str(test_npz)]) == 0
    masks = read_mars_csv(out / "submission.csv")
    assert masks.shape[1:] == (64, 128) and masks.min() >= 1


@pytest.mark.slow
def test_smoke_model_reloads_and_predicts(smoke_run):
    from an2dl_kit.models.mars import load_model

    out, _ = smoke_run
    y = load_model(out / "model.keras")(np.zeros((1, 64, 128, 1), np.float32), training=False)
    assert tuple(y.shape) == (1, 64, 128, 5)
    compiled = load_model(out / "model.keras", compile=True)
    assert compiled.loss.terms == ("cce",) and compiled.loss.ignore_background


def test_inputs_are_scaled_to_unit_range_with_a_channel():
    x = mars.HOOKS.to_inputs(np.full((2, 64, 128), 255.0))
    assert x.shape == (2, 64, 128, 1) and x.dtype == np.float32 and float(x.max()) == 1.0


def test_pass_slices_cover_every_tile_once_per_pass():
    x = np.arange(10, dtype=np.float32)[:, None]
    batches = mars.PassSlices(x, x, batch_size=3, parts=2, seed=1)
    seen = []
    for epoch in range(4):
        batches.set_epoch(epoch)
        assert batches.num_batches == 2  # 5 tiles per slice
        seen.append(np.concatenate([batches[i][0][:, 0] for i in range(batches.num_batches)]))
    np.testing.assert_array_equal(np.sort(np.concatenate(seen[:2])), np.arange(10))
    np.testing.assert_array_equal(np.sort(np.concatenate(seen[2:])), np.arange(10))
    assert not np.array_equal(np.concatenate(seen[:2]), np.concatenate(seen[2:]))  # a new shuffle per pass


def test_pass_slices_refuse_to_echo():
    x = np.zeros((10, 1), np.float32)
    with pytest.raises(ValueError, match="pass slices cannot echo"):
        mars.PassSlices(x, x, batch_size=3, parts=2, echo=2)


def test_majority_filter_is_kept_only_when_it_does_not_lower_validation():
    from an2dl_kit.tasks import resolve_config

    config = resolve_config("mars", "smoke")
    truth = np.ones((2, 64, 128), np.uint8)
    truth[:, :, 64:] = 2
    probabilities = np.zeros((2, 64, 128, 5), np.float32)
    probabilities[..., 1] = 0.6
    probabilities[:, :, 64:, 2] = 0.9
    probabilities[:, 10, 10, 3] = 0.99  # an isolated wrong pixel the filter removes
    plain = mars.HOOKS.scores(truth, mars.HOOKS.to_labels(probabilities, config, {}))
    chosen = mars.HOOKS.choose_postprocess(config, truth, probabilities, plain)
    assert chosen["majority_filter"] == 5 and chosen["validation_miou_filtered"] >= plain["miou"]
    noisy_truth = truth.copy()
    noisy_truth[:, 10, 10] = 3  # now the isolated pixel is right, and filtering it away costs mIoU
    plain = mars.HOOKS.scores(noisy_truth, mars.HOOKS.to_labels(probabilities, config, {}))
    assert mars.HOOKS.choose_postprocess(config, noisy_truth, probabilities, plain)["majority_filter"] == 0
