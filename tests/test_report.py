"""`an2dl report`: every section, every table number against metrics.json / runs.csv, print-size figures,
tables.tex, one-line errors, footnoted empty cells, and the page in a real headless browser (offline).

One module fixture trains what the report reads: the cells run the demo makes (the bundled kernel through
run-local, smoke profile) and a three-variant Mars `compare`, plus an ensemble of two variants, a downloaded
kernel output with a public score in runs.csv, and a run whose name needs LaTeX escaping.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from an2dl_kit import plots
from an2dl_kit.errors import KitError
from an2dl_kit.report import REPORT_HTML, REPORT_MD, TABLES_TEX, write_report
from an2dl_kit.report.architecture import blocks
from an2dl_kit.report.collect import collect
from an2dl_kit.report.figures import FIGURES_DIR
from an2dl_kit.report.sections import SECTIONS
from an2dl_kit.task import TASKS

ODD_NAME = "lr_50%&more#2"  # a run folder whose name holds every LaTeX special the tables must escape
PUBLIC = 0.6123


class _FigureSpy:
    """Wraps `plots.save_figure` to record, per print figure, its size, its smallest text and its bar colours."""

    def __init__(self, original):
        self.original, self.seen = original, {}

    def __call__(self, fig, png, style=plots.SCREEN):
        from matplotlib.patches import Rectangle
        from matplotlib.text import Text

        if style is plots.PRINT:
            texts = [t for t in fig.findobj(Text) if t.get_text().strip() and t.get_visible()]
            bars = [p for ax in fig.axes for p in ax.patches if isinstance(p, Rectangle)]
            self.seen[Path(png).stem] = {"size": tuple(fig.get_size_inches()),
                                         "smallest": min(t.get_fontsize() for t in texts),
                                         "bars": [(round(p.get_x() + p.get_width() / 2), p.get_facecolor()[:3])
                                                  for p in bars]}
        return self.original(fig, png, style)


def _runs_csv(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "version", "overrides", "status", "validation miou", "validation+TTA miou",
                         "submitted", "public score"])
        writer.writerow(["default", 3, "loss=cce", "downloaded", "", "", "yes", PUBLIC])
    return path


@pytest.fixture(scope="module")
def built(synthetic_dir, tmp_path_factory):
    from an2dl_kit.demo import write_reports
    from an2dl_kit.inference.ensemble import ensemble
    from an2dl_kit.kaggle.run_local import run_local
    from an2dl_kit.tasks.runner import compare

    root = tmp_path_factory.mktemp("report")
    run_local("cells", "smoke", synthetic_dir, root / "demo" / "cells")
    compare_dir = root / "compare"
    compare("mars", synthetic_dir, compare_dir, "smoke", {"cce": ["loss=cce"], "dice": ["loss=dice"],
                                                          "cce+dice": ["loss=cce+dice"]})
    shutil.copytree(compare_dir / "cce", root / "demo" / "mars")
    ensemble("mars", [compare_dir / "cce", compare_dir / "dice"], root / "ensemble", data=synthetic_dir)
    kernel_output = root / "submissions" / "mars" / "v3"
    shutil.copytree(compare_dir / "dice", kernel_output)
    shutil.copytree(compare_dir / "cce_dice", root / ODD_NAME)
    runs_csv = _runs_csv(root / "submissions" / "mars" / "runs.csv")
    spy = _FigureSpy(plots.save_figure)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plots, "save_figure", spy)
        demo = write_reports(root / "demo")
        mars = write_report("mars", [compare_dir, root / "ensemble", kernel_output, root / ODD_NAME],
                            root / "mars_report", runs_csv=runs_csv)
    return {"cells": demo["cells"].parent, "demo_mars": demo["mars"].parent, "mars": mars.parent,
            "folders": {"cells": [root / "demo" / "cells"], "demo_mars": [root / "demo" / "mars"],
                        "mars": [compare_dir, root / "ensemble", kernel_output, root / ODD_NAME]},
            "runs_csv": runs_csv, "figures": spy.seen, "root": root}


REPORTS = ("cells", "demo_mars", "mars")


# --- reading the report back ---------------------------------------------------------------------------------


class _Tables(HTMLParser):
    """Every <table id="table-KEY">: its header and rows of (text, footnote letter)."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, dict] = {}
        self.current = self.cell = None
        self.in_sup = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.current = self.tables.setdefault(attrs["id"].removeprefix("table-"), {"head": [], "rows": []})
        elif tag == "tr" and self.current is not None:
            self.current["rows"].append([])
        elif tag in ("td", "th") and self.current is not None:
            self.cell = ["", ""]
        elif tag == "sup":
            self.in_sup = True

    def handle_endtag(self, tag):
        if tag == "table":
            self.current = None
        elif tag in ("td", "th") and self.cell is not None:
            (self.current["head"] if tag == "th" else self.current["rows"][-1]).append(tuple(self.cell))
            self.cell = None
        elif tag == "sup":
            self.in_sup = False

    def handle_data(self, data):
        if self.cell is not None:
            self.cell[1 if self.in_sup else 0] += data


