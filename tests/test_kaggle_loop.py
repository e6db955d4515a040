"""The Kaggle loop against the loopback stand-in, driving the real kaggle client in subprocesses.

Each `an2dl` command runs as `python -m an2dl_kit ...` with HOME and KAGGLE_CONFIG_DIR in a temporary folder,
fake credentials, `KAGGLE_API_ENVIRONMENT=LOCALHOST` and the stand-in as HTTP proxy (see kaggle_standin.py),
so nothing leaves 127.0.0.1. Every command's output is checked for the fake key.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from kaggle_standin import FAKE_KEY, KaggleStandIn

from an2dl_kit.errors import KaggleError
from an2dl_kit.kaggle.loop import _safe_join, log_tail, wait_for
from an2dl_kit.submission import write_cells_csv

REPO = Path(__file__).resolve().parents[1]
TEST_ROWS = 20
COMPETITION = "standin-cells-competition"
LOG = json.dumps([{"stream_name": "stdout", "time": 1.0, "data": "epoch 1/1\n"},
                  {"stream_name": "stderr", "time": 2.0, "data": "Traceback (most recent call last):\n"},
                  {"stream_name": "stderr", "time": 2.1, "data": "ValueError: boom in phase 2\n"}])


@pytest.fixture
def standin():
    with KaggleStandIn(timeout_s=120) as server:
        yield server


@pytest.fixture
def valid_csv(tmp_path) -> Path:
    return write_cells_csv(tmp_path / "valid.csv", np.arange(TEST_ROWS) % 8)


class Kit:
    """Runs `an2dl` commands against the stand-in from a scratch working directory."""

    def __init__(self, standin: KaggleStandIn, tmp_path: Path):
        self.standin = standin
        self.work = tmp_path / "work"
        self.work.mkdir()
        self.env = standin.client_env(tmp_path / "home")
        # The commands run from a scratch folder: put this checkout first, not whichever kit is installed.
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), self.env.get("PYTHONPATH")]))
        self.env.update(CELLS_COMPETITION=COMPETITION, CELLS_TEST_ROWS=str(TEST_ROWS),
                        AN2DL_POLL_SECONDS="0.01", AN2DL_WAIT_TIMEOUT="20")

    def __call__(self, *args: str) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", "an2dl_kit", *args], cwd=self.work, env=self.env,
                                capture_output=True, text=True, timeout=120)
        assert FAKE_KEY not in result.stdout + result.stderr
        return result

    def push(self, *extra: str) -> subprocess.CompletedProcess:
        result = self("push", "--task", "cells", "--profile", "smoke", *extra)
        assert result.returncode == 0, result.stderr
        return result


@pytest.fixture
def kit(standin, tmp_path) -> Kit:
    return Kit(standin, tmp_path)


def ledger_rows(kit: Kit) -> list[dict]:
    path = kit.work / "submissions" / "ledger.csv"
    return list(csv.DictReader(path.open())) if path.exists() else []


# ---- good path --------------------------------------------------------------------------------------------
def test_push_wait_output_submit_end_to_end(kit, standin, valid_csv):
    standin.outputs = {"submission.csv": valid_csv.read_bytes(), "reports/metrics.json": b"{}\n"}
    standin.log = LOG

    push = kit("push", "--task", "cells", "--profile", "smoke")
    assert push.returncode == 0, push.stderr
    assert "pushed standin-user/an2dl-blood-cells version 1: http://localhost/code/" in push.stdout

    (save,) = standin.calls("SaveKernel")
    body = save.json()
    folder = kit.work / "build" / "kernels" / "cells"
    meta = json.loads((folder / "kernel-metadata.json").read_text())
    assert body["text"] == (folder / "kernel.py").read_text()
    assert body["slug"] == meta["id"] == "standin-user/an2dl-blood-cells"
    assert body["newTitle"] == meta["title"]
    assert (body["language"], body["kernelType"]) == ("python", "script")
    assert body["isPrivate"] is True and body["enableGpu"] is True and body["enableInternet"] is True
    assert body["machineShape"] == meta["machine_shape"] == "NvidiaTeslaT4"
    assert body["competitionDataSources"] == [COMPETITION]
    assert "PROVENANCE = {" in body["text"] and "'profile': 'smoke'" in body["text"]
    assert FAKE_KEY not in body["text"]

    wait = kit("wait", "--task", "cells")
    assert wait.returncode == 0, wait.stderr
    assert "RUNNING" in wait.stdout and "COMPLETE" in wait.stdout and "0:00:0" in wait.stdout

    output = kit("output", "--task", "cells")
    assert output.returncode == 0, output.stderr
    run_dir = kit.work / "submissions" / "cells" / "v1"
    assert (run_dir / "submission.csv").read_bytes() == valid_csv.read_bytes()
    assert (run_dir / "reports" / "metrics.json").read_text() == "{}\n"
    assert (run_dir / "an2dl-blood-cells.log").read_text() == LOG
    assert not list(run_dir.parent.glob(".*part*"))

    submit = kit("submit", "--task", "cells", "--message", "first try")
    assert submit.returncode == 0, submit.stderr
    (upload,) = standin.calls("upload")
    assert upload.body == valid_csv.read_bytes()
    (create,) = standin.calls("CreateSubmission")
    message = create.json()["submissionDescription"]
    assert message.startswith("first try") and "an2dl-kit 0.1.0" in message
    (row,) = ledger_rows(kit)
    assert row["task"] == "cells" and row["competition"] == COMPETITION and row["kernel_version"] == "1"
    assert row["sha256"] == hashlib.sha256(valid_csv.read_bytes()).hexdigest()
    assert row["message"] == message and row["file"] == "submissions/cells/v1/submission.csv"
    assert standin.names() == ["GetAcceleratorQuotaStatistics", "SaveKernel", "GetKernelSessionStatus",
                               "GetKernelSessionStatus",
                               "GetKernelSessionStatus", "ListKernelSessionOutput", "download", "download",
                               "StartSubmissionUpload", "upload", "CreateSubmission"]


def test_status_prints_version_and_state(kit, standin):
    kit.push()
    result = kit("status", "--task", "cells")
    assert result.returncode == 0
    assert result.stdout.strip() == "standin-user/an2dl-blood-cells version 1: RUNNING"


# ---- refusals ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("status, body, shown", [
    (409, {"code": 409, "message": "Conflict: kernel slug belongs to another kernel"}, "HTTP 409: Conflict"),
    (500, "Internal Server Error: backend unavailable", "HTTP 500: Internal Server Error: backend"),
])
def test_push_http_error_exits_nonzero_with_server_message(kit, standin, status, body, shown):
    standin.fail["SaveKernel"] = (status, body)
    result = kit("push", "--task", "cells", "--profile", "smoke")
    assert result.returncode == 2
    assert f"an2dl: error: SaveKernel standin-user/an2dl-blood-cells: {shown}" in result.stderr
    assert not (kit.work / "submissions" / "cells" / "last_push.json").exists()


def test_push_reply_with_error_field_exits_nonzero(kit, standin):
    standin.extra["SaveKernel"] = {"error": "Maximum batch GPU session count reached"}
    result = kit("push", "--task", "cells", "--profile", "smoke")
    assert result.returncode == 2
    assert "Maximum batch GPU session count reached" in result.stderr
    assert not (kit.work / "submissions" / "cells" / "last_push.json").exists()


def test_push_with_invalid_source_exits_nonzero(kit, standin):
    standin.extra["SaveKernel"] = {"invalidCompetitionSources": [COMPETITION]}
    result = kit("push", "--task", "cells", "--profile", "smoke")
    assert result.returncode == 2
    assert f"invalid competition sources: {COMPETITION}" in result.stderr


def test_push_without_data_source_sends_nothing(kit, standin):
    kit.env["CELLS_COMPETITION"] = ""
    result = kit("push", "--task", "cells", "--profile", "smoke")
    assert result.returncode == 2 and "CELLS_DATASETS" in result.stderr
    assert standin.requests == []


def test_wait_on_error_shows_failure_message_and_log_tail(kit, standin):
    kit.push()
    standin.statuses = ["QUEUED", "RUNNING", "ERROR"]
    standin.failure_message = "Your notebook tried to allocate more memory than is available."
    standin.log = LOG
    result = kit("wait", "--task", "cells")
    assert result.returncode == 1
    assert "failure message: Your notebook tried to allocate more memory" in result.stdout
    assert result.stdout.rstrip().endswith("ValueError: boom in phase 2")
    states = [line.split("version 1: ")[1] for line in result.stdout.splitlines() if line.startswith("[")]
    assert states == ["QUEUED", "RUNNING", "ERROR"]


def test_output_url_answering_403_saves_no_file(kit, standin, valid_csv):
    kit.push()
    standin.statuses = ["COMPLETE"]
    standin.outputs = {"submission.csv": valid_csv.read_bytes()}
    standin.fail["download"] = (403, "<Error><Code>AccessDenied</Code></Error>")
    result = kit("output", "--task", "cells")
    assert result.returncode == 2
    shown = "download submission.csv from http://localhost/signed-output/submission.csv: HTTP 403"
    assert shown in result.stderr
    assert "X-Goog-Signature" not in result.stderr
    leftovers = [p for p in (kit.work / "submissions").rglob("*") if p.is_file()]
    assert sorted(p.name for p in leftovers) == ["last_push.json", "pushes.jsonl"]


def test_output_never_replaces_an_earlier_run(kit, standin, valid_csv):
    kit.push()
    standin.statuses = ["COMPLETE"]
    standin.outputs = {"submission.csv": valid_csv.read_bytes()}
    assert kit("output", "--task", "cells").returncode == 0
    standin.outputs = {"submission.csv": b"id,label\n"}
    result = kit("output", "--task", "cells")
    assert result.returncode == 2 and "already downloaded" in result.stderr
    assert (kit.work / "submissions/cells/v1/submission.csv").read_bytes() == valid_csv.read_bytes()


def test_output_of_a_running_kernel_is_refused(kit, standin):
    kit.push()
    standin.statuses = ["RUNNING"]
    result = kit("output", "--task", "cells")
    assert result.returncode == 2 and "still RUNNING" in result.stderr
    assert "ListKernelSessionOutput" not in standin.names()


def test_invalid_csv_is_refused_without_any_request(kit, standin, tmp_path):
    short = write_cells_csv(tmp_path / "short.csv", np.zeros(TEST_ROWS - 1, dtype=int))
    result = kit("submit", "--task", "cells", "--file", str(short))
    assert result.returncode == 2
    assert str(TEST_ROWS - 1) in result.stderr and str(TEST_ROWS) in result.stderr
    assert standin.requests == []
    assert ledger_rows(kit) == []


REFUSALS = [
    ("fail", "CreateSubmission", (400, {"code": 400, "message": "Submission limit reached"}),
     f"CreateSubmission {COMPETITION}: HTTP 400: Submission limit reached"),
    ("fail", "upload", (403, "SignatureDoesNotMatch"), "upload valid.csv: HTTP 403"),
    ("fail", "StartSubmissionUpload", (404, {"code": 404, "message": "Competition not found"}),
     f"StartSubmissionUpload {COMPETITION}: HTTP 404: Competition not found"),
    ("extra", "CreateSubmission", {"message": "Submission rejected", "ref": 0},
     f"CreateSubmission {COMPETITION}: not accepted: Submission rejected"),
]


def test_ledger_gets_one_row_per_accepted_submission(kit, standin, valid_csv):
    assert kit("submit", "--task", "cells", "--file", str(valid_csv)).returncode == 0
    for kind, name, value, shown in REFUSALS:
        getattr(standin, kind)[name] = value
        refused = kit("submit", "--task", "cells", "--file", str(valid_csv))
        assert refused.returncode == 2 and f"an2dl: error: {shown}" in refused.stderr
        getattr(standin, kind).clear()
    assert kit("submit", "--task", "cells", "--file", str(valid_csv), "--message", "again").returncode == 0
    rows = ledger_rows(kit)
    assert len(rows) == 2 and rows[1]["message"].startswith("again")
    assert all(row["kernel_version"] == "" and row["file"] == str(valid_csv) for row in rows)
    assert len(standin.calls("CreateSubmission")) == 4  # 2 accepted + 2 refused by CreateSubmission


# ---- variants: overrides, names, scores, runs, quota ------------------------------------------------------
def embedded_provenance(script: str) -> dict:
    """The PROVENANCE dict of a bundled script, read without running it."""
    for node in ast.parse(script).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "PROVENANCE":
            return ast.literal_eval(node.value)
    raise AssertionError("no PROVENANCE in the script")


def metrics_bytes(validation: float, validation_tta: float, overrides: dict) -> bytes:
    """A kernel's metrics.json, abridged to what `runs` and `submit` read."""
    return json.dumps({"validation": {"accuracy": validation}, "validation_tta": {"accuracy": validation_tta},
                       "overrides": overrides, "profile": "smoke"}).encode()


