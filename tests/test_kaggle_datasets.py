"""`an2dl upload-data` against the loopback stand-in, driving the real kaggle client in subprocesses.

The commands run as in test_kaggle_loop.py (`Kit`: fake credentials, the stand-in as proxy, nothing leaves
127.0.0.1). $TMPDIR points into the test's folder: the client keeps its resumable-upload state there.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from kaggle_standin import KaggleStandIn
from test_kaggle_loop import Kit

from an2dl_kit.errors import KitError
from an2dl_kit.kaggle.datasets import with_recorded_dataset
from an2dl_kit.kaggle.preflight import PreflightError, check_inputs, preflight
from an2dl_kit.kaggle.settings import KernelConfig

REF = "standin-user/an2dl-cells-data"
INPUTS = ("training_set.npz", "test_set.npz")


@pytest.fixture
def standin():
    with KaggleStandIn(timeout_s=120) as server:
        yield server


@pytest.fixture
def kit(standin, tmp_path) -> Kit:
    kit = Kit(standin, tmp_path)
    kit.env.update(TMPDIR=str(tmp_path), CELLS_COMPETITION="")  # the cells challenge has no Kaggle competition
    return kit


@pytest.fixture
def data(synthetic_dir, tmp_path) -> Path:
    """A writable copy of the synthetic cells files, test_labels.npz included."""
    shutil.copytree(synthetic_dir / "cells", tmp_path / "data" / "cells")
    return tmp_path / "data" / "cells"


def upload(kit: Kit, data: Path, *extra: str) -> subprocess.CompletedProcess:
    return kit("upload-data", "--task", "cells", "--data", str(data), *extra)


def records(kit: Kit) -> list[dict]:
    return json.loads((kit.work / "submissions" / "cells" / "datasets.json").read_text())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def mib(path: Path) -> str:
    return f"{path.stat().st_size / 2**20:.1f} MiB"


# ---- the good path ----------------------------------------------------------------------------------------
def test_first_upload_creates_one_private_dataset_with_the_images_and_not_the_labels(kit, standin, data):
    result = upload(kit, data)
    assert result.returncode == 0, result.stderr
    assert standin.names() == ["GetDatasetStatus", "GetDatasetStatus", "StartBlobUpload", "upload",
                               "StartBlobUpload", "upload", "CreateDataset", "GetDatasetStatus",
                               "GetDatasetStatus", "GetDataset"]
    (create,) = standin.calls("CreateDataset")
    body = create.json()
    assert (body["ownerSlug"], body["slug"], body["isPrivate"]) == ("standin-user", "an2dl-cells-data", True)
    assert body["licenseName"] == "copyright-authors"
    assert standin.datasets[REF]["files"] == {name: (data / name).read_bytes() for name in INPUTS}
    labels = (data / "test_labels.npz").read_bytes()
    assert not [r for r in standin.requests if labels in r.body or b"test_labels" in r.body]

    out = result.stdout
    listing = [f"  send {name:<22} {mib(data / name):>11}" for name in INPUTS]
    assert all(line in out for line in listing)
    assert f"  not sent: {data.resolve() / 'test_labels.npz'} (test labels never leave this machine)" in out
    assert out.index(listing[-1]) < out.index("creating private dataset") < out.index("Starting upload")
    assert f"{REF} version 1 is ready (private)" in out

    (record,) = records(kit)
    assert (record["ref"], record["version"], record["status"], record["private"]) == (REF, 1, "ready", True)
    assert [(f["name"], f["size"], f["sha256"]) for f in record["files"]] == [
        (name, (data / name).stat().st_size, sha256(data / name)) for name in INPUTS]
    staged = kit.work / "build" / "datasets" / "cells"
    assert sorted(p.name for p in staged.iterdir()) == ["dataset-metadata.json", *sorted(INPUTS)]


def test_second_upload_of_the_same_files_sends_no_request(kit, standin, data):
    assert upload(kit, data).returncode == 0
    sent, recorded = len(standin.requests), (kit.work / "submissions/cells/datasets.json").read_bytes()
    again = upload(kit, data)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(f"{REF}: unchanged since version 1 (") and "nothing sent" in again.stdout
    assert len(standin.requests) == sent
    assert (kit.work / "submissions/cells/datasets.json").read_bytes() == recorded


def test_a_changed_file_sends_one_version_and_a_push_then_attaches_the_dataset(kit, standin, data):
    assert upload(kit, data).returncode == 0
    first = sha256(data / "test_set.npz")
    with np.load(data / "test_set.npz") as npz:
        np.savez(data / "test_set.npz", images=npz["images"][:-1])
    sent = len(standin.requests)
    result = upload(kit, data)
    assert result.returncode == 0, result.stderr
    new = [r.name for r in standin.requests[sent:]]
    assert new.count("CreateDatasetVersion") == 1 and "CreateDataset" not in new
    (version,) = standin.calls("CreateDatasetVersion")
    assert version.json()["body"]["versionNotes"] == "an2dl-kit upload-data: test_set.npz"
    assert "sending a new version of standin-user/an2dl-cells-data (changed: test_set.npz)" in result.stdout
    assert standin.datasets[REF]["version"] == 2
    assert standin.datasets[REF]["files"]["test_set.npz"] == (data / "test_set.npz").read_bytes()
    assert [(r["version"], r["files"][1]["sha256"]) for r in records(kit)] == [
        (1, first), (2, sha256(data / "test_set.npz"))]

    push = kit.push()
    assert f"data: attaching {REF} version 2 (submissions/cells/datasets.json)" in push.stdout
    (save,) = standin.calls("SaveKernel")
    assert save.json()["datasetDataSources"] == [REF] and save.json().get("competitionDataSources", []) == []
    meta = json.loads((kit.work / "build/kernels/cells/kernel-metadata.json").read_text())
    assert meta["dataset_sources"] == [REF]


def test_a_dataset_deleted_on_kaggle_is_created_again_and_one_made_elsewhere_is_versioned(kit, standin, data):
    assert upload(kit, data).returncode == 0
    del standin.datasets[REF]
    np.savez(data / "test_set.npz", images=np.zeros((3, 96, 96, 3), np.uint8))
    assert upload(kit, data).returncode == 0
    assert standin.names().count("CreateDataset") == 2 and "CreateDatasetVersion" not in standin.names()
    (kit.work / "submissions/cells/datasets.json").unlink()
    result = upload(kit, data)
    assert result.returncode == 0, result.stderr
    assert "changed: training_set.npz, test_set.npz" in result.stdout
    assert standin.names().count("CreateDatasetVersion") == 1 and standin.datasets[REF]["version"] == 2


def test_cells_datasets_when_set_wins_over_the_recorded_dataset(kit, standin, data):
    assert upload(kit, data).returncode == 0
    kit.env["CELLS_DATASETS"] = "someone/other-cells"
    push = kit.push()
    assert "data: attaching" not in push.stdout
    assert standin.calls("SaveKernel")[0].json()["datasetDataSources"] == ["someone/other-cells"]


def test_public_only_when_asked(kit, standin, data):
    result = upload(kit, data, "--public")
    assert result.returncode == 0, result.stderr
    assert standin.calls("CreateDataset")[0].json().get("isPrivate", False) is False  # the client omits False
    assert records(kit)[0]["private"] is False and "is ready (PUBLIC)" in result.stdout


def test_a_dataset_kaggle_lists_as_public_without_public_1_is_an_error(kit, standin, data):
    standin.extra["GetDataset"] = {"isPrivate": False}
    result = upload(kit, data)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (f"an2dl: error: {REF}: Kaggle lists the dataset as public, and "
                                              "PUBLIC=1 was not given; make it private on the dataset's settings page")
    assert records(kit)[0]["private"] is False  # what Kaggle said is recorded all the same


# ---- refusals ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, name, value, shown", [
    ("fail", "CreateDataset", (403, {"code": 403, "message": "Dataset limit reached"}),
     f"CreateDataset {REF}: HTTP 403: Dataset limit reached"),
    ("extra", "CreateDataset", {"status": "Error", "error": "Title already in use"},
     f"CreateDataset {REF}: not accepted: Title already in use"),
    ("fail", "upload", (403, "SignatureDoesNotMatch"), f"CreateDataset {REF}: Upload unsuccessful: training_set.npz"),
    ("fail", "StartBlobUpload", (400, {"code": 400, "message": "File too large"}),
     f"CreateDataset {REF}: HTTP 400: File too large"),
])
def test_a_refused_creation_records_nothing(kit, standin, data, kind, name, value, shown):
    getattr(standin, kind)[name] = value
    result = upload(kit, data)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == f"an2dl: error: {shown}"
    assert not (kit.work / "submissions").exists()
    assert REF not in standin.datasets


def test_a_refused_version_keeps_the_record(kit, standin, data):
    assert upload(kit, data).returncode == 0
    before = (kit.work / "submissions/cells/datasets.json").read_bytes()
    np.savez(data / "test_set.npz", images=np.zeros((3, 96, 96, 3), np.uint8))
    standin.fail["CreateDatasetVersion"] = (403, {"code": 403, "message": "Permission denied"})
    result = upload(kit, data)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == f"an2dl: error: CreateDatasetVersion {REF}: HTTP 403: Permission denied"
    assert (kit.work / "submissions/cells/datasets.json").read_bytes() == before


@pytest.mark.parametrize("content, shown", [
    (b"not a zip", "not an npz file (not a zip archive)"),
    (None, "no training_set.npz found for cells under this folder"),
])
def test_a_bad_or_missing_file_is_the_loaders_error_before_any_request(kit, standin, data, content, shown):
    path = data / "training_set.npz"
    if content is None:
        path.unlink()
    else:
        path.write_bytes(content)
    result = upload(kit, data)
    assert result.returncode == 2
    assert result.stderr.startswith("an2dl: error: ") and shown in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert standin.requests == []
    assert not (kit.work / "build").exists() and not (kit.work / "submissions").exists()


def test_an_upload_kaggle_fails_to_process_is_recorded_and_sent_again(kit, standin, data):
    standin.dataset_statuses = ["FAILED"]
    failed = upload(kit, data)
    assert failed.returncode == 2
    assert f"an2dl: error: {REF}: Kaggle reports the upload failed" in failed.stderr
    assert records(kit)[-1]["status"] == "failed"
    standin.dataset_statuses = ["READY"]
    again = upload(kit, data)
    assert again.returncode == 0, again.stderr
    assert standin.names().count("CreateDatasetVersion") == 1
    assert [r["status"] for r in records(kit)] == ["failed", "ready"]


def test_an_upload_still_processing_at_the_timeout_is_waited_for_not_sent_again(kit, standin, data):
    standin.dataset_statuses = ["BLOBS_RECEIVED"]
    kit.env["AN2DL_WAIT_TIMEOUT"] = "0.05"
    first = upload(kit, data)
    assert first.returncode == 2
    assert "still blobs_received after" in first.stderr and "`make upload-data TASK=cells` again" in first.stderr
    assert records(kit)[0]["status"] == "accepted"
    standin.dataset_statuses = ["READY"]
    sent = len(standin.requests)
    again = upload(kit, data)
    assert again.returncode == 0, again.stderr
    assert [r.name for r in standin.requests[sent:]] == ["GetDatasetStatus", "GetDataset"]
    assert [(r["status"], r["version"]) for r in records(kit)] == [("ready", 1)]


# ---- the kernel side and the pure helpers -----------------------------------------------------------------
def test_a_kernel_without_its_data_names_the_dataset_it_expected(tmp_path, synthetic_dir):
    kernel = {"datasets": [REF], "competition": "", "accelerator": "none"}
    (problem,) = check_inputs("cells", tmp_path, kernel)
    assert problem.startswith(f"data: no training_set.npz under {tmp_path}; expected from dataset {REF}: ")
    assert "`make upload-data TASK=cells`" in problem
    assert check_inputs("cells", synthetic_dir, kernel) == []
    (bare,) = check_inputs("mars", tmp_path, {"datasets": [], "competition": ""})
    assert "the kernel was pushed without a data source" in bare
    with pytest.raises(PreflightError, match=f"expected from dataset {REF}"):
        preflight("cells", "smoke", input_dir=tmp_path, kernel=kernel)


def config(task: str, competition: str = "", datasets: tuple[str, ...] = ()) -> KernelConfig:
    return KernelConfig(task=task, competition=competition, datasets=datasets, accelerator="none",
                        internet=True, test_rows=None)


def test_the_recorded_dataset_replaces_a_competition_and_never_an_explicit_choice(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert with_recorded_dataset(config("mars", "a-competition")) == config("mars", "a-competition")
    path = tmp_path / "submissions" / "mars" / "datasets.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps([{"ref": "me/an2dl-mars-data", "version": 3, "status": "ready"}]))
    assert with_recorded_dataset(config("mars", "a-competition")) == config("mars", "", ("me/an2dl-mars-data",))
    assert capsys.readouterr().out == ("data: attaching me/an2dl-mars-data version 3 (submissions/mars/datasets.json) "
                                       "in place of competition a-competition's files; set MARS_DATASETS to choose "
                                       "others\n")
    chosen = config("mars", "a-competition", ("me/cleaned",))
    assert with_recorded_dataset(chosen) == chosen
    path.write_text("{}")
    with pytest.raises(KitError, match="datasets.json: expected a list of uploads"):
        with_recorded_dataset(config("mars"))


def test_upload_data_does_not_import_tensorflow():
    code = ("import sys, an2dl_kit.kaggle.datasets; "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_after_a_refused_upload_the_next_run_starts_it_again(kit, standin, data):
    standin.fail["upload"] = (403, "SignatureDoesNotMatch")
    assert upload(kit, data).returncode == 2
    del standin.fail["upload"]
    result = upload(kit, data)
    assert result.returncode == 0, result.stderr
    assert standin.datasets[REF]["files"] == {name: (data / name).read_bytes() for name in INPUTS}
    assert [r["status"] for r in records(kit)] == ["ready"]


def test_output_without_a_kaggle_competition_points_at_the_codabench_zip(kit, standin):
    kit.env["CELLS_DATASETS"] = REF
    kit.push()
    standin.statuses = ["COMPLETE"]
    standin.outputs = {"submission.zip": b"PK\x05\x06" + bytes(18), "submission.csv": b"id,label\n"}
    result = kit("output", "--task", "cells")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == ("next: upload submissions/cells/v1/submission.zip on the challenge's "
                                              "Codabench page")
