"""Results records (`bench.records`) and the tables generated from them (`bench.results`)."""

import json
import shutil
from pathlib import Path

import pytest

from bench import results
from bench.records import (
    HEAD,
    RecordError,
    column,
    load_record,
    load_records,
    new_record,
    record_name,
    write_record,
)

REPO = Path(__file__).resolve().parents[1]
MACHINE = {"cpu_count": 2, "load_average": {"1min": 1.0, "5min": 1.5, "15min": 2.0}}


def seeds_record(**changes):
    values = dict(title="cells local", command="python -m bench.cells_robustness --seeds 2", kind="seeds",
                  settings={"task": "cells", "profile": "local", "overrides": []},
                  columns=[column("epochs", fmt="d"), column("clean")],
                  runs=[{"model": "kit", "seed": 0, "epochs": 10, "clean": 0.90},
                        {"model": "kit", "seed": 1, "epochs": 12, "clean": 0.96}],
                  commit="0123456789abcdef", dirty=False, date="2026-12-04", machine_info=MACHINE)
    return new_record("bench.cells_robustness", **{**values, **changes})


def test_a_record_reads_back_as_written(tmp_path):
    record = seeds_record()
    path = write_record(record, "Ref run", folder=tmp_path)
    assert path.name == "2026-12-04-cells-robustness-ref-run-0123456.json"
    assert load_record(path) == record
    assert write_record(record, "Ref run", folder=tmp_path).name.endswith("-2.json")  # never over a record


def test_a_record_edited_by_hand_is_refused_naming_the_file(tmp_path):
    path = write_record(seeds_record(), folder=tmp_path)
    data = json.loads(path.read_text())
    data["runs"][0]["clean"] = 0.99
    path.write_text(json.dumps(data))
    with pytest.raises(RecordError, match=rf"^{path}: content does not match its sha256"):
        load_records(tmp_path)


def test_a_run_without_a_column_or_a_short_row_is_refused():
    with pytest.raises(RecordError, match="run 1 lacks clean"):
        seeds_record(runs=[{"model": "kit", "seed": 0, "epochs": 1, "clean": 0.5}, {"model": "kit", "epochs": 2}])
    with pytest.raises(RecordError, match="row 0 has 1 cells for 2 columns"):
        new_record("bench", title="t", command="c", settings={}, kind="table", columns=["a", "b"], rows=[["x"]],
                   commit=None, date="2026-12-04", machine_info=MACHINE)


def test_a_new_record_names_this_checkout_and_machine():
    record = new_record("bench", title="t", command="c", settings={}, kind="table", columns=["a"], rows=[["1"]])
    assert record["commit"] != HEAD and len(record["commit"] or "") in (0, 40)
    assert record["machine"]["cpu_count"] >= 1 and set(record["machine"]["load_average"]) == {"1min", "5min",
                                                                                            "15min"}
    assert record_name({**record, "commit": None, "date": "2026-01-02"}) == "2026-01-02-bench-unrecorded.json"


def docs_tree(tmp_path, text, *records):
    """A checkout in miniature: README.md holding `text`, and the records under docs/results/records/."""
    folder = tmp_path / "docs" / "results" / "records"
    folder.mkdir(parents=True)
    stems = [write_record(record, folder=folder).stem for record in records]
    (tmp_path / "README.md").write_text(text.format(*stems))
    return stems


def test_seeds_view_gives_each_seed_then_mean_and_spread(tmp_path):
    docs_tree(tmp_path, "before\n<!-- results: seeds {0} -->\nold\n<!-- /results -->\nafter\n", seeds_record())
    text = stale(tmp_path)
    assert "| kit | 0 | 10 | 0.9000 |" in text and "| kit | 1 | 12 | 0.9600 |" in text
    # mean 0.93, population standard deviation 0.03; counts as their range
    assert "| **kit, mean ± sd** |  | **10-12** | **0.9300 ± 0.0300** |" in text
    assert "at 0123456, 2026-12-04, 2 cores, load 2.0 (15 min)." in text
    assert text.startswith("before\n") and text.endswith("<!-- /results -->\nafter\n") and "old" not in text


def test_summary_view_sets_a_run_beside_its_reference(tmp_path):
    reference = seeds_record()
    lever = seeds_record(title="lever", settings={"task": "cells", "overrides": ["echo=3"],
                                                  "reference": record_stem(reference)},
                         runs=[{"model": "kit", "seed": 0, "epochs": 9, "clean": 0.95}])
    docs_tree(tmp_path, "<!-- results: summary columns=clean {1} -->\n<!-- /results -->\n", reference, lever)
    text = stale(tmp_path)
    assert "| lever | `echo=3` | 1 | 0.9500 | 0.9300 ± 0.0300 |" in text


def record_stem(record):
    return record_name(record)[:-len(".json")]


def test_headline_view_gives_one_row_per_task(tmp_path):
    docs_tree(tmp_path, "<!-- results: headline cells:{0}:clean:docs/results/cells.md -->\n<!-- /results -->\n",
              seeds_record())
    row = [line for line in stale(tmp_path).splitlines() if line.startswith("| cells")]
    assert row == ["| cells | `local` | `python -m bench.cells_robustness --seeds 2` | clean 0.9300 ± 0.0300 "
                   "(2 seeds) | [cells results](docs/results/cells.md) |"]