def test_push_with_overrides_and_a_name_sends_them_to_its_own_kernel(kit, standin):
    result = kit("push", "--task", "mars", "--profile", "smoke", "--name", "focal", "--set", "training.loss=focal",
                 "--set", "epochs=3")
    assert result.returncode == 0, result.stderr
    assert "pushed standin-user/an2dl-mars-terrain-focal version 1" in result.stdout
    assert "may use up to 0.0 GPU hours" in result.stdout and "25.5 h left this week" in result.stdout
    body = standin.calls("SaveKernel")[0].json()
    assert body["slug"] == "standin-user/an2dl-mars-terrain-focal" and body["newTitle"] == "AN2DL Mars terrain focal"
    prov = embedded_provenance(body["text"])
    assert prov["overrides"] == {"epochs": "3", "loss": "focal"}
    assert (prov["config"]["training"]["loss"], prov["config"]["training"]["epochs"]) == ("focal", 3)
    assert (kit.work / "build/kernels/mars-focal/kernel.py").read_text() == body["text"]
    record = json.loads((kit.work / "submissions/mars/focal/last_push.json").read_text())
    assert (record["name"], record["version"], record["overrides"]) == ("focal", 1, {"epochs": "3", "loss": "focal"})
    history = (kit.work / "submissions/mars/pushes.jsonl").read_text().splitlines()
    assert [json.loads(line)["name"] for line in history] == ["focal"]
    assert not (kit.work / "submissions/mars/last_push.json").exists()  # the default kernel is untouched

    status = kit("status", "--task", "mars", "--name", "focal")
    assert status.stdout.strip() == "standin-user/an2dl-mars-terrain-focal version 1: RUNNING"


