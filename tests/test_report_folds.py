"""`an2dl report` over K-fold runs: a local fold set (`an2dl train --set folds=2`) and fold ensembles (`an2dl
ensemble` over its fold folders, one with a fold missing) are one run each, scored by their `oof` record; fold
runs given on their own are ordinary runs named by their fold; a fold set whose folds are not where it says is a
one-line error.

One module fixture trains the smoke fold set on tiny synthetic data, ensembles its folds and writes the reports.
"""

from __future__ import annotations

import json
import re
import shutil
from html import unescape
from pathlib import Path

import pytest
from test_report import assert_number, html_tables

from an2dl_kit.errors import KitError
from an2dl_kit.report import REPORT_HTML, TABLES_TEX, write_report
from an2dl_kit.report.collect import collect
from an2dl_kit.report.sections import FOLD_VIEWS, MISSING_FOLD, OUT_OF_FOLD

pytestmark = pytest.mark.slow
PUBLIC = 0.4321


def _metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


@pytest.fixture(scope="module")
def folds(synthetic_dir, tmp_path_factory):
    from an2dl_kit.cli import main
    from an2dl_kit.inference.ensemble import ensemble
    from an2dl_kit.kaggle.folds import run_settings

    root = tmp_path_factory.mktemp("report_folds")
    fold_set = root / "mars_folds"
    assert main(["train", "mars", "--data", str(synthetic_dir), "--profile", "smoke", "--set", "folds=2",
                 "--out", str(fold_set)]) == 0
    fold_dirs = [fold_set / "fold_0", fold_set / "fold_1"]
    ensemble("mars", fold_dirs, root / "ens", data=synthetic_dir)
    ensemble("mars", fold_dirs[1:], root / "ens_half", data=synthetic_dir)  # fold 0 missing
    downloaded = [root / "submissions" / "mars" / f"fold{k}" / "v1" for k in range(2)]  # the fold kernels' outputs
    for fold_dir, output in zip(fold_dirs, downloaded, strict=True):
        shutil.copytree(fold_dir, output)
    kaggle = root / "submissions" / "mars" / "folds" / "v1"  # where `an2dl ensemble-folds` writes
    ensemble("mars", downloaded, kaggle, data=synthetic_dir, extra=run_settings(downloaded[0]))
    runs_csv = root / "submissions" / "mars" / "runs.csv"
    runs_csv.write_text(f"name,version,submitted,public score\nfolds,1,yes,{PUBLIC}\nfold0,1,no,\n")
    folders = [fold_set, root / "ens", fold_dirs[1], downloaded[0]]
    return {"root": root, "fold_set": fold_set, "kaggle": kaggle,
            "all": write_report("mars", folders, root / "report_all", chosen="mars_folds").parent,
            "half": write_report("mars", [root / "ens_half"], root / "report_half").parent,
            "kaggle_report": write_report("mars", [downloaded[1], kaggle], root / "report_kaggle",
                                          runs_csv=runs_csv).parent}


def _page(report: Path) -> str:
    return unescape((report / REPORT_HTML).read_text(encoding="utf-8"))


def _rows(table: dict) -> dict[str, dict[str, tuple[str, str]]]:
    """First cell -> {column: (text, footnote letter)}."""
    return {row[0][0]: dict(zip(table["head"], row, strict=True)) for row in table["rows"]}


def _note(report: Path, table: str, letter: str) -> str:
    """The footnote `letter` under the table with id `table`."""
    page = _page(report)
    notes = re.search(rf'<table id="table-{table}">.*?</table><ol class="notes">(.*?)</ol>', page, re.S).group(1)
    return re.findall(r"<li>(.*?)</li>", notes)[ord(letter) - ord("a")]


def _oof(folder: Path) -> dict:
    """The `oof` record with each fold's views and test score, as the report's sources hold it: a fold set's
    metrics.json, or an ensemble's with its members' views and test scores."""
    record = _metrics(folder)
    if record.get("kind") != "ensemble":
        return record["oof"]
    members = {m["fold"]: m for m in record["members"]}
    return {**record["oof"], "per_fold": [{**entry, "views": members[entry["fold"]]["views"],
                                           "test": members[entry["fold"]]["test"]["miou"]}
                                          for entry in record["oof"]["per_fold"]]}


def _test(folder: Path) -> dict:
    record = _metrics(folder)
    return record["test"] if record.get("kind") == "ensemble" else record["test_tta"]


def check_folds_table(table: dict, oof: dict, names: dict[int, str]) -> None:
    rows = _rows(table)
    assert list(rows) == [str(k) for k in range(oof["folds"])]
    for fold in oof["missing"]:
        assert all(text == "" and note for text, note in list(rows[str(fold)].values())[1:])
    for entry in oof["per_fold"]:
        row = rows[str(entry["fold"])]
        assert row["run"][0] == names[entry["fold"]]
        assert_number(row["val. images"][0], entry["images"], "images")
        assert_number(row["OOF mIoU"][0], entry["miou"], "OOF mIoU")
        assert row["views"][0] == ", ".join(entry["views"])
        assert_number(row["test mIoU"][0], entry["test"], "test mIoU")