def test_headline_view_picks_a_named_model(tmp_path):
    runs = [{"model": "kit", "seed": 0, "epochs": 1, "clean": 0.90},
            {"model": "kit, bn_adapt=set", "seed": 0, "epochs": 1, "clean": 0.95}]
    for root, model in ((tmp_path / "named", "kit-bn-adapt-set"), (tmp_path / "unknown", "kit-tent")):
        docs_tree(root, f"<!-- results: headline cells:{{0}}:clean:docs/results/cells.md:{model} -->\n"
                        "<!-- /results -->\n", seeds_record(runs=runs))
    assert "clean 0.9500 (1 seeds)" in stale(tmp_path / "named")
    with pytest.raises(RecordError, match="no model 'kit-tent' for the headline; the record has kit, kit-bn-adapt-set"):
        results.stale(tmp_path / "unknown")


def test_an_unknown_record_or_view_is_one_line(tmp_path):
    docs_tree(tmp_path, "<!-- results: seeds nowhere -->\n<!-- /results -->\n")
    with pytest.raises(RecordError, match="README.md: no record 'nowhere' in docs/results/records"):
        results.stale(tmp_path)
    (tmp_path / "README.md").write_text("<!-- results: pie x -->\n<!-- /results -->\n")
    with pytest.raises(RecordError, match="unknown results view 'pie'"):
        results.stale(tmp_path)


def stale(root):
    changed = results.stale(root)
    assert list(changed) == [root / "README.md"]
    return changed[root / "README.md"]


def test_results_command_rewrites_then_finds_nothing_stale(tmp_path, monkeypatch):
    shutil.copytree(REPO / "docs", tmp_path / "docs")
    readme = tmp_path / "README.md"
    readme.write_text((REPO / "README.md").read_text().replace("| cells | `local`", "| cells | `edited`"))
    monkeypatch.setattr(results, "REPO", tmp_path)
    assert results.main(["--check"]) == 1
    assert "| cells | `edited`" in readme.read_text()  # --check writes nothing
    assert results.main([]) == 0
    assert results.main(["--check"]) == 0
    assert "| cells | `local`" in readme.read_text()


def test_the_mars_record_carries_the_submitted_masks_scores():
    from bench import mars_quality

    scores = {"miou": 0.66, "iou": {"soil": 0.8, "bedrock": 0.85, "sand": 0.7, "big rock": 0.2}}
    metrics = {"config": {"training": {"seed": 2}}, "phases": [{"epochs_run": 30}], "test_tta": scores,
               "validation_tta": {"miou": 0.65}, "tta": {"views": ["identity"]}, "seconds": {"training": 899.7}}
    mars = mars_quality.record({"enhanced": [metrics]}, 900.0, [])
    assert mars["runs"][0] == {"model": "kit local", "seed": 2, "epochs": 30, "miou": 0.66, "soil": 0.8,
                               "bedrock": 0.85, "sand": 0.7, "big_rock": 0.2, "validation_miou": 0.65,
                               "views": ["identity"], "training_s": 900}


def test_breakdown_view_averages_each_item_over_seeds(tmp_path):
    def run(model, seed, copy):
        return {"model": model, "seed": seed, "epochs": 1, "clean": 0.9, "per_corruption": copy}

    runs = [run("kit", 0, {"copy": {"jpeg": 0.8, "blur": 0.6}}), run("kit", 1, {"copy": {"jpeg": 0.9, "blur": 0.7}}),
            run("baseline", 0, {})]
    docs_tree(tmp_path, "<!-- results: breakdown per_corruption.copy {0} -->\n<!-- /results -->\n",
              seeds_record(runs=runs))
    text = stale(tmp_path)
    assert "| corruption | kit |" in text and "| jpeg | 0.8500 |" in text and "| blur | 0.6500 |" in text
    assert "baseline" not in text.split("- Record")[0]


def test_records_of_one_benchmark_are_named_by_model_and_overrides(tmp_path):
    copy = {"copy": {"jpeg": 0.8}}
    reference = seeds_record(runs=[{"model": "kit", "seed": 0, "epochs": 1, "clean": 0.9, "per_corruption": copy}])
    lever = seeds_record(settings={"task": "cells", "overrides": ["augment=augmix"]},
                         runs=[{"model": "kit", "seed": 0, "epochs": 1, "clean": 0.8, "per_corruption": copy}])
    views = ("<!-- results: summary columns=clean {0} {1} -->\n<!-- /results -->\n"
             "<!-- results: breakdown per_corruption.copy {0} {1} -->\n<!-- /results -->\n")
    docs_tree(tmp_path, views, reference, lever)
    text = stale(tmp_path)
    assert "| kit |  | 1 | 0.9000 |" in text and "| kit | `augment=augmix` | 1 | 0.8000 |" in text
    assert "| corruption | kit | kit, augment=augmix |" in text and "cells local, kit" not in text