@pytest.mark.parametrize("args, shown", [
    (("--set", "nosuch=1"), "mars setting 'nosuch': unknown; choose one of val_fraction,"),
    (("--set", "epochs=many"), "mars setting epochs='many': expected an integer"),
    (("--set", "loss=boundary"), "loss 'boundary': unknown; choose one of cce, dice, tversky, focal, lovasz"),
    (("--set", "epochs"), "--set 'epochs': expected FIELD=VALUE"),
    (("--name", "Focal Loss"), "--name 'Focal Loss': use lowercase letters, digits and single hyphens"),
    (("--name", "v2"), "--name 'v2': reserved"),
])
def test_bad_override_or_name_sends_no_request_and_writes_nothing(kit, standin, args, shown):
    result = kit("push", "--task", "mars", "--profile", "smoke", *args)
    assert result.returncode == 2
    assert result.stderr.startswith("an2dl: error: ") and shown in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert standin.requests == []
    assert not (kit.work / "build").exists() and not (kit.work / "submissions").exists()


def test_scores_fill_the_ledger_by_submission_id_and_are_idempotent(kit, standin, valid_csv):
    for message in ("first", "second"):
        assert kit("submit", "--task", "cells", "--file", str(valid_csv), "--message", message).returncode == 0
    standin.extra["CreateSubmission"] = {"ref": 0}  # accepted without an id: the kit finds it by its message
    assert kit("submit", "--task", "cells", "--file", str(valid_csv), "--message", "third").returncode == 0
    rows = ledger_rows(kit)
    assert [row["submission"] for row in rows] == ["1001", "1002", "1003"]
    ledger = kit.work / "submissions" / "ledger.csv"
    ledger.write_text(ledger.read_text() + rows[0]["time"] + ",cells," + COMPETITION + ",old.csv,,gone,,999,,,,\n")
    by_ref = {item["ref"]: item for item in standin.submissions}
    by_ref[1001].update(status="COMPLETE", publicScore="0.91250")
    by_ref[1002].update(status="COMPLETE", publicScore="0.87500", privateScore="0.86000")

    first = kit("scores", "--task", "cells")
    assert first.returncode == 0, first.stderr
    rows = ledger_rows(kit)
    assert [(r["status"], r["public_score"], r["private_score"]) for r in rows] == [
        ("COMPLETE", "0.91250", ""), ("COMPLETE", "0.87500", "0.86000"), ("PENDING", "", ""), ("", "", "")]
    assert rows[3]["submission"] == "999" and rows[3]["message"] == "gone"  # unknown to the server: kept
    assert "3 rows updated" in first.stdout and "not listed by the server (kept as they are): submissions 999" \
        in first.stdout
    before = ledger.read_bytes(), ledger.stat().st_mtime_ns
    second = kit("scores", "--task", "cells")
    assert second.returncode == 0 and "0 rows updated, 3 unchanged" in second.stdout
    assert (ledger.read_bytes(), ledger.stat().st_mtime_ns) == before
    assert standin.names().count("ListSubmissions") == 3  # one for the id of "third", one per scores


