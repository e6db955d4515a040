"""K-fold: the partition, the kept validation predictions, the OOF score and the checks of fold ensembles."""

from __future__ import annotations

import json

import numpy as np
import pytest

from an2dl_kit.data.split import kfold_assignment, mars_strata, partition
from an2dl_kit.errors import KitError
from an2dl_kit.inference import ensemble
from an2dl_kit.inference.probabilities import PROBS_FILE, VAL_PROBS_FILE, encoding_for, open_stored, writer
from an2dl_kit.metrics import cells_scores, mars_scores
from an2dl_kit.task import CELLS, MARS
from an2dl_kit.tasks import resolve_config

FINGERPRINT = "f" * 64


# ---- the partition ---------------------------------------------------------------------------------------
def test_kfold_partition_is_stratified_balanced_and_covers_every_row_once():
    labels = np.repeat(np.arange(5), [40, 23, 9, 3, 1])  # a rare class with fewer rows than folds
    assignment = kfold_assignment(labels, 4, seed=7)
    assert sorted(np.unique(assignment)) == [0, 1, 2, 3]
    sizes = np.bincount(assignment)
    assert sizes.max() - sizes.min() <= 1 and sizes.sum() == len(labels)
    for cls in range(5):
        per_fold = np.bincount(assignment[labels == cls], minlength=4)
        assert per_fold.max() - per_fold.min() <= 1, cls
    assert np.bincount(assignment[labels == 2], minlength=4).tolist() in ([3, 2, 2, 2], [2, 3, 2, 2],
                                                                          [2, 2, 3, 2], [2, 2, 2, 3])
    assert not np.array_equal(assignment, kfold_assignment(labels, 4, seed=8))


def test_fold_runs_with_other_training_seeds_share_one_partition():
    labels = np.repeat(np.arange(3), [30, 20, 10])
    splits = []
    for seed in (0, 1, 42):
        config = resolve_config("cells", "smoke", {"folds": 3, "fold": 1, "seed": seed})
        assert config.data.split_seed is None and config.training.seed == seed
        splits.append(partition(labels, folds=3, fold=1, val_fraction=config.data.val_fraction, seed=0))
    for _, val, assignment in splits[1:]:
        np.testing.assert_array_equal(assignment, splits[0][2])
        np.testing.assert_array_equal(val, splits[0][1])
    train, val, assignment = splits[0]
    np.testing.assert_array_equal(val, np.flatnonzero(assignment == 1))
    assert np.intersect1d(train, val).size == 0 and len(train) + len(val) == len(labels)
    # The folds' validation sets cover every row exactly once.
    covered = np.concatenate([partition(labels, folds=3, fold=k, val_fraction=0.1, seed=0)[1] for k in range(3)])
    assert sorted(covered.tolist()) == list(range(len(labels)))


def test_mars_folds_spread_big_rock_tiles_over_every_fold():
    masks = np.ones((30, 4, 4), np.uint8)
    masks[:6, 0, 0] = 4  # six big-rock tiles
    assignment = kfold_assignment(mars_strata(masks), 3, seed=0)
    assert np.bincount(assignment[:6], minlength=3).tolist() == [2, 2, 2]


def test_one_split_still_follows_the_training_seed():
    from an2dl_kit.data.split import stratified_split

    labels = np.repeat(np.arange(3), [30, 20, 10])
    train, val, assignment = partition(labels, folds=1, fold=None, val_fraction=0.2, seed=5)
    expected = stratified_split(labels, 0.2, 5)
    np.testing.assert_array_equal(train, expected[0])
    np.testing.assert_array_equal(val, expected[1])
    assert set(np.unique(assignment)) == {-1, 0} and (assignment == 0).sum() == len(val)


