"""Preflight: version table, accelerators against the machine shape, one training step, and a bundled kernel
that stops within two minutes naming every mismatch."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from an2dl_kit.kaggle import preflight as pf
from an2dl_kit.kaggle import settings as kaggle_settings
from an2dl_kit.kaggle.preflight import PreflightError, check_accelerators, check_versions, installed_versions

GOOD = {"tensorflow": "2.20.0", "keras": "3.13.2", "numpy": "2.0.2", "pandas": "2.2.2",
        "albumentations": "2.0.8", "matplotlib": "3.10.9"}


def test_the_kaggle_image_versions_pass_without_notes():
    assert check_versions(GOOD) == ([], [])


def test_every_mismatch_names_package_found_and_needed():
    problems, _ = check_versions({**GOOD, "albumentations": "1.4.24", "keras": "2.15.0", "pandas": None})
    assert problems == ["keras: found 2.15.0, needed >=3.5,<4", "pandas: found not installed, needed >=2.0,<4",
                        "albumentations: found 1.4.24, needed >=2.0.8,<3"]


def test_versions_inside_the_needed_but_outside_the_tested_range_are_notes():
    problems, notes = check_versions({**GOOD, "keras": "3.16.0", "tensorflow": "2.20.1rc0"})
    assert problems == [] and notes == ["keras 3.16.0: untested (tested 3.13 to 3.15)"]


def test_fake_versions_come_from_the_environment():
    found = installed_versions({pf.FAKE_VERSIONS_VAR: "albumentations=1.4.24"})
    assert found["albumentations"] == "1.4.24" and found["numpy"] not in (None, "1.4.24")


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
    assert pf.preflight("cells", "smoke", "NvidiaTeslaT4", environ={}, gpus=[]) == ["preflight: versions ok",
                                                                                    "stepped"]
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
    assert pf.preflight("cells", "smoke", environ={}) == ["preflight: versions ok", "step"]  # not needed: no check
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
    assert "an2dl: error: preflight: 2 problem(s)" in result.stderr
    assert "albumentations: found 1.4.24, needed >=2.0.8,<3" in result.stderr
    assert "numpy: found 1.24.4, needed >=1.26,<3" in result.stderr
    assert "loading" not in result.stdout and not (tmp_path / "working").exists()