def html_tables(folder: Path) -> dict[str, dict]:
    parser = _Tables()
    parser.feed((folder / REPORT_HTML).read_text(encoding="utf-8"))
    return {key: {"head": [h for h, _ in t["head"]], "rows": [r for r in t["rows"] if r]}
            for key, t in parser.tables.items()}


def number(text: str) -> tuple[float, int] | None:
    """(value, decimals) of a number cell; None for text or an empty cell."""
    text = text.replace(",", "").strip()
    if not re.fullmatch(r"-?\d+(\.\d+)?", text):
        return None
    return float(text), len(text.partition(".")[2])


def assert_number(text: str, expected, where: str) -> None:
    parsed = number(text)
    assert parsed is not None, f"{where}: {text!r} is not a number (expected {expected})"
    value, decimals = parsed
    assert abs(value - expected) <= 0.5 * 10 ** -decimals + 1e-9, f"{where}: {text} != {expected}"


# --- what each table's numbers must equal ---------------------------------------------------------------------


def _metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


class Truth:
    """The records a report was made of, looked up by run name."""

    def __init__(self, task: str, folders: list[Path], runs_csv: Path | None):
        self.collection = collect(task, folders, runs_csv)
        self.runs = {run.name: _metrics(run.folder) for run in self.collection.runs}
        self.score = TASKS[task].score
        with open(runs_csv, encoding="utf-8") if runs_csv else open(os.devnull) as handle:
            self.public = {(r["name"], int(r["version"])): float(r["public score"]) for r in csv.DictReader(handle)}

    def chosen(self) -> dict:
        return self.runs[self.collection.chosen().name]


def expected_row(key: str, row: dict[str, str], truth: Truth) -> dict[str, object]:
    """Column -> the value its cell must show (numbers, or text compared verbatim)."""
    score, chosen = truth.score, truth.chosen()
    if key == "experiments":
        m = truth.runs[row["run"]]
        test = m["test_tta"][score] if m["test_tta"] else None
        public = truth.public.get(("default", 3)) if row["run"] == "default v3" else None
        return {row_key: value for row_key, value in zip(
            [k for k in row if k not in ("run", "settings", "device")],
            [m["validation"][score], m["validation_tta"][score], test, public,
             sum(p["epochs_run"] for p in m["phases"]), m["model"]["params"], m["seconds"]["training"]],
            strict=True)}
    if key == "cleaning":
        return {"removed": chosen["cleaning"]["removed"][row["rule"]]}
    if key == "classes":
        index = TASKS[chosen["task"]].class_names.index(row["class"])
        counts, weights = chosen["cleaning"]["class_counts"], chosen["details"]["class_weights"]
        dense = chosen["task"] == "mars"
        values = {(f"{s} px %" if dense else s): (100 * counts[s][index] / sum(counts[s]) if dense
                                                  else counts[s][index])
                  for s in ("raw", "cleaned", "train", "validation")}
        return {**values, ("final class weight" if dense else "class weight"): weights[index]}
    if key == "perclass":
        field = "iou" if chosen["task"] == "mars" else "f1_per_class"
        what = "IoU" if field == "iou" else "F1"
        return {f"{label} {what}": (chosen[name][field][row["class"]] if chosen[name] else None)
                for label, name in (("val.", "validation"), ("val.+TTA", "validation_tta"),
                                    ("test+TTA", "test_tta"))}
    if key == "phases":
        phase = next(p for p in chosen["phases"] if p["name"] == row["phase"])
        return {"epochs run": phase["epochs_run"], "best epoch (from 0)": phase["best_epoch"],
                next(k for k in row if k.startswith("best val.")): phase["best_value"], "seconds": phase["seconds"],
                "stopped by budget": "yes" if phase["stopped_by_budget"] else "no"}
    if key == "augmentation":
        return {"value": str(chosen["config"]["augmentation"][row["setting"]])}
    if key == "model":
        plain = {k.replace("_", " "): v for k, v in chosen["model"].items()}
        return {"value": {"parameters": chosen["model"]["params"], **plain}.get(row["property"], row["value"])}
    if key == "provenance":
        m = truth.runs[row["run"]]
        commit = m["provenance"].get("commit")
        return {"kit": m["provenance"].get("version") or "", "TensorFlow": m["versions"]["tensorflow"],
                "commit": (commit[:12] + (" (dirty)" if m["provenance"].get("dirty") else "")) if commit else "",
                "profile": m["profile"]}
    if key == "ensemble":
        record = json.loads(next(e.folder for e in truth.collection.ensembles).joinpath("metrics.json").read_text())
        member = next(m for m in record["members"] if m["run"] == row["member"])
        return {f"val. {k}": member["validation"] for k in ("mIoU", "accuracy")} | {
            "weight": member["weight"]} | {f"test {k}": member["test"][score] for k in ("mIoU", "accuracy")}
    raise AssertionError(f"table {key}: no expectations written for it")