@pytest.mark.parametrize("overrides, shown", [
    (["fold=1"], "cells setting fold=1: needs folds >= 2"),
    (["folds=3", "fold=3"], "cells setting fold=3: out of range for folds=3 (0..2)"),
    (["folds=0"], "cells setting folds=0: out of range [1, 20]"),
])
def test_bad_fold_settings_are_one_line_errors(overrides, shown):
    with pytest.raises(KitError, match=r"^" + shown.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        resolve_config("cells", "smoke", overrides)


# ---- fold runs on disk -----------------------------------------------------------------------------------
def split_meta(fold: int, folds: int = 3, assignment: str = "a" * 64, train: str = "b" * 64) -> dict:
    return {"folds": folds, "fold": fold, "split_seed": 0, "rows": 12, "assignment_sha256": assignment,
            "train_sha256": train}


def write_fold(folder, task: str, fold: int, test: np.ndarray, val: np.ndarray, index: np.ndarray,
               labels: np.ndarray, *, validation: float = 0.5, split: dict | None = None,
               inference: dict | None = None) -> None:
    """A fold run's test_probs.npz and val_probs.npz, written as the runner writes them."""
    info = {"cells": CELLS, "mars": MARS}[task]
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"score": info.score, "validation": validation, "views": ["identity"], "models": [],
            "split": split or split_meta(fold), "inference": inference or {}}
    common = {"task": task, "encoding": encoding_for(info, task == "mars"), "item_shape": info.label_shape}
    with writer(folder / PROBS_FILE, rows=len(test), test_fingerprint=FINGERPRINT, **common) as sink:
        sink.write(test)
        sink.meta.update(meta)
    with writer(folder / VAL_PROBS_FILE, rows=len(val), index=index, labels=labels, **common) as sink:
        sink.write(val)
        sink.meta.update(meta)


def one_hot(labels, classes: int = 8, sure: float = 0.7) -> np.ndarray:
    return np.eye(classes, dtype=np.float32)[labels] * (sure - (1 - sure) / (classes - 1)) + (1 - sure) / (classes - 1)


@pytest.fixture
def cells_folds(tmp_path):
    """Three cells folds of 12 images: truth 0..7 cycling; each fold gets one image wrong (two for fold 2)."""
    truth = np.arange(12) % 8
    assignment = np.arange(12) % 3
    folders = []
    for fold in range(3):
        index = np.flatnonzero(assignment == fold)
        predicted = truth[index].copy()
        predicted[0] = (predicted[0] + 1) % 8
        if fold == 2:
            predicted[1] = (predicted[1] + 3) % 8
        folder = tmp_path / f"fold_{fold}"
        write_fold(folder, "cells", fold, one_hot(np.array([fold, fold, 5])), one_hot(predicted), index,
                   truth[index].astype(np.uint8), validation=[0.75, 0.8, 0.5][fold])
        folders.append(folder)
    return folders, truth


def test_oof_score_is_the_metric_over_the_concatenated_validation_predictions(cells_folds, tmp_path):
    folders, truth = cells_folds
    members = ensemble.load_members("cells", folders)
    validation = ensemble.fold_validation(folders, members)
    oof = ensemble.out_of_fold("cells", folders, validation)
    predicted = np.concatenate([v.encoding.labels(v.read()) for v in validation])
    labels = np.concatenate([v.labels for v in validation])
    expected = cells_scores(labels, predicted)
    assert oof["value"] == pytest.approx(expected["accuracy"]) == pytest.approx(8 / 12)
    assert oof["scores"]["f1"] == pytest.approx(expected["f1"])
    assert [f["accuracy"] for f in oof["per_fold"]] == pytest.approx([0.75, 0.75, 0.5])
    assert oof["mean"] == pytest.approx(2 / 3) and oof["std"] == pytest.approx(np.std([0.75, 0.75, 0.5], ddof=1))
    assert (oof["images"], oof["of"], oof["present"], oof["missing"]) == (12, 12, [0, 1, 2], [])


def test_mars_oof_pools_pixels_and_chooses_the_filter_on_them(tmp_path):
    rng = np.random.default_rng(0)
    truth = rng.integers(1, 5, size=(6, 64, 128)).astype(np.uint8)
    truth[:, :32] = 2  # half of every tile one class: a speck there is what the filter removes
    folders = []
    for fold in range(2):
        rows = slice(3 * fold, 3 * fold + 3)
        maps = np.eye(5, dtype=np.float32)[truth[rows]] * 0.6 + 0.1
        noisy = maps.copy()
        noisy[:, 5, 5] = np.eye(5, dtype=np.float32)[3]  # a one-pixel speck of sand in the soil half
        write_fold(tmp_path / f"fold_{fold}", "mars", fold, maps[:2], noisy, np.arange(3 * fold, 3 * fold + 3),
                   truth[rows],
                   split=split_meta(fold, folds=2) | {"rows": 6}, inference={"cleanup": 3, "auto_cleanup": True})
        folders.append(tmp_path / f"fold_{fold}")
    validation = ensemble.fold_validation(folders, ensemble.load_members("mars", folders))
    oof = ensemble.out_of_fold("mars", folders, validation)
    from an2dl_kit.inference.postprocess import majority_filter

    plain = np.concatenate([v.encoding.labels(v.read()) for v in validation])
    assert oof["unfiltered"] == pytest.approx(mars_scores(truth, plain)["miou"])
    filtered = mars_scores(truth, majority_filter(plain, 3))["miou"]
    chosen = 3 if filtered >= oof["unfiltered"] else 0
    assert oof["postprocess"] == {"majority_filter": chosen, "oof_miou_filtered": pytest.approx(filtered)}
    assert oof["value"] == pytest.approx(max(filtered, oof["unfiltered"]))


