"""Kept probabilities and ensembles: the file format, `an2dl ensemble`, and `members` inside one run."""

from __future__ import annotations

import json
import shutil
import zipfile

import numpy as np
import pytest

from an2dl_kit.errors import KitError
from an2dl_kit.inference import ensemble
from an2dl_kit.inference.probabilities import PROBS_FILE, encoding_for, fingerprint, open_stored, writer
from an2dl_kit.submission import read_cells_csv, read_mars_csv
from an2dl_kit.task import CELLS, MARS

FINGERPRINT = "f" * 64


def write_run(folder, task: str, probabilities: np.ndarray, *, validation: float = 0.5,
              test_fingerprint: str = FINGERPRINT, models: tuple[str, ...] = (), **meta) -> None:
    """A run folder holding only `test_probs.npz`, written in two chunks as the runner writes it (`meta`: more
    of what the runner records, e.g. its BatchNorm adaptation and batch size)."""
    info = {"cells": CELLS, "mars": MARS}[task]
    with writer(folder / PROBS_FILE, task=task, encoding=encoding_for(info, task == "mars"),
                rows=len(probabilities), item_shape=info.label_shape, test_fingerprint=test_fingerprint) as sink:
        half = len(probabilities) // 2
        sink.write(probabilities[:half])
        sink.write(probabilities[half:])
        sink.meta.update(score=info.score, validation=validation, views=["identity", "flip_lr"],
                         models=list(models), **meta)


def mars_maps(pixels: dict[int, float], background: float = 0.0) -> np.ndarray:
    """Two 64x128 tiles whose every pixel has the given class probabilities (and background)."""
    probs = np.zeros((2, 64, 128, 5), np.float32)
    probs[..., 0] = background
    for label, p in pixels.items():
        probs[..., label] = p
    return probs


@pytest.fixture
def mars_runs(tmp_path):
    """Run A and B of the docstring table below, on the left and right halves of the tiles.

    left:  A 1 0.90 / 3 0.10, B 1 0.40 / 3 0.60 -> mean 1 0.65 -> 1
    right: A 90% background, then 1 0.02 / 4 0.08 (renormalised: 4 0.8); B 1 0.6 / 4 0.4 -> 4
           (a mean of the raw maps would say 1: background is never a candidate, so it is not kept)
    """
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    left_a, left_b = mars_maps({1: 0.9, 3: 0.1}), mars_maps({1: 0.4, 3: 0.6})
    right_a, right_b = mars_maps({1: 0.02, 4: 0.08}, background=0.9), mars_maps({1: 0.6, 4: 0.4})
    write_run(a, "mars", np.concatenate([left_a[:, :, :64], right_a[:, :, 64:]], axis=2), validation=0.9)
    write_run(b, "mars", np.concatenate([left_b[:, :, :64], right_b[:, :, 64:]], axis=2), validation=0.1)
    return a, b


def test_averaging_two_mars_runs_gives_the_expected_masks(mars_runs, tmp_path):
    record = ensemble.ensemble("mars", list(mars_runs), tmp_path / "out")
    masks = read_mars_csv(tmp_path / "out" / "submission.csv")
    assert masks.shape == (2, 64, 128)
    assert (masks[:, :, :64] == 1).all() and (masks[:, :, 64:] == 4).all()
    assert [m["weight"] for m in record["members"]] == [0.5, 0.5]
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["files"] == ["submission.csv", "metrics.json"] and saved["test"] is None


def test_validation_weights_follow_each_runs_score(mars_runs, tmp_path):
    a, b = mars_runs
    record = ensemble.ensemble("mars", [a, b], tmp_path / "out", weighting="validation")
    assert [m["weight"] for m in record["members"]] == pytest.approx([0.9, 0.1])
    masks = read_mars_csv(tmp_path / "out" / "submission.csv")
    assert (masks[:, :, :64] == 1).all()  # 0.9 * 0.9 + 0.1 * 0.4 for soil


