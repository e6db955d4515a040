"""The Codabench submission: a self-contained model.py, importable from a fresh folder."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from an2dl_kit.inference import codabench, tta
from an2dl_kit.models.cells import build_classifier

PROBE = """
import json, sys
import numpy as np
import model
images = np.load("images.npy")
labels = model.Model().predict(images)
print(json.dumps({"shape": list(labels.shape), "dtype": str(labels.dtype), "labels": labels.tolist(),
                  "kit_imported": any(name.startswith("an2dl_kit") for name in sys.modules),
                  "scaled": model.Model().predict(images / 255.0).tolist()}))
"""


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    model, _ = build_classifier("small_cnn", "none", image_size=32)
    path = tmp_path_factory.mktemp("model") / "model.keras"
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    model.save(path)
    return model, path


def test_model_source_embeds_the_tta_adaptation_and_colour_modules_verbatim_less_kit_imports():
    source = codabench.model_source([codabench.Member("model.keras", ("identity", "flip_lr"))])
    assert [module.__name__ for module in codabench.INLINED] == [
        "an2dl_kit.errors", "an2dl_kit.registry", "an2dl_kit.inference.adapt", "an2dl_kit.inference.tta",
        "an2dl_kit.models.colour"]
    for module in codabench.INLINED:
        kit_imports = [line for line in inspect.getsource(module).splitlines(keepends=True)
                       if line.startswith(("from an2dl_kit.", "from __future__"))]
        body = inspect.getsource(module)
        for line in kit_imports:
            body = body.replace(line, "")
        assert body in source, module.__name__
    assert source.count("from __future__ import annotations") == 1
    assert "MEMBERS = (('model.keras', ('identity', 'flip_lr'), 1.0, 'none', 64),)" in source
    assert "an2dl_kit" not in source.replace("an2dl_kit/errors.py", "")
    compile(source, "model.py", "exec")


def test_zip_holds_model_py_and_an_optimizer_free_model(saved_model, tmp_path):
    _, path = saved_model
    zip_path = codabench.write_submission_zip(tmp_path / "submission.zip",
                                              [codabench.Member(path, tta.REFERENCE_VIEWS)])
    with zipfile.ZipFile(zip_path) as archive:
        assert sorted(archive.namelist()) == ["model.keras", "model.py"]
        size = archive.getinfo("model.keras").file_size
    assert size < path.stat().st_size  # the Adam moments were left out


def _shifted_statistics_model(folder):
    """A small classifier whose BatchNorm statistics are far from what its layers see: adapting them must change
    its predictions."""
    import keras

    keras.utils.set_random_seed(4)
    model, _ = build_classifier("small_cnn", "none", image_size=32)
    for layer in model.get_layer("backbone").layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(np.full(layer.moving_mean.shape, 0.5, np.float32))
            layer.moving_variance.assign(np.full(layer.moving_variance.shape, 0.01, np.float32))
    model.save(folder / "shifted.keras")
    return model, folder / "shifted.keras"


@pytest.mark.parametrize("adapt", ["none", "set"])
def test_model_py_predicts_from_a_fresh_folder_without_the_kit(saved_model, tmp_path, adapt):
    model, path = saved_model if adapt == "none" else _shifted_statistics_model(tmp_path)
    zip_path = codabench.write_submission_zip(tmp_path / "submission.zip",
                                              [codabench.Member(path, "dihedral", adapt=adapt)])
    images = np.random.default_rng(0).integers(0, 256, (12, 96, 96, 3)).astype(np.uint8)
    report = predict_in_fresh_folder(zip_path, images, tmp_path / "fresh")
    assert report["shape"] == [12] and report["dtype"] == "int64"
    assert not report["kit_imported"]
    expected = tta.predict_tta(model, images, views="dihedral", adapt=adapt).argmax(axis=-1)
    assert report["labels"] == expected.tolist()
    assert report["scaled"] == expected.tolist()
    if adapt != "none":  # the statistics are far from the activations: adapting changes labels
        assert report["labels"] != tta.predict_tta(model, images, views="dihedral").argmax(axis=-1).tolist()


def predict_in_fresh_folder(zip_path, images: np.ndarray, folder) -> dict:
    """Unzip into an empty folder and run PROBE there, in a Python that cannot import the kit."""
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(folder)
    np.save(folder / "images.npy", images)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_ensemble_model_py_averages_every_member_with_its_views(saved_model, tmp_path):
    model, path = saved_model
    other, _ = build_classifier("small_cnn", "none", image_size=32)
    other_path = tmp_path / "other.keras"
    other.save(other_path)
    members = [codabench.Member(path, ("identity", "flip_lr"), 0.7), codabench.Member(other_path, "dihedral", 0.3)]
    zip_path = codabench.write_submission_zip(tmp_path / "submission.zip", members)
    with zipfile.ZipFile(zip_path) as archive:
        assert sorted(archive.namelist()) == ["model.py", "model_0.keras", "model_1.keras"]
    images = np.random.default_rng(1).integers(0, 256, (4, 96, 96, 3)).astype(np.uint8)
    report = predict_in_fresh_folder(zip_path, images, tmp_path / "fresh")
    assert report["shape"] == [4] and not report["kit_imported"]
    expected = (0.7 * tta.predict_tta(model, images, views=("identity", "flip_lr"))
                + 0.3 * tta.predict_tta(other, images, views="dihedral")).argmax(axis=-1)
    assert report["labels"] == expected.tolist()


@pytest.mark.slow
@pytest.mark.parametrize("settings", [["bn_adapt=none"], ["bn_adapt=set", "colour_norm=opponent"],
                                      ["bn_adapt=batch", "batch_size=8", "colour_norm=grey_world"]])
def test_the_zip_of_a_run_predicts_exactly_its_submission_csv(settings, synthetic_dir, tmp_path):
    """What the platform scores is what the run wrote: the same models, TTA views, BatchNorm adaptation (over
    the whole test set, or per batch of the run's batch size) and colour normalisation, from the zip alone."""
    from an2dl_kit.cli import main
    from an2dl_kit.data.io import load_cells_test
    from an2dl_kit.submission import read_cells_csv

    out = tmp_path / "run"
    overrides = [part for setting in [*settings, "tta=identity,flip_lr", "tta_select=false"]
                 for part in ("--set", setting)]
    assert main(["train", "cells", "--data", str(synthetic_dir), "--out", str(out), "--profile", "smoke",
                 *overrides]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["inference"]["bn_adapt"] == settings[0].split("=")[1]
    images = load_cells_test(synthetic_dir / "cells" / "test_set.npz")
    report = predict_in_fresh_folder(out / "submission.zip", images, tmp_path / "fresh")
    assert not report["kit_imported"]
    assert report["labels"] == read_cells_csv(out / "submission.csv").tolist()
