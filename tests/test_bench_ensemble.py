"""`bench.ensemble --folds`: the table of a fold set beside a single run, from the runs' metrics."""

import an2dl_kit.tasks as tasks
from bench import ensemble


def test_fold_rows_give_each_fold_the_ensemble_oof_and_single_run_to_four_decimals(monkeypatch, tmp_path):
    calls = []
    fold_set = {"oof": {"score": "miou", "value": 0.6385, "images": 3000, "mean": 0.6372, "std": 0.0222,
                        "per_fold": [{"fold": 0, "miou": 0.6539, "test": 0.67970},
                                     {"fold": 1, "miou": 0.6121, "test": 0.67231}]},
                "test_tta": {"miou": 0.69008}}
    single = {"test_tta": {"miou": 0.6741}, "validation_tta": {"miou": 0.6380}}

    def fake_run(task, root, out, profile, overrides):
        calls.append((out.name, overrides))
        return fold_set if "folds" in overrides else single

    monkeypatch.setattr(tasks, "run", fake_run)
    rows = ensemble.fold_rows("mars", tmp_path, tmp_path, 900.0, 2)
    assert calls == [("mars_folds2", {"folds": 2, "budget_s": 1800.0}), ("mars_single", {"budget_s": 900.0})]
    table = {row.item: (row.value, row.note) for row in rows}
    assert table["fold 0"] == ("0.6797", "validation 0.6539 on its fold")
    assert table["folds' mean"][0] == "0.6760"
    assert table["fold ensemble of 2"] == ("0.6901", "gain over the folds' mean +0.0141")
    assert table["out-of-fold"][1].endswith("ensemble test - OOF +0.0516")
    assert table["single local run, 900 s"] == ("0.6741", "validation 0.6380")
    assert ensemble.score_text(0.5) == "0.5000"
