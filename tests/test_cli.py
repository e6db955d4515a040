"""CLI commands of the data layer: exit codes, printed results, one-line errors; TF-free imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from an2dl_kit.cli import main
from an2dl_kit.submission import write_mars_csv


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_data_configuration_and_kaggle_modules_do_not_import_tensorflow():
    code = (
        "import sys, an2dl_kit.cli, an2dl_kit.data.io, an2dl_kit.data.discover, an2dl_kit.data.clean, "
        "an2dl_kit.data.split, an2dl_kit.data.synth, an2dl_kit.data.inspect, an2dl_kit.submission, "
        "an2dl_kit.metrics, an2dl_kit.config, an2dl_kit.registries, an2dl_kit.tasks.describe, "
        "an2dl_kit.tasks.cells_config, an2dl_kit.tasks.mars_config, an2dl_kit.kaggle.bundle, "
        "an2dl_kit.kaggle.loop, an2dl_kit.kaggle.preflight, an2dl_kit.inference.ensemble; "
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_synth_writes_the_course_layout(capsys, tmp_path):
    code, out, _ = _run(
        capsys, "synth", "--out", str(tmp_path), "--seed", "1", "--contaminants", "--size", "tiny"
    )
    assert code == 0
    assert (tmp_path / "mars" / "mars_for_students.npz").is_file()
    assert out.splitlines()[0] == str(tmp_path / "cells" / "training_set.npz")


def test_inspect_prints_both_tables(capsys, synthetic_dir):
    code, out, _ = _run(capsys, "inspect", "--data", str(synthetic_dir))
    assert code == 0
    assert "## cells:" in out and "## mars:" in out
    assert "| 7 platelet |" in out and "| 4 big rock |" in out
    assert "removed 21: an identical image occurs 5+ times" in out
    assert "removed 5: a mask with 2+ terrain classes is shared by 5+ images (aliens)" in out


def test_inspect_without_files_names_the_root(capsys, tmp_path):
    code, _, err = _run(capsys, "inspect", "--data", str(tmp_path))
    assert code == 2
    assert err.startswith(f"an2dl: error: {tmp_path}: no training_set.npz found") and err.count("\n") == 1


def test_check_and_score_mars(capsys, tmp_path, synthetic_dir):
    truth = np.load(synthetic_dir / "mars" / "test_labels.npz")["labels"]
    csv = write_mars_csv(tmp_path / "p.csv", np.ones_like(truth))
    test = synthetic_dir / "mars" / "mars_for_students.npz"
    code, out, _ = _run(capsys, "check", str(csv), "--task", "mars", "--test", str(test))
    assert code == 0 and out.startswith(f"{csv}: OK, mars, 8 rows")
    code, out, _ = _run(capsys, "check", str(csv), "--task", "mars")
    assert code == 0 and "format only" in out
    code, out, _ = _run(
        capsys,
        "score",
        "--task",
        "mars",
        "--pred",
        str(csv),
        "--labels",
        str(synthetic_dir / "mars" / "test_labels.npz"),
    )
    assert code == 0 and out.startswith("mIoU 0.") and "soil" in out


def test_check_refuses_with_one_line(capsys, tmp_path, synthetic_dir):
    csv = write_mars_csv(tmp_path / "p.csv", np.ones((7, 64, 128), np.uint8))
    code, out, err = _run(
        capsys,
        "check",
        str(csv),
        "--task",
        "mars",
        "--test",
        str(synthetic_dir / "mars" / "mars_for_students.npz"),
    )
    assert code == 2 and out == ""
    assert err == f"an2dl: error: {csv}: 7 rows but the test set has 8 (1 missing id(s), first 7)\n"


def test_check_missing_test_file(capsys, tmp_path):
    csv = write_mars_csv(tmp_path / "p.csv", np.ones((1, 64, 128), np.uint8))
    code, _, err = _run(capsys, "check", str(csv), "--task", "mars", "--test", str(tmp_path / "none.npz"))
    assert code == 2 and err == f"an2dl: error: {tmp_path / 'none.npz'}: no such file\n"


def test_score_cells(capsys, tmp_path, synthetic_dir):
    labels = synthetic_dir / "cells" / "test_labels.npz"
    csv = tmp_path / "c.csv"
    csv.write_text("id,label\n" + "".join(f"{i},0\n" for i in range(16)))
    code, out, _ = _run(capsys, "score", "--task", "cells", "--pred", str(csv), "--labels", str(labels))
    assert code == 0 and out.startswith("accuracy 0.") and "confusion matrix" in out


@pytest.mark.parametrize("argv", [["check", "x.csv", "--task", "dogs"], ["score", "--task", "mars"]])
def test_usage_errors_exit_2(argv):
    result = subprocess.run([sys.executable, "-m", "an2dl_kit", *argv], capture_output=True, text=True)
    assert result.returncode == 2 and "usage: an2dl" in result.stderr


def test_console_error_is_one_line_without_traceback(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("id,label\n0,9\n")
    result = subprocess.run(
        [sys.executable, "-m", "an2dl_kit", "check", str(bad), "--task", "cells"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr == f"an2dl: error: {bad}: row 0 (line 2), column 'label': label 9 outside 0..7\n"


NATIVE_NOISE_SCRIPT = """
import os, subprocess, sys
from an2dl_kit.native_log import quiet_native_log
with quiet_native_log():
    os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n")
    os.write(2, b"I0000 00:00:1796030238.207275   19425 port.cc:153] oneDNN custom operations are on.\\n")
    os.write(2, b"E0000 00:00:1796029609.243919    8002 cuda_platform.cc:52] failed call to cuInit\\n")
    os.write(2, b"2026-11-30 09:54:16.868056: I tensorflow/core/util/port.cc:153] oneDNN custom operations\\n")
    print("a Python warning stays", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-c", "import os; os.write(2, b'W0000 00:00:1.5 7 a.cc:1] child\\\\n'); "
                    "os.write(2, b'child line stays\\\\n')"])