def test_scores_refused_listing_is_one_line_and_keeps_the_ledger(kit, standin, valid_csv):
    assert kit("submit", "--task", "cells", "--file", str(valid_csv)).returncode == 0
    before = (kit.work / "submissions" / "ledger.csv").read_bytes()
    standin.fail["ListSubmissions"] = (403, {"code": 403, "message": "Permission denied"})
    result = kit("scores", "--task", "cells")
    assert result.returncode == 2
    assert result.stderr == f"an2dl: error: ListSubmissions {COMPETITION}: HTTP 403: Permission denied\n"
    assert (kit.work / "submissions" / "ledger.csv").read_bytes() == before


def test_runs_lists_every_version_of_two_variants_with_their_scores(kit, standin):
    kit.push()
    kit.push("--name", "mixup", "--set", "mixup_p=0.25", "--set", "epochs=2")
    standin.statuses = ["COMPLETE"]
    standin.outputs = {"submission.csv": write_cells_csv(kit.work / "a.csv", np.arange(TEST_ROWS) % 8).read_bytes(),
                       "metrics.json": metrics_bytes(0.75, 0.8, {})}
    assert kit("output", "--task", "cells").returncode == 0
    standin.outputs["metrics.json"] = metrics_bytes(0.85, 0.875, {"epochs": "2", "mixup_p": "0.25"})
    assert kit("output", "--task", "cells", "--name", "mixup").returncode == 0
    submit = kit("submit", "--task", "cells", "--name", "mixup")
    assert submit.returncode == 0, submit.stderr
    message = standin.calls("CreateSubmission")[0].json()["submissionDescription"]
    assert message.startswith("cells mixup v2 (smoke profile; epochs=2 mixup_p=0.25) [an2dl-kit ")
    standin.submissions[0].update(status="COMPLETE", publicScore="0.86")
    assert kit("scores", "--task", "cells").returncode == 0
    kit.push()  # version 3 of the default kernel, still running
    standin.version_statuses = {3: "RUNNING"}

    result = kit("runs", "--task", "cells")
    assert result.returncode == 0, result.stderr
    table = list(csv.DictReader((kit.work / "submissions/cells/runs.csv").open()))
    shown = [(r["name"], r["version"], r["overrides"], r["status"], r["validation accuracy"],
              r["validation+TTA accuracy"], r["submitted"], r["public score"]) for r in table]
    assert shown == [("default", "1", "", "downloaded", "0.75", "0.8", "no", ""),
                     ("default", "3", "", "RUNNING", "", "", "no", ""),
                     ("mixup", "2", "epochs=2 mixup_p=0.25", "downloaded", "0.85", "0.875", "yes", "0.86")]
    assert "| mixup | 2 | epochs=2 mixup_p=0.25 | downloaded | 0.8500 | 0.8750 | yes | 0.8600 |" in result.stdout
    assert (kit.work / "submissions/cells/runs.md").read_text() in result.stdout
    (status,) = [r for r in standin.calls("GetKernelSessionStatus") if r.json().get("versionLabel")]
    assert status.json()["versionLabel"] == "v3"  # only the version not downloaded is asked about