def check_folds_text(page: str, name: str, oof: dict, test: dict) -> None:
    present = ", ".join(map(str, oof["missing"]))
    assert (f"{name}: {len(oof['present'])} of {oof['folds']} folds present "
            f"({f'fold {present} missing' if present else 'none missing'}), their test probabilities averaged "
            f"with uniform weights. Out-of-fold mIoU {oof['value']:.4f} over {oof['images']} of {oof['of']} "
            f"images; each fold's mIoU on its own validation fold {oof['mean']:.4f} ± {oof['std']:.4f} (mean ± sd "
            f"over {len(oof['per_fold'])} folds); fold ensemble's test mIoU {test['miou']:.4f}.") in page


def test_a_fold_set_is_one_experiments_row_scored_out_of_fold(folds):
    report, fold_set, root = folds["all"], folds["fold_set"], folds["root"]
    rows = _rows(html_tables(report)["experiments"])
    assert set(rows) == {"mars_folds", "ens", "mars_folds fold 1", "fold0 v1"}  # fold runs alone: named by fold
    for name, folder in (("mars_folds", fold_set), ("ens", root / "ens")):
        row, metrics = rows[name], _metrics(folder)
        assert_number(row["val."][0], _oof(folder)["value"], f"{name} val.")
        assert _note(report, "experiments", row["val."][1]) == OUT_OF_FOLD
        assert row["val.+TTA"][0] == "" and _note(report, "experiments", row["val.+TTA"][1]) == FOLD_VIEWS
        assert_number(row["test+TTA"][0], _test(folder)["miou"], f"{name} test")
        fold_metrics = [_metrics(fold_set / f"fold_{k}") for k in range(2)]
        assert_number(row["epochs"][0], sum(p["epochs_run"] for m in fold_metrics for p in m["phases"]), "epochs")
        assert_number(row["train s"][0], sum(m["seconds"]["training"] for m in fold_metrics), "train s")
        if name == "mars_folds":  # a fold set's own record says the same
            assert_number(row["epochs"][0], sum(p["epochs_run"] for p in metrics["phases"]), "epochs")
            assert_number(row["train s"][0], metrics["seconds"]["training"], "train s")
    for name, folder in (("mars_folds fold 1", fold_set / "fold_1"), ("fold0 v1", fold_set / "fold_0")):
        metrics = _metrics(folder)  # an ordinary run: its own validation scores, no footnote
        assert rows[name]["val."] == (f"{metrics['validation']['miou']:.4f}", "")
        assert rows[name]["val.+TTA"] == (f"{metrics['validation_tta']['miou']:.4f}", "")


def test_every_fold_of_every_fold_set_is_in_the_ensemble_section(folds):
    report, root = folds["all"], folds["root"]
    tables, page = html_tables(report), _page(report)
    names = {0: "mars_folds fold 0", 1: "mars_folds fold 1"}
    for key, name, folder in (("folds", "mars_folds", folds["fold_set"]), ("foldsB", "ens", root / "ens")):
        oof = _oof(folder)
        assert oof["present"] == [0, 1] and oof["missing"] == []
        check_folds_table(tables[key], oof, names)
        check_folds_text(page, name, oof, _test(folder))
    assert "ensemble" not in tables  # a fold ensemble is a fold set, not a plain ensemble
    tex = (report / TABLES_TEX).read_text(encoding="utf-8")
    assert r"\newcommand{\ReportFolds}" in tex and r"\newcommand{\ReportFoldsB}" in tex


def check_perclass(table: dict, oof: dict, test: dict) -> None:
    rows = _rows(table)
    assert list(rows) == list(oof["scores"]["iou"])
    for name, row in rows.items():
        for column, scores in (("OOF IoU", oof["scores"]), ("test IoU", test)):
            value = scores["iou"][name]
            if value != value:  # NaN: a class in neither truth nor prediction
                assert row[column][0] == "" and row[column][1]
            else:
                assert_number(row[column][0], value, f"{column} {name}")


