"""K folds as K Kaggle kernels, against the loopback stand-in with the real kaggle client (see test_kaggle_loop)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from kaggle_standin import KaggleStandIn
from test_folds import split_meta, write_fold
from test_kaggle_loop import Kit, embedded_provenance

MARS_COMPETITION = "standin-mars-competition"


@pytest.fixture
def standin():
    with KaggleStandIn(timeout_s=180) as server:
        yield server


@pytest.fixture
def kit(standin, tmp_path) -> Kit:
    kit = Kit(standin, tmp_path)
    kit.env.update(MARS_COMPETITION=MARS_COMPETITION, MARS_TEST_ROWS="2")
    return kit


def saved_kernels(standin) -> list[dict]:
    return [call.json() for call in standin.calls("SaveKernel")]


def test_push_folds_sends_one_save_kernel_per_fold_with_its_fold_baked_in(kit, standin):
    result = kit("push-folds", "--task", "mars", "--profile", "smoke", "--folds", "3", "--set", "epochs=2")
    assert result.returncode == 0, result.stderr
    assert standin.names() == ["GetAcceleratorQuotaStatistics", "SaveKernel", "SaveKernel", "SaveKernel"]
    assert "quota: these 3 folds may use up to 0.1 GPU hours (their budgets); 25.5 h left" in result.stdout
    bodies = saved_kernels(standin)
    assert [b["slug"] for b in bodies] == [f"standin-user/an2dl-mars-terrain-fold{k}" for k in range(3)]
    assert [b["newTitle"] for b in bodies] == [f"AN2DL Mars terrain fold{k}" for k in range(3)]
    for fold, body in enumerate(bodies):
        prov = embedded_provenance(body["text"])
        assert prov["overrides"] == {"epochs": "2", "fold": str(fold), "folds": "3"}
        assert (prov["config"]["data"]["folds"], prov["config"]["data"]["fold"]) == (3, fold)
        assert (kit.work / f"build/kernels/mars-fold{fold}/kernel.py").read_text() == body["text"]
    # The bundles differ only where the fold is written.
    for body in bodies[1:]:
        changed = [(a, b) for a, b in zip(bodies[0]["text"].splitlines(), body["text"].splitlines(), strict=True)
                   if a != b]
        assert changed and all("fold" in a and "fold" in b for a, b in changed)
    history = [json.loads(line) for line in (kit.work / "submissions/mars/pushes.jsonl").read_text().splitlines()]
    assert [(r["name"], r["version"]) for r in history] == [("fold0", 1), ("fold1", 2), ("fold2", 3)]
    assert "next: make wait-folds TASK=mars K=3" in result.stdout


def test_push_folds_with_a_name_uses_name_fold_variants(kit, standin):
    result = kit("push-folds", "--task", "mars", "--profile", "smoke", "--folds", "2", "--name", "dice")
    assert result.returncode == 0, result.stderr
    assert [b["slug"] for b in saved_kernels(standin)] == ["standin-user/an2dl-mars-terrain-dice-fold0",
                                                            "standin-user/an2dl-mars-terrain-dice-fold1"]
    assert (kit.work / "submissions/mars/dice-fold1/last_push.json").is_file()


def test_push_folds_beyond_the_quota_sends_nothing_unless_forced(kit, standin):
    standin.quota.update(used_h=27.5)  # 2.5 h left: one fold of 1 h would fit, three do not
    result = kit("push-folds", "--task", "mars", "--profile", "smoke", "--folds", "3", "--set", "budget_s=3600")
    assert result.returncode == 2
    assert result.stderr == ("an2dl: error: push: the 3 folds may use 3.0 GPU hours but 2.5 are left this week; "
                             "lower their budgets (--set budget_s=SECONDS) or pass --force (make ... FORCE=1)\n")
    assert standin.names() == ["GetAcceleratorQuotaStatistics"]
    assert not (kit.work / "build").exists() and not (kit.work / "submissions").exists()
    forced = kit("push-folds", "--task", "mars", "--profile", "smoke", "--folds", "3", "--set", "budget_s=3600",
                 "--force")
    assert forced.returncode == 0, forced.stderr
    assert standin.names()[1:] == ["GetAcceleratorQuotaStatistics", "SaveKernel", "SaveKernel", "SaveKernel"]


@pytest.mark.parametrize("args, shown", [
    (("--folds", "1"), "--folds 1: a K-fold needs K >= 2"),
    (("--folds", "3", "--set", "fold=1"), "push-folds: set the fold count with --folds (K=...), not with --set"),
    (("--folds", "3", "--set", "nosuch=1"), "mars setting 'nosuch': unknown"),
    (("--folds", "3", "--name", "a-name-far-too-long-here"), "--name 'a-name-far-too-long-here-fold0'"),
])
def test_bad_push_folds_sends_no_request(kit, standin, args, shown):
    result = kit("push-folds", "--task", "mars", "--profile", "smoke", *args)
    assert result.returncode == 2 and shown in result.stderr and len(result.stderr.splitlines()) == 1
    assert standin.requests == []


def test_a_failed_push_names_the_folds_that_went(kit, standin):
    standin.max_requests = 3  # the quota request and two SaveKernel; the third is refused
    result = kit("push-folds", "--task", "mars", "--profile", "smoke", "--folds", "3")
    assert result.returncode == 2
    assert result.stderr.startswith("an2dl: error: fold 2: SaveKernel standin-user/an2dl-mars-terrain-fold2: "
                                    "HTTP 429")
    assert "(folds pushed: 0, 1;" in result.stderr and len(result.stderr.splitlines()) == 1
    assert [(kit.work / f"submissions/mars/fold{k}/last_push.json").is_file() for k in range(3)] == \
        [True, True, False]


def fold_outputs(tmp_path: Path, fold: int) -> dict[str, bytes]:
    """What fold `fold` of two kernels leaves: its probabilities and metrics.json (every tile soil; the fold
    predicts soil on (fold + 1) / 4 of its validation rows, sand elsewhere)."""
    folder = tmp_path / f"made_fold{fold}"
    predicted = np.full((2, 64, 128), 3)
    predicted[:, :16 * (fold + 1)] = 1
    test = np.eye(5, dtype=np.float32)[np.stack([np.full((64, 128), 1), np.full((64, 128), 2)])]
    write_fold(folder, "mars", fold, test, np.eye(5, dtype=np.float32)[predicted], np.array([fold, fold + 2]),
               np.ones((2, 64, 128), np.uint8), split=split_meta(fold, folds=2) | {"rows": 4})
    metrics = {"profile": "smoke", "overrides": {"epochs": "2", "fold": str(fold), "folds": "2"},
               "validation": {"miou": 0.1}, "validation_tta": {"miou": 0.1}, "oof": None}
    return {"test_probs.npz": (folder / "test_probs.npz").read_bytes(),
            "val_probs.npz": (folder / "val_probs.npz").read_bytes(), "metrics.json": json.dumps(metrics).encode()}


def test_folds_wait_download_ensemble_and_submit_with_the_oof_score(kit, standin, tmp_path):
    assert kit("push-folds", "--task", "mars", "--profile", "smoke", "--folds", "2", "--set", "epochs=2"
               ).returncode == 0
    standin.statuses = ["RUNNING", "COMPLETE"]
    wait = kit("wait-folds", "--task", "mars", "--folds", "2")
    assert wait.returncode == 0, wait.stderr
    assert "all 2 folds complete" in wait.stdout
    standin.outputs = fold_outputs(tmp_path, 0)
    assert kit("output", "--task", "mars", "--name", "fold0").returncode == 0
    standin.outputs = fold_outputs(tmp_path, 1)
    output = kit("output-folds", "--task", "mars", "--folds", "2")
    assert output.returncode == 0, output.stderr
    assert "fold 0: submissions/mars/fold0/v1 already downloaded" in output.stdout
    assert (kit.work / "submissions/mars/fold1/v2/val_probs.npz").read_bytes() == standin.outputs["val_probs.npz"]

    result = kit("ensemble-folds", "--task", "mars", "--folds", "2")
    assert result.returncode == 0, result.stderr
    out = kit.work / "submissions/mars/folds/v1"
    record = json.loads((out / "metrics.json").read_text())
    assert record["oof"]["present"] == [0, 1] and record["oof"]["value"] == pytest.approx(0.1875)
    assert (record["profile"], record["overrides"]) == ("smoke", {"epochs": "2", "folds": "2"})
    assert "OOF miou 0.1875 over 4 of 4 images" in result.stdout
    assert "next: make submit TASK=mars NAME=folds" in result.stdout

    submit = kit("submit", "--task", "mars", "--name", "folds")
    assert submit.returncode == 0, submit.stderr
    message = standin.calls("CreateSubmission")[0].json()["submissionDescription"]
    assert message.startswith("mars folds v1 (smoke profile; epochs=2 folds=2; OOF miou 0.1875 over 2 of 2 folds) "
                              "[an2dl-kit ")
    (upload,) = standin.uploads.values()
    assert upload == (out / "submission.csv").read_bytes()
    runs = kit("runs", "--task", "mars")
    assert runs.returncode == 0, runs.stderr
    table = list(csv.DictReader((kit.work / "submissions/mars/runs.csv").open()))
    assert [(r["name"], r["version"], r["status"], r["submitted"], r["OOF"]) for r in table] == [
        ("fold0", "1", "downloaded", "no", ""), ("fold1", "2", "downloaded", "no", ""),
        ("folds", "1", "ensemble of 2", "yes", "0.1875")]


def test_ensemble_folds_without_downloads_is_one_line(kit):
    result = kit("ensemble-folds", "--task", "mars", "--folds", "3")
    assert result.returncode == 2
    assert result.stderr == ("an2dl: error: submissions/mars: no downloaded fold outputs with test_probs.npz; "
                             "make output-folds TASK=mars K=3 first\n")