@pytest.fixture
def mars_folds(tmp_path):
    """Three Mars folds of two tiles each (soil everywhere); fold k predicts soil on (k + 1) / 4 of every
    validation tile's rows and sand elsewhere, and soil on test tile 0, sand on test tile 1."""
    truth = np.ones((6, 64, 128), np.uint8)
    test = np.eye(5, dtype=np.float32)[np.stack([np.full((64, 128), 1), np.full((64, 128), 3)])]
    folders = []
    for fold in range(3):
        predicted = np.full((2, 64, 128), 3)
        predicted[:, :16 * (fold + 1)] = 1
        folder = tmp_path / f"mars_fold_{fold}"
        write_fold(folder, "mars", fold, test, np.eye(5, dtype=np.float32)[predicted], np.array([fold, fold + 3]),
                   truth[:2], validation=0.25 * (fold + 1), split=split_meta(fold) | {"rows": 6})
        folders.append(folder)
    return folders


def test_fold_ensemble_averages_the_test_set_and_records_the_oof_score(mars_folds, tmp_path):
    from an2dl_kit.submission import read_mars_csv

    record = ensemble.ensemble("mars", mars_folds, tmp_path / "out", weighting="validation")
    assert [m["fold"] for m in record["members"]] == [0, 1, 2]
    assert [m["weight"] for m in record["members"]] == pytest.approx([1 / 6, 2 / 6, 3 / 6])
    masks = read_mars_csv(tmp_path / "out" / "submission.csv")
    assert (masks[0] == 1).all() and (masks[1] == 3).all()
    # Every pixel is soil: soil IoU is the share predicted soil, sand (never true, sometimes predicted) adds a 0:
    # fold k's mIoU (k + 1) / 8; pooled, soil IoU (1 + 2 + 3) / 12 -> mIoU 0.25.
    oof = record["oof"]
    assert [f["miou"] for f in oof["per_fold"]] == pytest.approx([0.125, 0.25, 0.375])
    assert oof["value"] == pytest.approx(0.25) and oof["mean"] == pytest.approx(0.25)
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["oof"]["present"] == [0, 1, 2] and saved["files"] == ["submission.csv", "metrics.json"]
    assert "OOF miou 0.2500 over 6 of 6 images (per fold 0.1250, 0.2500, 0.3750: mean 0.2500 ± 0.1250)" \
        in ensemble.summary_lines(record)


def test_missing_folds_are_named_and_the_oof_covers_the_others(mars_folds, tmp_path):
    record = ensemble.ensemble("mars", [mars_folds[2], mars_folds[0]], tmp_path / "out")
    oof = record["oof"]
    assert (oof["present"], oof["missing"], oof["images"]) == ([0, 2], [1], 4)
    assert [f["fold"] for f in oof["per_fold"]] == [0, 2]
    assert "; folds 1 of 3 missing" in ensemble.oof_line(oof)