def test_runs_on_another_test_set_are_refused_and_nothing_is_written(mars_runs, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    write_run(other, "mars", mars_maps({2: 1.0}), test_fingerprint="e" * 64)
    with pytest.raises(KitError, match=r"other: predicted another test set than .*a \(eeeeeeeeeeee, 2 images vs "
                                       r"ffffffffffff") as error:
        ensemble.ensemble("mars", [mars_runs[0], other], tmp_path / "out")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()
    with pytest.raises(KitError, match="holds mars probabilities, not cells"):
        ensemble.ensemble("cells", [mars_runs[0]], tmp_path / "out")


def test_missing_truncated_and_corrupted_files_are_refused_and_nothing_is_written(mars_runs, tmp_path):
    a, _ = mars_runs
    empty, truncated, corrupted = (tmp_path / name for name in ("empty", "truncated", "corrupted"))
    empty.mkdir()
    shutil.copytree(a, truncated)
    shutil.copytree(a, corrupted)
    data = (a / PROBS_FILE).read_bytes()
    (truncated / PROBS_FILE).write_bytes(data[:len(data) // 2])
    # Random maps, so the deflated stream is long and a byte in its middle is data, not a header.
    write_run(corrupted, "mars", np.random.default_rng(0).dirichlet(np.ones(5), size=(2, 64, 128)))
    damaged = bytearray((corrupted / PROBS_FILE).read_bytes())
    damaged[len(damaged) // 3] ^= 0xFF
    (corrupted / PROBS_FILE).write_bytes(bytes(damaged))
    cases = {empty: "empty: no test_probs.npz", truncated: "not a readable probabilities file",
             corrupted: "corrupted probabilities"}
    for folder, message in cases.items():
        with pytest.raises(KitError, match=message) as error:
            ensemble.ensemble("mars", [a, folder], tmp_path / "out")
        assert "\n" not in str(error.value)
        assert not (tmp_path / "out").exists(), folder.name


def test_uint8_round_trip_changes_no_argmax_beyond_ties(tmp_path):
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(6, 64, 128, 5)).astype(np.float32) * 3
    probs = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    write_run(tmp_path, "mars", probs)
    stored = open_stored(tmp_path / PROBS_FILE)
    assert stored.shape == (6, 64, 128, 4) and stored.encoding.dtype == "uint8"
    decoded = np.concatenate(list(stored.chunks(rows=4)))
    got, expected = stored.encoding.labels(decoded), np.argmax(probs[..., 1:], axis=-1) + 1
    changed = got != expected
    assert changed.mean() < 0.01
    conditional = probs[..., 1:] / probs[..., 1:].sum(axis=-1, keepdims=True)
    winner = np.take_along_axis(conditional, (expected - 1)[..., None], -1)[..., 0]
    taken = np.take_along_axis(conditional, (got - 1)[..., None], -1)[..., 0]
    assert (winner - taken)[changed].max() <= 1.0 / 255  # only ties at the 8-bit resolution
    np.testing.assert_array_equal(np.load(tmp_path / PROBS_FILE)["probs"].shape, (6, 64, 128, 4))


def test_fingerprint_tells_test_sets_apart():
    test = np.arange(2 * 64 * 128, dtype=np.float32).reshape(2, 64, 128)
    assert fingerprint(test) == fingerprint(test.copy())
    assert fingerprint(test) != fingerprint(test[::-1])
    assert fingerprint(test) != fingerprint(test.reshape(2, 128, 64))


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """Two small classifiers saved as run folders would hold them."""
    import keras

    folders = []
    for seed in (0, 1):
        keras.utils.set_random_seed(seed)
        model = keras.Sequential([keras.Input(CELLS.image_shape), keras.layers.GlobalAveragePooling2D(),
                                  keras.layers.Dense(CELLS.num_classes, activation="softmax")])
        folder = tmp_path_factory.mktemp(f"cells_run_{seed}")
        model.save(folder / "model.keras")
        folders.append(folder)
    return folders


def test_cells_ensemble_writes_labels_and_a_zip_of_every_member(tiny_models, tmp_path):
    a, b = tiny_models
    probs_a = np.eye(8, dtype=np.float32)[[0, 1, 2, 3]] * 0.7 + 0.3 / 8
    probs_b = np.eye(8, dtype=np.float32)[[0, 5, 5, 5]] * 0.6 + 0.4 / 8
    probs_b[2, 2] = 0.5  # image 2: (0.74 + 0.5) / 2 for class 2 beats (0.04 + 0.65) / 2 for 5
    write_run(a, "cells", probs_a, models=("model.keras",))
    write_run(b, "cells", probs_b, models=("model.keras",), inference={"bn_adapt": "set"}, batch_size=32)
    record = ensemble.ensemble("cells", [a, b], tmp_path / "out")
    assert read_cells_csv(tmp_path / "out" / "submission.csv").tolist() == [0, 1, 2, 3]
    assert record["files"] == ["submission.csv", "submission.zip", "metrics.json"]
    with zipfile.ZipFile(tmp_path / "out" / "submission.zip") as archive:
        assert sorted(archive.namelist()) == ["model.py", "model_0.keras", "model_1.keras"]
        source = archive.read("model.py").decode()
    # A run written before BatchNorm adaptation existed predicts as it did; the other keeps its adaptation.
    assert "('model_0.keras', ('identity', 'flip_lr'), 0.5, 'none', 64)" in source
    assert "('model_1.keras', ('identity', 'flip_lr'), 0.5, 'set', 32)" in source


def test_cells_ensemble_without_the_models_is_refused(tmp_path):
    write_run(tmp_path, "cells", np.full((3, 8), 0.125, np.float32), models=("model.keras",))
    with pytest.raises(KitError, match="no model.keras for the Codabench submission.zip"):
        ensemble.ensemble("cells", [tmp_path], tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_two_members_on_the_smoke_profile_write_both_scores_and_one_submission(synthetic_dir, tmp_path):
    from an2dl_kit.tasks import run

    metrics = run("mars", synthetic_dir, tmp_path / "run", "smoke", overrides={"members": 2})
    members = metrics["members"]
    assert [m["folder"] for m in members] == ["member_0", "member_1"] and [m["seed"] for m in members] == [0, 1]
    for member in members:
        assert 0.0 <= member["validation"]["miou"] <= 1.0 and member["phases"][0]["epochs_run"] == 1
        assert member["budget_s"] <= 120.0
        assert (tmp_path / "run" / member["folder"] / "model.keras").is_file()
    assert 0.0 <= metrics["validation"]["miou"] <= 1.0
    assert [f for f in metrics["files"] if f.endswith(".csv") and "history" not in f] == ["submission.csv"]
    assert {"test_probs.npz", "member_0/model.keras", "member_1/model.keras"} <= set(metrics["files"])
    # The kept probabilities reproduce the submission and match the data's test set.
    record = ensemble.ensemble("mars", [tmp_path / "run"], tmp_path / "again", data=synthetic_dir)
    chosen = metrics["validation"] if metrics["tta"]["views"] == ["identity"] else metrics["validation_tta"]
    assert record["members"][0]["validation"] == pytest.approx(chosen["miou"])
    assert 0.0 <= record["test"]["miou"] <= 1.0