def test_a_chosen_fold_set_shows_out_of_fold_scores_and_names_the_fold_of_its_curves(folds):
    report, fold_set = folds["all"], folds["fold_set"]
    oof, test, page = _oof(fold_set), _test(fold_set), _page(report)
    check_perclass(html_tables(report)["perclass"], oof, test)
    fold = fold_set / "fold_0"
    assert (f"mars_folds is a fold set: the learning curves, training phases and example predictions below are "
            f"those of mars_folds fold 0 ({fold}), its first fold present") in page
    assert "Loss and mIoU per epoch of mars_folds fold 0;" in page
    assert "Validation examples of mars_folds fold 0:" in page
    phases = _rows(html_tables(report)["phases"])
    assert [p["epochs_run"] for p in _metrics(fold)["phases"]] == [int(r["epochs run"][0]) for r in phases.values()]
    assert "This section, Augmentation and Model describe mars_folds fold 0, its first fold present." in page
    assert (f"(validation fold 0 of a stratified 2-fold partition, split seed {oof['partition']['split_seed']}"
            in page)
    views = "; ".join(f"fold {e['fold']} {', '.join(e['views'])}" for e in oof["per_fold"])
    assert f"submitted with them: {views}. The out-of-fold mIoU {oof['value']:.4f} is of those predictions." in page
    post = oof["postprocess"]
    assert post and (f"out-of-fold mIoU {post['oof_miou_filtered']:.4f} with it, {oof['unfiltered']:.4f} "
                     "without.") in page
    assert f"({oof['value']:.4f}, out of fold)" not in page  # --chosen: not chosen for its score
    texts = re.findall(r"<p>((?:TTA:|Post-processing:|mars_folds)[^<]*)</p>", page)
    assert len(texts) >= 4
    for text in texts:
        for found in re.findall(r"\d+\.\d{4}", text):  # every four-decimal figure of the fold set's texts
            assert any(abs(float(found) - value) < 5e-5 for value in _figures(oof, test)), (found, text)


def _figures(oof: dict, test: dict) -> list[float]:
    per_fold = [value for entry in oof["per_fold"] for value in (entry["miou"], entry["test"])]
    return [oof["value"], oof["unfiltered"], oof["mean"], oof["std"], test["miou"], *per_fold,
            *oof["postprocess"].values()]


def test_a_fold_ensemble_with_a_fold_missing_names_it_and_details_the_fold_present(folds):
    report, folder = folds["half"], folds["root"] / "ens_half"
    oof, tables, page = _oof(folder), html_tables(report), _page(report)
    assert oof["present"] == [1] and oof["missing"] == [0]
    check_folds_table(tables["folds"], oof, {1: "mars_folds fold 1"})
    assert _note(report, "folds", _rows(tables["folds"])["0"]["run"][1]) == MISSING_FOLD
    check_folds_text(page, "ens_half", oof, _test(folder))
    experiments = _rows(tables["experiments"])["ens_half"]
    assert_number(experiments["val."][0], oof["value"], "val.")
    assert f"the best validation mIoU of the submitted predictions ({oof['value']:.4f}, out of fold)" in page
    assert "Loss and mIoU per epoch of mars_folds fold 1;" in page  # the first fold present
    check_perclass(tables["perclass"], oof, _test(folder))


def test_a_kaggle_fold_ensemble_takes_its_public_score_from_runs_csv_and_is_chosen_by_it(folds):
    report, folder = folds["kaggle_report"], folds["kaggle"]
    oof, tables, page = _oof(folder), html_tables(report), _page(report)
    rows = _rows(tables["experiments"])
    assert list(rows) == ["fold1 v1", "folds v1"]
    assert rows["folds v1"]["public"] == (f"{PUBLIC:.4f}", "") and rows["fold1 v1"]["public"][0] == ""
    assert_number(rows["folds v1"]["val."][0], oof["value"], "val.")
    assert "fold=None" in rows["folds v1"]["settings"][0] and "fold=1" in rows["fold1 v1"]["settings"][0]
    assert f"folds v1 ({folder}): the best public mIoU of the runs ({PUBLIC:.4f})." in page
    check_folds_table(tables["folds"], oof, {0: "fold0 v1", 1: "fold1 v1"})
    check_folds_text(page, "folds v1", oof, _test(folder))
    assert "Loss and mIoU per epoch of fold0 v1;" in page


def test_fold_sets_whose_folds_are_not_there_or_not_theirs_are_one_line_errors(folds, tmp_path, capsys):
    from an2dl_kit.cli import main

    fold_set = folds["fold_set"]
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(fold_set / "metrics.json", alone / "metrics.json")
    swapped = tmp_path / "swapped"
    shutil.copytree(fold_set, swapped)
    shutil.rmtree(swapped / "fold_0")
    shutil.copytree(fold_set / "fold_1", swapped / "fold_0")
    cases = [(alone, f"{alone}: fold 0 has no {alone / 'fold_0' / 'metrics.json'}; a fold set is read with its "
                     "fold runs (an ensemble's as its metrics.json names them: run the report where `an2dl "
                     "ensemble` ran)"),
             (swapped, f"{swapped / 'fold_0'}: not fold 0 of the partition {swapped} was scored on (its split: "
                       f"fold 1, assignment {_metrics(fold_set)['split']['assignment_sha256'][:12]})")]
    for folder, message in cases:
        assert main(["report", "--task", "mars", str(folder), "--out", str(tmp_path / "out")]) == 2
        assert capsys.readouterr().err == f"an2dl: error: {message}\n"
    assert not (tmp_path / "out").exists()
    for folder, kind in ((fold_set, "run"), (folds["root"] / "ens", "ensemble")):
        with pytest.raises(KitError, match=rf"^{re.escape(str(folder))}: a mars {kind}, not cells; report each "
                                           r"task on its own \(--task mars\)$"):
            collect("cells", [folder])