def test_quota_is_printed(kit, standin):
    result = kit("quota")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "GPU: 4.5 h used, 0.0 h reserved by running sessions, 25.5 h left of 30.0 h this week",
        result.stdout.splitlines()[1]]
    assert result.stdout.splitlines()[1].startswith("refreshes 2030-01-04 00:00 UTC (in ")
    assert standin.names() == ["GetAcceleratorQuotaStatistics"]


def test_push_beyond_the_hours_left_is_refused_before_save_kernel_unless_forced(kit, standin):
    standin.quota.update(used_h=28.0, reserved_h=1.5)
    result = kit("push", "--task", "cells", "--profile", "smoke", "--set", "budget_s=3600")
    assert result.returncode == 2
    assert ("an2dl: error: push: the run may use 1.0 GPU hours but 0.5 are left this week; lower its budget "
            "(--set budget_s=SECONDS) or pass --force (make ... FORCE=1)") in result.stderr
    assert standin.names() == ["GetAcceleratorQuotaStatistics"]
    assert not (kit.work / "submissions").exists()
    forced = kit.push("--set", "budget_s=3600", "--force")
    assert "may use up to 1.0 GPU hours (its budget); 0.5 h left" in forced.stdout
    assert standin.names()[-1] == "SaveKernel"


def test_quota_refusal_stops_a_push_and_cpu_kernels_skip_the_check(kit, standin):
    standin.fail["GetAcceleratorQuotaStatistics"] = (500, "backend unavailable")
    result = kit("push", "--task", "cells", "--profile", "smoke")
    assert result.returncode == 2
    assert "an2dl: error: GetAcceleratorQuotaStatistics: HTTP 500: backend unavailable; pass --force" in result.stderr
    assert "SaveKernel" not in standin.names()
    kit.env["ACCELERATOR"] = "none"
    assert "a CPU kernel uses no accelerator hours" in kit.push().stdout
    assert standin.names().count("GetAcceleratorQuotaStatistics") == 1