def check_table(key: str, table: dict, truth: Truth) -> int:
    """Assert every cell that has an expectation; return how many numbers were compared."""
    compared = 0
    for cells in table["rows"]:
        row = dict(zip(table["head"], (text for text, _ in cells), strict=True))
        expected = expected_row(key, row, truth)
        for column, text in row.items():
            where = f"{key}/{list(row.values())[0]}/{column}"
            if column not in expected:
                assert number(text) is None or key in ("architecture", "model"), f"{where}: unchecked number {text}"
                continue
            value = expected[column]
            if value is None:
                assert text == "", f"{where}: {text!r} where the run has no value"
            elif isinstance(value, str):
                assert text == value, where
            else:
                assert_number(text, value, where)
                compared += 1
    return compared


@pytest.mark.slow
@pytest.mark.parametrize("report", REPORTS)
def test_every_number_in_the_tables_equals_the_runs_records(built, report):
    task = "cells" if report == "cells" else "mars"
    truth = Truth(task, built["folders"][report], built["runs_csv"] if report == "mars" else None)
    tables = html_tables(built[report])
    compared = sum(check_table(key, table, truth) for key, table in tables.items()
                   if key not in ("architecture",))
    chosen = truth.chosen()
    architecture = tables["architecture"]
    assert sum(number(row[-1][0])[0] for row in architecture["rows"]) == chosen["model"]["params"]
    assert compared >= 40
    if report == "mars":
        experiments = {row[0][0]: row for row in tables["experiments"]["rows"]}
        assert set(experiments) == {"cce", "dice", "cce+dice", "default v3", ODD_NAME}
        assert experiments["default v3"][5][0] == f"{PUBLIC:.4f}"  # the public score comes from runs.csv
        assert truth.collection.chosen().name == "default v3"  # the best public score is the chosen run


