"""Preflight: version table, accelerators against the machine shape, one training step, and a bundled kernel
that stops within two minutes naming every mismatch."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from an2dl_kit import runtime as rt
from an2dl_kit.kaggle import preflight as pf
from an2dl_kit.kaggle import settings as kaggle_settings
from an2dl_kit.kaggle.preflight import PreflightError, check_accelerators, check_versions, installed_libraries
from an2dl_kit.kaggle.run_local import run_local
from an2dl_kit.runtime import Library
from an2dl_kit.submission import check_submission, count_test_rows

# The venv `make cpu-image-check` builds: tensorflow-cpu and the Kaggle image's other libraries, nothing of the kit.
CPU_IMAGE_VENV = Path(__file__).resolve().parents[1] / "build" / "cpu-image" / "venv"

KAGGLE_IMAGE = {"tensorflow": "2.20.0", "keras": "3.13.2", "numpy": "2.0.2", "pandas": "2.2.2",
                "albumentations": "2.0.8", "matplotlib": "3.10.9"}


def libraries(**versions: str | None) -> dict[str, Library]:
    """The Kaggle image's libraries, each from the distribution of its own name, with `versions` replacing some
    (None: not installed)."""
    merged = {**KAGGLE_IMAGE, **versions}
    return {module: Library(module, ((module, version),) if version else ()) for module, version in merged.items()}


@pytest.fixture
def metadata(monkeypatch):
    """Installs a fake metadata table in place of what importlib.metadata reads from disk: the Kaggle image's
    distributions, with those a test passes as name=(version, [modules it provides]) or name=None (absent)."""
    def install(**changes: tuple[str, list[str]] | None) -> None:
        distributions = {**{m: (v, [m]) for m, v in KAGGLE_IMAGE.items()}, **changes}
        table: dict[str, list[str]] = {}
        for name, (_, modules) in ((n, d) for n, d in distributions.items() if d is not None):
            for module in modules:
                table.setdefault(module, []).append(name)
        monkeypatch.setattr(importlib.metadata, "packages_distributions", lambda: table)
        versions = {name.lower().replace("_", "-"): d[0] for name, d in distributions.items() if d is not None}
        monkeypatch.setattr(importlib.metadata, "version", lambda name: versions[name.lower().replace("_", "-")])

    return install


def test_the_kaggle_image_versions_pass_without_notes():
    assert check_versions(libraries()) == ([], [])


def test_every_mismatch_names_package_found_and_needed():
    problems, _ = check_versions(libraries(albumentations="1.4.24", keras="2.15.0", pandas=None))
    assert problems == ["keras: found 2.15.0, needed >=3.5,<4", "pandas: found not installed, needed >=2.0,<4",
                        "albumentations: found 1.4.24, needed >=2.0.8,<3"]


def test_versions_inside_the_needed_but_outside_the_tested_range_are_notes():
    problems, notes = check_versions(libraries(keras="3.16.0", tensorflow="2.20.1rc0"))
    assert problems == [] and notes == ["keras 3.16.0: untested (tested 3.13 to 3.15)"]


def test_fake_versions_come_from_the_environment():
    found = installed_libraries({pf.FAKE_VERSIONS_VAR: "albumentations=1.4.24"})
    assert found["albumentations"] == Library("albumentations", (("albumentations", "1.4.24"),))
    assert found["numpy"].version not in (None, "1.4.24")


def test_fake_versions_stand_in_for_a_fake_metadata_table(metadata):
    metadata(tensorflow=None, **{"tensorflow-cpu": ("2.20.0", ["tensorflow"])})
    found = installed_libraries({pf.FAKE_VERSIONS_VAR: "tensorflow=2.15.0"})
    assert check_versions(found)[0] == ["tensorflow: found 2.15.0, needed >=2.16,<3"]


def test_tensorflow_from_tensorflow_cpu_passes_and_is_named(metadata, monkeypatch):
    metadata(tensorflow=None, **{"tensorflow-cpu": ("2.20.0", ["tensorflow"])})
    monkeypatch.setattr(pf, "training_step", lambda task, profile, overrides=None: "stepped")
    lines = pf.preflight("cells", "smoke", environ={})
    assert lines == ["preflight: versions ok: tensorflow 2.20.0 (tensorflow-cpu), keras 3.13.2, numpy 2.0.2, "
                     "pandas 2.2.2, albumentations 2.0.8, matplotlib 3.10.9", "stepped"]
    assert rt.library_versions()["tensorflow"] == "2.20.0 (tensorflow-cpu)"


def test_no_distribution_providing_tensorflow_fails_naming_it(metadata):
    metadata(tensorflow=None, **{"tensorflow-io": ("0.37.1", ["tensorflow_io"])})
    with pytest.raises(PreflightError) as caught:
        pf.preflight("cells", "smoke", environ={})
    assert caught.value.problems == ["tensorflow: found not installed, needed >=2.16,<3"]
    assert rt.library_versions()["tensorflow"] == "not installed"


def test_two_distributions_providing_tensorflow_are_a_broken_environment_naming_both(metadata):
    metadata(**{"tensorflow-cpu": ("2.19.0", ["tensorflow"])})
    with pytest.raises(PreflightError) as caught:
        pf.preflight("cells", "smoke", environ={})
    assert caught.value.problems == [
        "tensorflow: a broken environment, tensorflow 2.20.0 and tensorflow-cpu 2.19.0 both provide it; keep one"]
    assert rt.library_versions()["tensorflow"] == "broken (tensorflow 2.20.0 and tensorflow-cpu 2.19.0 both provide it)"


def test_three_distributions_are_named_by_their_canonical_names(metadata):
    metadata(**{"tensorflow-cpu": ("2.19.0", ["tensorflow"]), "Tensorflow_Intel": ("2.20.0", ["tensorflow"])})
    assert installed_libraries({})["tensorflow"].describe() == (
        "broken (tensorflow 2.20.0, tensorflow-cpu 2.19.0 and tensorflow-intel 2.20.0 all provide it)")


def test_one_distribution_seen_twice_counts_once(metadata):
    metadata(numpy=("2.0.2", ["numpy", "numpy"]))
    assert installed_libraries({})["numpy"] == Library("numpy", (("numpy", "2.0.2"),))


def test_preflight_checks_the_libraries_every_run_records():
    assert sorted(pf.REQUIREMENTS) == sorted(rt.LIBRARIES)


@pytest.mark.parametrize(("shape", "gpus", "ok"), [
    ("NvidiaTeslaT4", ["Tesla T4", "Tesla T4"], True),
    ("NvidiaTeslaT4", ["Tesla T4"], False),
    ("NvidiaTeslaT4", [], False),
    ("NvidiaL4", ["NVIDIA L4"], True),
    ("NvidiaH100", ["Tesla T4", "Tesla T4"], False),
    ("NvidiaSomethingNew", ["NVIDIA B200"], True),
    ("NvidiaSomethingNew", [], False),
    ("none", [], True),
])
def test_accelerators_against_the_machine_shape(shape, gpus, ok):
    problems = check_accelerators(shape, gpus)
    assert (problems == []) is ok
    assert all(p.startswith(f"accelerator {shape}: found ") and "needed" in p for p in problems)


def test_accelerators_are_checked_on_kaggle_only_and_with_the_step(monkeypatch):
    calls = []
    monkeypatch.setattr(pf, "training_step", lambda task, profile, overrides=None: calls.append(task) or "stepped")
    lines = pf.preflight("cells", "smoke", "NvidiaTeslaT4", environ={}, gpus=[])
    assert lines[0].startswith("preflight: versions ok: tensorflow ") and lines[1:] == ["stepped"]
    with pytest.raises(PreflightError, match="accelerator NvidiaTeslaT4: found 0 GPU"):
        pf.preflight("cells", "smoke", "NvidiaTeslaT4", environ={pf.KAGGLE_RUN_VAR: "Batch"}, gpus=[])
    assert calls == ["cells"] and os.environ["KERAS_BACKEND"] == "tensorflow"


def test_a_failing_training_step_is_named(monkeypatch):
    def boom(task, profile, overrides=None):
        raise MemoryError("OOM when allocating tensor\nmore detail")

    monkeypatch.setattr(pf, "training_step", boom)
    with pytest.raises(PreflightError) as caught:
        pf.preflight("mars", "smoke", environ={})
    assert caught.value.problems == ["training step: MemoryError: OOM when allocating tensor"]


def test_a_setting_that_needs_medmnistc_stops_preflight_when_the_package_is_missing(monkeypatch):
    from an2dl_kit.augment import medmnist_c

    steps = []
    monkeypatch.setattr(pf, "training_step", lambda task, profile, overrides=None: steps.append(overrides) or "step")
    monkeypatch.setattr(medmnist_c, "missing", lambda: "the medmnistc package is not installed (make medmnistc)")
    with pytest.raises(PreflightError) as caught:
        pf.preflight("cells", "smoke", environ={}, overrides=["augment=medmnistc"])
    assert caught.value.problems == [
        "cells setting augment=medmnistc: the medmnistc package is not installed (make medmnistc); Kaggle's image "
        "has neither, and a kernel cannot install them: train this setting locally, or choose another"]
    lines = pf.preflight("cells", "smoke", environ={})  # not needed: no check
    assert lines[0].startswith("preflight: versions ok: ") and lines[1:] == ["step"]
    monkeypatch.setattr(medmnist_c, "missing", lambda: None)
    assert pf.preflight("cells", "smoke", environ={}, overrides=["tta_select_shift=medmnistc"])[-1] == "step"
    assert steps == [None, ["tta_select_shift=medmnistc"]]


@pytest.mark.parametrize("task", ["cells", "mars"])
def test_the_training_step_runs_each_tasks_smoke_profile(task):
    line = pf.training_step(task, "smoke")
    assert line.startswith("one ") and "deterministic on; XLA off" in line


def test_bundled_kernel_with_an_old_albumentations_stops_within_two_minutes(monkeypatch, tmp_path):
    for name in kaggle_settings.SETTINGS:
        monkeypatch.delenv(name, raising=False)
    build = subprocess.run([sys.executable, "-m", "an2dl_kit", "bundle", "--task", "cells", "--profile", "kaggle",
                            "--out", str(tmp_path / "build")], capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stderr
    env = {**os.environ, "AN2DL_INPUT": str(tmp_path), "AN2DL_OUTPUT": str(tmp_path / "working"),
           pf.FAKE_VERSIONS_VAR: "albumentations=1.4.24,numpy=1.24.4", pf.KAGGLE_RUN_VAR: "Batch",
           "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, "-I", str(tmp_path / "build" / "cells" / "kernel.py")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "an2dl: error: preflight: 3 problem(s)" in result.stderr
    assert "albumentations: found 1.4.24, needed >=2.0.8,<3" in result.stderr
    assert "numpy: found 1.24.4, needed >=1.26,<3" in result.stderr
    assert f"data: no training_set.npz under {tmp_path}; the kernel was pushed without a data source;" in result.stderr
    assert "loading" not in result.stdout and not (tmp_path / "working").exists()


@pytest.mark.slow
@pytest.mark.parametrize("task", ["cells", "mars"])
def test_bundled_smoke_kernel_runs_where_tensorflow_comes_from_tensorflow_cpu(monkeypatch, tmp_path, capfd,
                                                                              synthetic_dir, task):
    if not (CPU_IMAGE_VENV / ".installed").exists():
        pytest.skip("no build/cpu-image/venv with tensorflow-cpu: `make cpu-image-check` builds it")
    for name in kaggle_settings.SETTINGS:
        monkeypatch.delenv(name, raising=False)
    python = CPU_IMAGE_VENV / "bin" / "python"
    probe = subprocess.run([python, "-I", "-c", "import kaggle"], capture_output=True, text=True, timeout=60)
    assert "No module named 'kaggle'" in probe.stderr
    out = tmp_path / "working"
    run_local(task, "smoke", synthetic_dir, out, python=str(python))
    printed = capfd.readouterr().out
    assert "\npreflight: versions ok: tensorflow 2.20.0 (tensorflow-cpu), keras 3.13.2, numpy 2.0.2," in printed
    assert json.loads((out / "metrics.json").read_text())["versions"]["tensorflow"] == "2.20.0 (tensorflow-cpu)"
    test_file = synthetic_dir / ("cells/test_set.npz" if task == "cells" else "mars/mars_for_students.npz")
    rows = count_test_rows(task, test_file)
    assert f"OK, {task}, {rows} rows" in check_submission(out / "submission.csv", task, rows)