# ---- credentials ------------------------------------------------------------------------------------------
def test_kaggle_json_with_loose_permissions_warns_and_never_prints_the_key(kit, standin):
    config = Path(kit.env["KAGGLE_CONFIG_DIR"]) / "kaggle.json"
    config.write_text(json.dumps({"username": standin.username, "key": FAKE_KEY}))
    os.chmod(config, 0o644)
    del kit.env["KAGGLE_KEY"], kit.env["KAGGLE_USERNAME"]
    kit.push()
    result = kit("status", "--task", "cells")
    assert result.returncode == 0
    assert f"{config} is readable by other users; run: chmod 600" in result.stderr
    script = (kit.work / "build" / "kernels" / "cells" / "kernel.py").read_text()
    assert FAKE_KEY not in script and FAKE_KEY not in standin.calls("SaveKernel")[0].body.decode()


def test_missing_credentials_is_one_line_error(kit, standin):
    del kit.env["KAGGLE_KEY"], kit.env["KAGGLE_USERNAME"]
    result = kit("status", "--task", "cells")
    assert result.returncode == 2
    assert result.stderr.startswith("an2dl: error: Kaggle credentials: none found")
    assert standin.requests == []


# ---- pure helpers -----------------------------------------------------------------------------------------
def test_wait_for_backs_off_and_gives_up_at_the_timeout():
    now, sleeps, lines = [0.0], [], []

    def sleep(seconds):
        sleeps.append(seconds)
        now[0] += seconds

    statuses = iter(["QUEUED", "RUNNING", "RUNNING", "RUNNING", "COMPLETE"])
    status, failure, waited = wait_for(lambda: (next(statuses), None), first_s=2, max_s=4, growth=2,
                                       timeout_s=100, report=lines.append, sleep=sleep, clock=lambda: now[0])
    assert (status, failure, waited) == ("COMPLETE", None, 14.0)
    assert sleeps == [2, 4, 4, 4]
    assert lines == ["[0:00:00] kernel: QUEUED", "[0:00:02] kernel: RUNNING", "[0:00:14] kernel: COMPLETE"]

    with pytest.raises(KaggleError, match="still RUNNING after 0:00:30"):
        wait_for(lambda: ("RUNNING", None), first_s=10, max_s=10, timeout_s=35, report=lines.append,
                 sleep=sleep, clock=lambda: now[0] - 14.0)


@pytest.mark.parametrize("name", ["../escape.csv", "/etc/passwd", "a/../../b", "", "a\\..\\b"])
def test_output_names_outside_the_run_folder_are_refused(tmp_path, name):
    with pytest.raises(KaggleError, match="not a relative file name"):
        _safe_join(tmp_path, name)
    assert _safe_join(tmp_path, "reports/metrics.json") == tmp_path / "reports" / "metrics.json"


def test_log_tail_reads_kaggle_json_logs_and_plain_text():
    assert log_tail(LOG, 2) == ["Traceback (most recent call last):", "ValueError: boom in phase 2"]
    assert log_tail("a\nb\nc\n", 2) == ["b", "c"]
    assert log_tail("") == []


# ---- the stand-in itself ----------------------------------------------------------------------------------
def test_standin_stops_itself_and_never_tunnels_https():
    import requests

    with KaggleStandIn(timeout_s=0.5) as server:
        proxies = {"https": server.proxy}
        with pytest.raises(requests.exceptions.ProxyError):
            requests.get("https://example.invalid/", proxies=proxies, timeout=5)
        assert server.names() == ["connect"]
        server._thread.join(timeout=5)
        assert not server._thread.is_alive()
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"{server.proxy}/", timeout=2)
