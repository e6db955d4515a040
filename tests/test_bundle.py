"""The bundler: deterministic self-contained kernel scripts, their metadata, and running them without the kit.

Also the modules split out of it by when they run: Kaggle settings and credentials, provenance, the kernel's
banner, and run-local."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
from slugify import slugify

from an2dl_kit import __version__
from an2dl_kit.errors import KitError
from an2dl_kit.kaggle import run_local
from an2dl_kit.kaggle import settings as kaggle_settings
from an2dl_kit.kaggle.banner import environment_lines, kernel_provenance
from an2dl_kit.kaggle.bundle import render_script, write_bundle
from an2dl_kit.kaggle.provenance import KIT_PACKAGE, MAIN_PATH, git_state, kit_sources, repo_root
from an2dl_kit.kaggle.settings import KernelConfig, check_no_credentials, kernel_config
from an2dl_kit.submission import check_submission, count_test_rows
from an2dl_kit.task import MARS, TASKS

REPO = Path(__file__).resolve().parents[1]
TEST_FILES = {"cells": "cells/test_set.npz", "mars": "mars/mars_for_students.npz"}
FAKE_KEY = "0123456789abcdef-not-a-real-kaggle-key"
PROV = {"task": "cells", "profile": "smoke", "version": "0", "commit": None, "dirty": True,
        "sources_sha256": "0" * 64}


def embedded(script: str) -> tuple[dict, dict]:
    """(KIT_SOURCES, PROVENANCE) read back from a bundled script without running it."""
    values = {}
    for node in ast.parse(script).body:
        target = node.targets[0] if isinstance(node, ast.Assign) else None
        if isinstance(target, ast.Name) and target.id in ("KIT_SOURCES", "PROVENANCE"):
            values[node.targets[0].id] = ast.literal_eval(node.value)
    return values["KIT_SOURCES"], values["PROVENANCE"]


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No Kaggle settings from the machine: a bare HOME and only the variables a test sets."""
    for name in list(os.environ):
        if name.startswith("KAGGLE_") or name in kaggle_settings.SETTINGS or name in ("AN2DL_TASK", "AN2DL_PROFILE"):
            monkeypatch.delenv(name)
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return monkeypatch


# ---- the script -------------------------------------------------------------------------------------------
def test_bundle_twice_is_byte_identical(clean_env, tmp_path):
    first = write_bundle("cells", "smoke", tmp_path / "a")
    second = write_bundle("cells", "smoke", tmp_path / "b")
    assert first.script.read_bytes() == second.script.read_bytes()
    assert first.metadata.read_bytes() == second.metadata.read_bytes()
    assert str(tmp_path) not in first.script.read_text()  # no absolute paths of the build machine


def test_overrides_are_baked_in_canonically_and_printed_by_the_banner(clean_env, tmp_path):
    """Equal settings, however written, give byte-identical scripts; a variant's name changes the metadata only."""
    first = write_bundle("mars", "smoke", tmp_path / "a", overrides=["training.loss=focal", "epochs=3"])
    second = write_bundle("mars", "smoke", tmp_path / "b", overrides={"epochs": "3", "loss": "focal"}, name="focal")
    plain = write_bundle("mars", "smoke", tmp_path / "c")
    assert first.script.read_bytes() == second.script.read_bytes() != plain.script.read_bytes()
    _, prov = embedded(first.script.read_text())
    assert prov["overrides"] == {"epochs": "3", "loss": "focal"} and prov["config"]["training"]["loss"] == "focal"
    assert first.script.read_text().startswith("# an2dl-kit kernel: mars challenge, smoke profile with epochs=3 "
                                               "loss=focal.")
    meta = json.loads(second.metadata.read_text())
    assert second.folder == tmp_path / "b" / "mars-focal"
    assert (meta["id"], meta["title"]) == ("USERNAME/an2dl-mars-terrain-focal", "AN2DL Mars terrain focal")
    lines = list(environment_lines(prov, tmp_path, tmp_path))
    assert lines[1] == "overrides: epochs=3, loss=focal"
    (training,) = [line for line in lines if line.startswith("config training: ")]
    assert "loss=focal" in training and "epochs=3" in training
    assert list(environment_lines(plain.provenance, tmp_path, tmp_path))[1] == "overrides: none (the profile as it is)"