@pytest.mark.slow
@pytest.mark.parametrize("report", REPORTS)
def test_every_section_is_in_both_pages_with_its_figures(built, report):
    folder = built[report]
    page = (folder / REPORT_HTML).read_text(encoding="utf-8")
    markdown = (folder / REPORT_MD).read_text(encoding="utf-8")
    for key, title in SECTIONS.items():
        assert f'<section id="{key}">' in page
        assert f"\n## {title}\n" in markdown
    assert "<script" not in page and "http://" not in page and "https://" not in page
    sources = re.findall(r'<img src="([^"]{0,30})', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    linked = re.findall(r"\]\((figures/[^)]+\.png)\)", markdown)
    assert len(linked) == len(sources) >= 6
    for png in linked:
        assert (folder / png).is_file() and (folder / png).with_suffix(".pdf").is_file()
    figures = {p.stem for p in (folder / FIGURES_DIR).iterdir()}
    assert figures == {Path(p).stem for p in linked}  # nothing stale, nothing unlinked


def _md_tables(markdown: str) -> list[list[list[str]]]:
    tables, current = [], None
    for line in markdown.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            if current is None:
                current = []
                tables.append(current)
            if not re.fullmatch(r"\|(-+:?\|)+", line):
                cells = re.split(r"(?<!\\)\|", line)[1:-1]
                current.append([re.sub(r"\s*\[[a-z]\]$", "", c.strip()).replace("\\|", "|") for c in cells])
        elif not line.startswith("|"):
            current = None
    return tables


@pytest.mark.slow
def test_markdown_tables_hold_the_html_tables_cells(built):
    for report in REPORTS:
        html = [[t["head"]] + [[text for text, _ in row] for row in t["rows"]]
                for t in html_tables(built[report]).values()]
        md = _md_tables((built[report] / REPORT_MD).read_text(encoding="utf-8"))
        assert md == [[[c.strip() for c in row] for row in table] for table in html]


def _tex_cells(row: str) -> int:
    cells = re.split(r"(?<!\\)&", row.rstrip().removesuffix(r"\\"))
    spans = re.match(r"\\multicolumn\{(\d+)\}", cells[0].strip())
    return int(spans.group(1)) if spans else len(cells)


@pytest.mark.slow
def test_tables_tex_rows_match_their_header_and_specials_are_escaped(built):
    tex = (built["mars"] / TABLES_TEX).read_text(encoding="utf-8")
    bodies = re.findall(r"\\begin\{tabular\}\{([lr]+)\}\n(.*?)\\end\{tabular\}", tex, re.S)
    assert len(bodies) == len(html_tables(built["mars"]))
    for spec, body in bodies:
        rows = [line for line in body.splitlines() if line.endswith(r"\\")]
        assert all(_tex_cells(row) == len(spec) for row in rows), body  # a stray & would add a cell
        assert not any(re.search(r"(?<!\\)[_%#]", row) for row in rows), body
    assert "\n" + r"lr\_50\%\&more\#2 & " in tex
    assert tex.count(r"\newcommand{\Report") == len(bodies) and r"\newcommand{\ReportExperiments}" in tex
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex


@pytest.mark.slow
def test_print_figures_are_one_column_wide_legible_and_colour_classes_alike(built):
    seen = built["figures"]
    assert {"class_counts", "augmentation", "experiments", "learning_curves", "confusion_matrix", "class_iou",
            "predictions"} <= set(seen)
    for name, figure in seen.items():
        assert figure["size"][0] == pytest.approx(plots.PRINT.width, abs=0.01), name
        assert figure["smallest"] >= 8, name
    for png in (built["mars"] / FIGURES_DIR).glob("*.pdf"):
        box = re.search(rb"/MediaBox \[ ?0 0 ([\d.]+) ", png.read_bytes())
        assert float(box.group(1)) == pytest.approx(3.3 * 72, abs=0.5), png.name  # PDF points
    from matplotlib.colors import to_rgb

    mars = [to_rgb(c) for c in plots.CLASS_COLOURS["mars"]]
    counts = {pos: colour for pos, colour in seen["class_counts"]["bars"]}  # the last report drawn: mars
    assert [tuple(counts[k]) for k in range(5)] == [tuple(c) for c in mars]
    iou = {pos: colour for pos, colour in seen["class_iou"]["bars"]}  # soil, bedrock, sand, big rock, mIoU
    assert [tuple(iou[k]) for k in range(4)] == [tuple(c) for c in mars[1:]]
    assert np.allclose(plots.MARS_COLOURS, mars)  # the overlays' colours


def _copy_metrics(source: Path, target: Path, **changes) -> Path:
    target.mkdir(parents=True)
    metrics = {**_metrics(source), **changes}
    (target / "metrics.json").write_text(json.dumps(metrics))
    return target


@pytest.mark.slow
def test_bad_folders_are_one_line_errors_naming_the_folder(built, tmp_path, capsys):
    from an2dl_kit.cli import main

    cells_run, mars_run = built["folders"]["cells"][0], built["root"] / "compare" / "cce"
    schema = _copy_metrics(mars_run, tmp_path / "future", schema=2)
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [(cells_run, f"{cells_run}: a cells run, not mars; report each task on its own (--task cells)"),
             (empty, f"{empty}: no metrics.json; name a run, compare or ensemble folder"),
             (schema, f"{schema}: metrics.json schema 2 is unknown to this kit (it reads schema 1); report it "
                      "with the kit version that wrote it"),
             (tmp_path / "nowhere", f"{tmp_path / 'nowhere'}: no such folder")]
    for folder, message in cases:
        assert main(["report", "--task", "mars", str(folder), "--out", str(tmp_path / "out")]) == 2
        assert capsys.readouterr().err == f"an2dl: error: {message}\n"
    with pytest.raises(KitError, match=r"compare: a compare of mars, not cells"):
        collect("cells", [built["root"] / "compare"])
    assert not (tmp_path / "out").exists()  # nothing is written before every folder is read


@pytest.mark.slow
def test_missing_optional_files_leave_empty_cells_with_a_footnote(built, tmp_path):
    mars_run = built["root"] / "compare" / "dice"
    bare = _copy_metrics(mars_run, tmp_path / "bare", test=None, test_tta=None)
    out = write_report("mars", [bare], tmp_path / "report").parent
    tables = html_tables(out)
    row = tables["experiments"]["rows"][0]
    assert row[4] == ("", "a") and row[5] == ("", "b")  # test+TTA, public: empty, each with its note
    page = (out / REPORT_HTML).read_text(encoding="utf-8")
    assert "<li>no test labels beside the run&#x27;s test set (the competitions keep theirs)</li>" in page
    assert "<li>a local run, not a downloaded kernel output</li>" in page
    flops = dict((r[0][0], r[1]) for r in tables["model"]["rows"])["GFLOPs per image"]
    assert flops[0] == "" and flops[1]
    for what in ("learning-curve", "augmentation", "example-prediction"):
        assert f"No {what} figure: bare has no" in page
    assert "No architecture table: bare has no model.keras" in page
    assert all(row[3][0] == "" and row[3][1] for row in tables["perclass"]["rows"])  # test+TTA
    broken = _copy_metrics(mars_run, tmp_path / "broken")
    (broken / "model.keras").write_text("not a model")
    page = (write_report("mars", [broken], tmp_path / "broken_report")).read_text(encoding="utf-8")
    assert f"No architecture table: {broken / 'model.keras'} could not be loaded (" in page


@pytest.mark.slow
def test_the_report_reads_in_a_headless_browser_offline(built, tmp_path):
    from headless_browser import check_page, find_browser

    if find_browser() is None:
        if os.environ.get("AN2DL_REQUIRE_BROWSER"):
            pytest.fail("no chromium on PATH (make report-check installs Debian's chromium)")
        pytest.skip("no Chromium-family browser installed (make report-check installs one)")
    for report in ("cells", "mars"):
        screenshot = tmp_path / f"{report}.png"
        check = check_page(built[report] / REPORT_HTML, screenshot)
        assert check.errors == [] and check.requests == [] and check.scripts == 0
        assert check.images and check.broken_images == []
        assert set(SECTIONS) <= set(check.ids)
        png = screenshot.read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(png[20:24], "big") > 3000  # the whole page
        if os.environ.get("AN2DL_SCREENSHOT_DIR"):
            Path(os.environ["AN2DL_SCREENSHOT_DIR"]).mkdir(parents=True, exist_ok=True)
            shutil.copy(screenshot, Path(os.environ["AN2DL_SCREENSHOT_DIR"]) / screenshot.name)


def test_flops_are_counted_by_hand():
    import keras

    from an2dl_kit.models.flops import forward_flops

    inputs = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(5, 3, padding="same", use_bias=False)(inputs)
    outputs = keras.layers.Dense(3)(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    assert forward_flops(model, (8, 8, 2)) == 2 * (8 * 8 * 5 * 3 * 3 * 2) + 2 * (8 * 8 * 5 * 3)


def test_blocks_group_layers_by_name_prefix_even_when_apart():
    class Layer:
        def __init__(self, name, shape, params):
            self.name, self._params = name, params
            self.output = type("Output", (), {"shape": (None, *shape)})()

        def count_params(self):
            return self._params

    model = type("Model", (), {"layers": [Layer("enc1_res", (4, 4), 3), Layer("dec1_skip", (2, 2), 5),
                                          Layer("bridge", (1, 1), 7), Layer("dec1", (2, 2), 11)]})()
    grouped = blocks(model)
    assert [(b.name, b.output_shape, b.params) for b in grouped] == [("enc1", (4, 4), 3), ("dec1", (2, 2), 16),
                                                                     ("bridge", (1, 1), 7)]