def test_duplicated_folds_and_other_partitions_are_refused_and_nothing_is_written(cells_folds, tmp_path):
    folders, truth = cells_folds
    with pytest.raises(KitError, match=r"fold_0 and .*fold_0: both fold 0; give each fold once") as error:
        ensemble.ensemble("cells", [folders[0], folders[1], folders[0]], tmp_path / "out")
    assert "\n" not in str(error.value)
    other = tmp_path / "other_seed"
    write_fold(other, "cells", 1, one_hot(np.array([0, 1, 2])), one_hot(np.array([1, 4, 7])), np.array([1, 4, 7]),
               np.array([1, 4, 7], np.uint8), split=split_meta(1, assignment="c" * 64))
    with pytest.raises(KitError, match=r"other_seed: fold 1 of another partition than .*fold_0 \(3 folds, split_seed "
                                       r"0, assignment cccccccccccc, .* vs 3 folds, split_seed 0, assignment "
                                       r"aaaaaaaaaaaa"):
        ensemble.ensemble("cells", [folders[0], other], tmp_path / "out")
    five = tmp_path / "five_folds"
    write_fold(five, "cells", 4, one_hot(np.array([0, 1, 2])), one_hot(np.array([1])), np.array([1]),
               np.array([1], np.uint8), split=split_meta(4, folds=5))
    with pytest.raises(KitError, match="another partition"):
        ensemble.ensemble("cells", [folders[0], five], tmp_path / "out")
    plain = tmp_path / "single"
    write_fold(plain, "cells", 0, one_hot(np.array([0, 1, 2])), one_hot(np.array([1])), np.array([1]),
               np.array([1], np.uint8), split=split_meta(0, folds=1) | {"fold": None})
    with pytest.raises(KitError, match="single: not a fold run"):
        ensemble.ensemble("cells", [folders[0], plain], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_broken_val_probs_file_is_refused_and_nothing_is_written(cells_folds, tmp_path):
    folders, _ = cells_folds
    data = (folders[1] / VAL_PROBS_FILE).read_bytes()
    (folders[1] / VAL_PROBS_FILE).write_bytes(data[:len(data) // 2])
    with pytest.raises(KitError, match=r"fold_1/val_probs.npz: not a readable probabilities file") as error:
        ensemble.ensemble("cells", folders, tmp_path / "out")
    assert "\n" not in str(error.value)
    (folders[1] / VAL_PROBS_FILE).unlink()
    with pytest.raises(KitError, match=r"fold_1: no val_probs.npz"):
        ensemble.ensemble("cells", folders, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_val_probs_keep_index_and_labels_and_check_them(tmp_path):
    maps = np.eye(5, dtype=np.float32)[np.ones((2, 64, 128), np.int64)]
    write_fold(tmp_path, "mars", 0, maps, maps, np.array([3, 9]), np.ones((2, 64, 128), np.uint8))
    stored = open_stored(tmp_path / VAL_PROBS_FILE)
    assert stored.meta["kind"] == "validation" and stored.shape == (2, 64, 128, 4)
    assert stored.index.tolist() == [3, 9] and stored.labels.shape == (2, 64, 128)
    assert (stored.encoding.labels(stored.read()) == 1).all()
    with pytest.raises(ValueError, match="index.npy holds 1 rows, not 2"):
        with writer(tmp_path / "bad.npz", task="mars", encoding=encoding_for(MARS, True), rows=2,
                    item_shape=MARS.label_shape, index=np.array([1]), labels=np.ones((1, 64, 128))) as sink:
            sink.write(maps)
    assert not (tmp_path / "bad.npz").exists()


# ---- a local fold set ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_folds_on_the_smoke_profile_write_each_fold_and_their_ensemble(synthetic_dir, tmp_path):
    from an2dl_kit.tasks import run
    from an2dl_kit.tasks.runner import METRICS_KEYS

    metrics = run("mars", synthetic_dir, tmp_path / "run", "smoke", overrides={"folds": 2})
    assert tuple(metrics) == METRICS_KEYS
    folds = []
    for fold in range(2):
        folder = tmp_path / "run" / f"fold_{fold}"
        saved = json.loads((folder / "metrics.json").read_text())
        assert saved["split"]["fold"] == fold and saved["oof"] is None
        assert saved["config"]["data"]["fold"] == fold and saved["overrides"]["fold"] == fold
        stored = open_stored(folder / VAL_PROBS_FILE)
        assert stored.meta["split"] == saved["split"] and len(stored.index) == saved["samples"]["validation"]
        assert saved["config"]["run"]["budget_s"] <= 120.0
        folds.append(stored)
    assert np.intersect1d(folds[0].index, folds[1].index).size == 0
    assert len(folds[0].index) + len(folds[1].index) == metrics["split"]["rows"] == metrics["oof"]["of"]
    oof = metrics["oof"]
    assert oof["present"] == [0, 1] and oof["missing"] == [] and 0.0 <= oof["value"] <= 1.0
    assert [f["fold"] for f in oof["per_fold"]] == [0, 1] and all(f["test"] is not None for f in oof["per_fold"])
    assert metrics["split"]["fold"] is None and metrics["test_tta"] is not None
    assert (tmp_path / "run" / "submission.csv").is_file()
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["oof"]["value"] == pytest.approx(oof["value"])
    # A second call finds both folds done: it trains nothing and only ensembles them again.
    model = tmp_path / "run" / "fold_0" / "model.keras"
    before = model.stat().st_mtime_ns
    again = run("mars", synthetic_dir, tmp_path / "run", "smoke", overrides={"folds": 2})
    assert again["oof"]["value"] == pytest.approx(oof["value"]) and model.stat().st_mtime_ns == before