@pytest.mark.parametrize("kwargs, shown", [
    ({"overrides": ["loss=boundary"]}, "loss 'boundary': unknown; choose one of cce, dice, tversky, focal, lovasz"),
    ({"name": "Focal"}, "--name 'Focal': use lowercase letters"),
])
def test_bad_override_or_name_writes_no_bundle(clean_env, tmp_path, kwargs, shown):
    with pytest.raises(KitError, match=shown):
        write_bundle("mars", "smoke", tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_bundle_embeds_every_kit_module_verbatim_then_main(clean_env, tmp_path):
    script = write_bundle("cells", "kaggle", tmp_path).script.read_text()
    sources, prov = embedded(script)
    on_disk = sorted(p.relative_to(REPO).as_posix() for p in (REPO / KIT_PACKAGE).rglob("*.py")
                     if "__pycache__" not in p.parts)
    assert list(sources) == on_disk
    for path, text in sources.items():
        assert text == "\n" + (REPO / path).read_text()
    main = (REPO / MAIN_PATH).read_text()
    assert script.endswith("\n" + main)
    commit, dirty = git_state(REPO)
    assert (prov["version"], prov["commit"], prov["dirty"]) == (__version__, commit, dirty)
    assert (prov["task"], prov["profile"], prov["config"]["training"]["seed"]) == ("cells", "kaggle", 42)
    assert prov["kernel"]["accelerator"] == "NvidiaTeslaT4"


def test_bundle_holds_no_environment_value_or_credential(clean_env, tmp_path):
    clean_env.setenv("KAGGLE_KEY", FAKE_KEY)
    clean_env.setenv("AN2DL_TEST_MARKER", "marker-value-from-the-environment")
    config_dir = tmp_path / "home" / ".kaggle"
    config_dir.mkdir()
    (config_dir / "kaggle.json").write_text(json.dumps({"username": "someone", "key": FAKE_KEY[::-1]}))
    result = write_bundle("cells", "smoke", tmp_path / "out")
    text = result.script.read_text() + result.metadata.read_text()
    for value in (FAKE_KEY, FAKE_KEY[::-1], "marker-value-from-the-environment", str(Path.home())):
        assert value not in text
    assert result.ref == "someone/an2dl-blood-cells"


@pytest.mark.parametrize("task", ["cells", "mars"])
def test_bundling_leaves_tensorflow_and_keras_unloaded(clean_env, tmp_path, task):
    """Bundling, pushing and run-local must not wait for TensorFlow: a fresh process, as `an2dl bundle` is."""
    code = ("import sys\n"
            "import an2dl_kit.kaggle.banner, an2dl_kit.kaggle.loop, an2dl_kit.kaggle.run_local\n"
            "from an2dl_kit.kaggle.bundle import write_bundle\n"
            f"write_bundle({task!r}, 'smoke', {str(tmp_path)!r})\n"
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_unknown_task_is_one_line_naming_the_choices(clean_env, tmp_path):
    for call in (lambda: write_bundle("dogs", "smoke", tmp_path), lambda: kernel_config("dogs", {}),
                 lambda: kernel_provenance(None, {"AN2DL_TASK": "dogs"})):
        with pytest.raises(KitError, match="^task 'dogs': unknown; choose one of cells, mars$"):
            call()
    assert not (tmp_path / "dogs").exists()


def test_unbundled_kernel_without_a_task_stops_with_one_line(clean_env):
    """`python kernels/main.py` from a checkout has no baked PROVENANCE: $AN2DL_TASK names the task."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, str(REPO / MAIN_PATH)], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == ("an2dl: error: AN2DL_TASK: not set; an unbundled kernel needs its task, one of "
                             "cells, mars (e.g. AN2DL_TASK=mars python kernels/main.py)\n")


def test_unbundled_provenance_is_what_a_bundle_made_now_carries(clean_env, tmp_path):
    baked = write_bundle("cells", "smoke", tmp_path).provenance
    assert kernel_provenance(None, {"AN2DL_TASK": "cells", "AN2DL_PROFILE": "smoke"}) == baked
    assert kernel_provenance(baked) == baked


def test_credential_in_the_text_is_refused_without_showing_it():
    with pytest.raises(KitError) as error:
        check_no_credentials(f"x = {FAKE_KEY!r}", "build/kernels/cells/kernel.py", {"KAGGLE_KEY": FAKE_KEY})
    assert "kernel.py: contains a Kaggle credential value" in str(error.value)
    assert FAKE_KEY not in str(error.value)


def test_module_that_cannot_be_a_raw_string_is_named():
    sources = {"an2dl_kit/bad.py": "a = '''x'''\nb = \"\"\"y\"\"\"\n"}
    with pytest.raises(KitError, match="an2dl_kit/bad.py: cannot be embedded"):
        render_script("print(1)\n", sources, PROV)
    with pytest.raises(KitError, match="kernels/main.py: `from __future__`"):
        render_script("from __future__ import annotations\n", {}, PROV)


def test_embedded_kit_wins_over_an_installed_one_and_shows_its_source(tmp_path):
    """An installed `an2dl_kit` on sys.path is ignored; inspect (autograph's source) sees the embedded text."""
    shadow = tmp_path / "shadow" / KIT_PACKAGE
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("__version__ = 'shadow'\n")
    main = ("import inspect\nimport an2dl_kit\nfrom an2dl_kit.errors import KitError\n"
            "print(an2dl_kit.__version__, an2dl_kit.__file__)\nprint(inspect.getsource(KitError))\n")
    sources = kit_sources(repo_root())
    script = tmp_path / "kernel.py"
    script.write_text(render_script(main, sources, PROV))
    env = {**os.environ, "PYTHONPATH": str(shadow.parent)}
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    first, *rest = result.stdout.splitlines()
    assert first == f"{__version__} an2dl-kit-bundle/an2dl_kit/__init__.py"
    assert rest[0] == "class KitError(Exception):"


# ---- metadata and configuration ---------------------------------------------------------------------------
@pytest.mark.parametrize("task", ["cells", "mars"])
def test_metadata_defaults(clean_env, tmp_path, task):
    clean_env.setenv("KAGGLE_USERNAME", "alice")
    written = write_bundle(task, "kaggle", tmp_path)
    meta = json.loads(written.metadata.read_text())
    assert written.provenance["task"] == task  # the one entry template reads its task from here
    owner, slug = meta["id"].split("/")
    assert owner == "alice" and slugify(meta["title"]) == slug
    assert (meta["language"], meta["kernel_type"], meta["code_file"]) == ("python", "script", "kernel.py")
    assert meta["is_private"] is True and meta["enable_gpu"] is True and meta["enable_tpu"] is False
    assert meta["machine_shape"] == "NvidiaTeslaT4" and meta["enable_internet"] is True
    expected = [TASKS[task].competition] if TASKS[task].competition else []
    assert meta["competition_sources"] == expected and meta["dataset_sources"] == []


def test_metadata_follows_configuration(clean_env, tmp_path):
    clean_env.setenv("MARS_COMPETITION", "my-private-copy")
    clean_env.setenv("MARS_DATASETS", "alice/convnext-weights, alice/mars-extra")
    clean_env.setenv("INTERNET", "false")
    clean_env.setenv("ACCELERATOR", "none")
    meta = json.loads(write_bundle("mars", "kaggle", tmp_path).metadata.read_text())
    assert meta["competition_sources"] == ["my-private-copy"]
    assert meta["dataset_sources"] == ["alice/convnext-weights", "alice/mars-extra"]
    assert meta["enable_internet"] is False and meta["enable_gpu"] is False and "machine_shape" not in meta
    assert meta["id"] == "USERNAME/an2dl-mars-terrain"


@pytest.mark.parametrize("name, value, shown", [
    ("INTERNET", "maybe", "INTERNET: 'maybe'"),
    ("CELLS_DATASETS", "not a dataset", "CELLS_DATASETS: 'not'"),
    ("CELLS_TEST_ROWS", "ten", "CELLS_TEST_ROWS: 'ten'"),
])
def test_bad_configuration_is_one_line_error(name, value, shown):
    with pytest.raises(KitError, match=shown):
        kernel_config("cells", {name: value})


def test_configuration_defaults():
    assert kernel_config("mars", {}) == KernelConfig(
        task="mars", competition=MARS.competition, datasets=(), accelerator="NvidiaTeslaT4",
        internet=True, test_rows=10022)
    assert kernel_config("cells", {"CELLS_TEST_ROWS": ""}).test_rows is None


@pytest.mark.parametrize("pin, field", [("original", "docker_image_pinning_type"),
                                        ("latest", "docker_image_pinning_type"),
                                        ("gcr.io/kaggle-gpu-images/python@sha256:" + "ab" * 32, "docker_image")])
def test_pin_writes_the_field_the_kaggle_client_reads(clean_env, tmp_path, pin, field):
    clean_env.setenv("PIN", pin)
    meta = json.loads(write_bundle("mars", "kaggle", tmp_path).metadata.read_text())
    assert meta[field] == pin
    other = {"docker_image_pinning_type", "docker_image"} - {field}
    assert not other & set(meta)


def test_pin_defaults_to_original_and_bad_pins_are_one_line_errors(clean_env, tmp_path):
    meta = json.loads(write_bundle("cells", "kaggle", tmp_path).metadata.read_text())
    assert meta["docker_image_pinning_type"] == "original"
    with pytest.raises(KitError, match=r"^PIN: 'newest' is not original, latest or an image digest"):
        kernel_config("cells", {"PIN": "newest"})


def test_cli_pin_option_sets_the_pin(clean_env, tmp_path):
    from an2dl_kit.cli import main

    digest = "sha256:" + "0" * 64
    assert main(["bundle", "--task", "mars", "--out", str(tmp_path), "--pin", digest]) == 0
    assert json.loads((tmp_path / "mars" / "kernel-metadata.json").read_text())["docker_image"] == digest


@pytest.mark.parametrize("shape", ["TpuV5E8", "TpuV6E8", "Tpu1VmV38", "NvidiaTeslaP100"])
def test_tpu_and_retired_shapes_are_refused_before_any_request(clean_env, tmp_path, monkeypatch, capsys, shape):
    from an2dl_kit.cli import main
    from an2dl_kit.kaggle import loop as kaggle_loop

    clean_env.setenv("ACCELERATOR", shape)
    with pytest.raises(KitError, match=rf"^ACCELERATOR: {shape} is refused: [^\n]+$"):
        write_bundle("mars", "kaggle", tmp_path)
    assert not (tmp_path / "mars").exists()
    monkeypatch.setattr(kaggle_loop.KaggleSession, "connect", lambda: pytest.fail("a request was made"))
    assert main(["push", "--task", "mars"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and ("tensorflow-cpu" if shape.startswith("Tpu") else "retired") in error


@pytest.mark.parametrize("shape", ["NvidiaL4", "NvidiaA100", "NvidiaH100"])
def test_single_gpu_shapes_are_requested_as_given(clean_env, tmp_path, shape):
    clean_env.setenv("ACCELERATOR", shape)
    meta = json.loads(write_bundle("cells", "kaggle", tmp_path).metadata.read_text())
    assert (meta["machine_shape"], meta["enable_gpu"], meta["enable_tpu"]) == (shape, True, False)


# ---- running the bundle without the kit -------------------------------------------------------------------
@pytest.fixture(scope="module")
def python_without_kit(tmp_path_factory) -> Path:
    """A throwaway venv that sees the kit's dependencies (.venv's site-packages via a .pth line, which adds
    the folder without running its .pth files, so the editable install's finder stays off) but not the kit."""
    venv = tmp_path_factory.mktemp("nokit") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "kit-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    probe = subprocess.run([python, "-I", "-c", "import keras, albumentations, pandas; import an2dl_kit"],
                           capture_output=True, text=True, timeout=120)
    assert "No module named 'an2dl_kit'" in probe.stderr
    return python


@pytest.mark.slow
@pytest.mark.parametrize("task", ["cells", "mars"])
def test_bundled_kernel_runs_without_the_kit_and_writes_a_valid_submission(
        clean_env, tmp_path, synthetic_dir, python_without_kit, task):
    build = subprocess.run([sys.executable, "-m", "an2dl_kit", "bundle", "--task", task, "--profile", "smoke",
                            "--out", str(tmp_path / "build")], capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stderr
    empty, out = tmp_path / "empty", tmp_path / "working"
    empty.mkdir()
    env = {**os.environ, "AN2DL_INPUT": str(synthetic_dir), "AN2DL_OUTPUT": str(out),
           "CUDA_VISIBLE_DEVICES": ""}
    start = time.monotonic()
    result = subprocess.run([python_without_kit, "-I", str(tmp_path / "build" / task / "kernel.py")],
                            cwd=empty, env=env, capture_output=True, text=True, timeout=600)
    seconds = time.monotonic() - start
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.startswith(f"an2dl-kit {__version__} | commit ")
    rows = count_test_rows(task, synthetic_dir / TEST_FILES[task])
    assert f"OK, {task}, {rows} rows" in check_submission(out / "submission.csv", task, rows)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["provenance"]["profile"] == "smoke" and metrics["provenance"]["task"] == task
    assert list(empty.iterdir()) == []
    print(f"{task} smoke kernel: {seconds:.1f} s")


def test_run_local_python_is_made_absolute_but_not_resolved(monkeypatch, tmp_path):
    """A venv's python is a link to the base interpreter: only the link's own path gives the venv's libraries."""
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    link = tmp_path / "venv" / "bin" / "python"
    link.symlink_to(sys.executable)
    monkeypatch.chdir(tmp_path)
    assert run_local.interpreter("venv/bin/python") == str(link)
    with pytest.raises(KitError, match=r"^--python venv/bin/python3: not found or not executable$"):
        run_local.interpreter("venv/bin/python3")


def test_run_local_refuses_a_foreign_nonempty_folder(clean_env, tmp_path, synthetic_dir):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(KitError, match="not empty and not made by `an2dl run-local`"):
        run_local.run_local("cells", "smoke", synthetic_dir, out)
    assert (out / "notes.txt").read_text() == "keep me"


@pytest.mark.slow
def test_run_local_cli_lays_out_inputs_and_keeps_outputs(clean_env, tmp_path, synthetic_dir, capsys):
    out = tmp_path / "run-local"

    class Args:
        task, profile, data = "cells", "smoke", synthetic_dir

    Args.out = out
    assert run_local.run_local_cli(Args) == 0
    printed = capsys.readouterr().out
    assert "cells kernel finished; " in printed and "  submission.csv (" in printed
    rows = count_test_rows("cells", synthetic_dir / TEST_FILES["cells"])
    check_submission(out / "submission.csv", "cells", rows)
    assert (out / run_local.RUN_LOCAL_MARKER).exists()


def test_run_local_mounts_each_task_file_once_where_kaggle_would(synthetic_dir):
    assert [p.name for p in run_local._input_files("cells", synthetic_dir)] == ["training_set.npz", "test_set.npz"]
    assert [p.name for p in run_local._input_files("mars", synthetic_dir)] == ["mars_for_students.npz"]
    assert (run_local.input_slug("mars"), run_local.input_slug("cells")) == (MARS.competition, "an2dl-cells")


def test_run_local_empties_only_its_own_earlier_outputs(tmp_path):
    out = tmp_path / "run-local"
    run_local.prepare_output(out)
    (out / "stale.csv").write_text("from the previous run")
    run_local.prepare_output(out)
    assert sorted(p.name for p in out.iterdir()) == [run_local.RUN_LOCAL_MARKER]


def test_git_state_counts_edits_untracked_and_ignored_modules_as_dirty(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True, timeout=30)

    (tmp_path / KIT_PACKAGE).mkdir()
    (tmp_path / "kernels").mkdir()
    (tmp_path / KIT_PACKAGE / "a.py").write_text("A = 1\n")
    (tmp_path / ".gitignore").write_text("__pycache__/\nignored.py\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    commit, dirty = git_state(tmp_path)
    assert len(commit) == 40 and dirty is False
    (tmp_path / KIT_PACKAGE / "__pycache__").mkdir()
    (tmp_path / KIT_PACKAGE / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    assert git_state(tmp_path) == (commit, False)
    (tmp_path / KIT_PACKAGE / "ignored.py").write_text("B = 2\n")
    assert git_state(tmp_path) == (commit, True)
    (tmp_path / KIT_PACKAGE / "ignored.py").unlink()
    (tmp_path / KIT_PACKAGE / "a.py").write_text("A = 2\n")
    assert git_state(tmp_path) == (commit, True)