print("an2dl: error: after the block", file=sys.stderr)
"""


def test_native_log_lines_are_filtered_and_everything_else_passes():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", NATIVE_NOISE_SCRIPT], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == ["a Python warning stays", "child line stays", "an2dl: error: after the block"]


BENCH_NOISE_SCRIPT = """
import os, sys
from bench.common import quietly

def entry():
    os.write(2, b"2026-12-01 18:03:47.421029: E external/local_xla/cuda_platform.cc:51] failed call to cuInit\\n")
    print("[bench] seed 0: training", file=sys.stderr, flush=True)
    return 3

sys.exit(quietly(entry))
"""


@pytest.mark.parametrize("verbose, expected", [
    ("0", ["[bench] seed 0: training"]),
    ("1", ["2026-12-01 18:03:47.421029: E external/local_xla/cuda_platform.cc:51] failed call to cuInit",
           "[bench] seed 0: training"]),
])
def test_benchmarks_filter_native_log_unless_verbose(verbose, expected):
    done = subprocess.run([sys.executable, "-c", BENCH_NOISE_SCRIPT], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[1], env={**os.environ, "AN2DL_VERBOSE": verbose})
    assert done.returncode == 3
    assert done.stderr.splitlines() == expected


def test_config_prints_every_group_and_marks_what_differs(capsys):
    code, out, _ = _run(capsys, "config", "mars", "--profile", "local", "--set", "loss=focal")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "mars configuration: profile local, overrides loss=focal (* differs from the profile)"
    groups = [line for line in lines[1:] if not line.startswith(" ")]
    assert groups == ["data", "model", "training", "augmentation", "inference", "run"]
    marked = [line.split() for line in lines if line.startswith("  *")]
    assert marked == [["*", "loss", "focal", "(profile:", "cce+dice)"]]


def test_config_refuses_a_bad_setting_in_one_line(capsys):
    code, out, err = _run(capsys, "config", "mars", "--set", "loss=nope")
    assert code == 2 and out == ""
    assert err == ("an2dl: error: mars setting loss='nope': loss 'nope': unknown; choose one of cce, dice, tversky, "
                   "focal, lovasz\n")


def test_config_as_json_names_the_changed_fields(capsys):
    code, out, _ = _run(capsys, "config", "cells", "--profile", "smoke", "--json", "--set", "epochs=3",
                        "--set", "tta=none")
    record = json.loads(out)
    assert code == 0 and record["changed"] == ["epochs", "tta"]
    assert record["config"]["training"]["epochs"] == 3 and record["overrides"] == {"epochs": "3", "tta": "none"}


def test_config_markdown_lists_every_field_of_every_task(capsys):
    from an2dl_kit import config as cfg
    from an2dl_kit.tasks import resolve_config

    code, out, _ = _run(capsys, "config", "--markdown")
    assert code == 0
    for task in ("cells", "mars"):
        for name in cfg.field_names(resolve_config(task, "local")):
            assert f"| `{name}` |" in out.split(f"\n## {task}\n")[1].split("\n## ")[0], (task, name)
    loss_row = "| `loss` | str | `cce` | `cce+dice` | `cce` | terms joined by + (cce, dice, tversky, focal, lovasz) |"
    assert loss_row in out


def test_config_without_a_task_asks_for_one(capsys):
    code, _, err = _run(capsys, "config")
    assert code == 2 and err == "an2dl: error: config: name a task (cells or mars), or ask for --markdown\n"
