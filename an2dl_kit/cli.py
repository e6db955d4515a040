"""Command line: `an2dl <command> ...` (also `python -m an2dl_kit`).

Each command's work lives in the module named in its handler; this file only declares arguments, so
`an2dl --help` and the quick commands never import TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from an2dl_kit import __version__
from an2dl_kit.errors import KitError


def _task_choices() -> tuple[str, ...]:
    from an2dl_kit.task import TASKS

    return TASKS.choices


def _profile_choices() -> tuple[str, ...]:
    """Every task's profile names (the run configuration modules are TensorFlow-free)."""
    from an2dl_kit.tasks import PROFILES

    return tuple(dict.fromkeys(name for task in PROFILES for name in PROFILES.load(task)))

DESCRIPTION = """\
an2dl-kit: train, check and submit for the two AN2DL 2024/25 challenges.

Typical session:
  an2dl synth --out data/demo                         # synthetic competition files (or use real ones)
  an2dl train cells --data data/demo --out build/cells --profile local
  an2dl check build/cells/submission.csv --task cells --test data/demo/cells/test_set.npz
  an2dl push --task mars                               # train on Kaggle's GPUs instead
"""


def _handler(target: str):
    """Return a function that imports `module:function` only when the command runs."""

    def run(args: argparse.Namespace) -> int | None:
        module_name, function_name = target.split(":")
        return getattr(importlib.import_module(module_name), function_name)(args)

    return run


def _add_data_arg(parser: argparse.ArgumentParser, required: bool = False) -> None:
    parser.add_argument(
        "--data",
        type=Path,
        required=required,
        help="folder searched recursively for the competition files (default: $AN2DL_INPUT or /kaggle/input)",
    )


def _add_synth(sub) -> None:
    p = sub.add_parser("synth", help="write synthetic competition files for both challenges")
    p.add_argument("--out", type=Path, required=True, help="output folder (cells/ and mars/ are made inside)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--contaminants", action="store_true", help="inject meme images and alien masks to clean")
    p.add_argument(
        "--size",
        choices=("tiny", "demo"),
        default="demo",
        help="demo: cells 1,200 train + 240 test, mars 600 + 120 tiles (default); tiny: a few dozen",
    )
    p.set_defaults(func=_handler("an2dl_kit.data.synth:cli"))


def _add_inspect(sub) -> None:
    p = sub.add_parser("inspect", help="load, clean and split the competition files; print a table per task")
    _add_data_arg(p)
    p.set_defaults(func=_handler("an2dl_kit.data.inspect:cli"))


def _add_check(sub) -> None:
    p = sub.add_parser("check", help="validate a leaderboard CSV against the test set")
    p.add_argument("file", type=Path, help="the submission CSV")
    p.add_argument("--task", choices=_task_choices(), required=True)
    p.add_argument("--test", type=Path, help="cells test_set.npz, or mars_for_students.npz (its test_set)")
    p.set_defaults(func=_handler("an2dl_kit.submission:cli"))


def _add_score(sub) -> None:
    p = sub.add_parser("score", help="score a leaderboard CSV against known labels")
    p.add_argument("--task", choices=_task_choices(), required=True)
    p.add_argument("--pred", type=Path, required=True, help="the submission CSV")
    p.add_argument("--labels", type=Path, required=True, help="an npz with a `labels` array")
    p.set_defaults(func=_handler("an2dl_kit.metrics:cli"))


def _add_run_settings(p: argparse.ArgumentParser) -> None:
    """The run-configuration options of `train` and `compare`; all of them become validated overrides."""
    from an2dl_kit.registries import BACKBONES, LOSSES

    p.add_argument("--profile", choices=_profile_choices(), default="local")
    _add_set_arg(p)
    p.add_argument("--budget", type=float, help="training time budget in seconds (default: the profile's)")
    p.add_argument("--seed", type=int, help="random seed (default: the profile's)")
    p.add_argument("--backbone", help=f"cells: {', '.join(BACKBONES.choices)}")
    p.add_argument("--weights", help="cells: imagenet, none, or a local weights file")
    p.add_argument("--loss", help=f"mars: {', '.join(LOSSES.choices)} or a sum such as cce+dice")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model and write the leaderboard files, reports and plots")
    p.add_argument("task", choices=_task_choices())
    _add_data_arg(p)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    _add_run_settings(p)
    p.set_defaults(func=_handler("an2dl_kit.tasks.runner:train_cli"))


def _add_config(sub) -> None:
    p = sub.add_parser("config", help="print a task's resolved configuration (or every setting, --markdown)")
    p.add_argument("task", nargs="?", choices=_task_choices())
    p.add_argument("--profile", choices=_profile_choices(), default="local")
    _add_set_arg(p)
    form = p.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="the configuration as JSON")
    form.add_argument("--markdown", action="store_true",
                      help="the settings reference of every task (docs/configuration.md)")
    p.set_defaults(func=_handler("an2dl_kit.tasks.describe:cli"))


def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="train several variants with one budget and write a comparison table")
    p.add_argument("task", choices=_task_choices())
    _add_data_arg(p)
    p.add_argument("--out", type=Path, required=True)
    _add_run_settings(p)
    p.add_argument("--vary", metavar="FIELD=A,B,...", help="one run per value of a field, e.g. loss=cce,dice")
    p.add_argument("--backbones", help="cells: the same as --vary backbone=A,B")
    p.add_argument("--losses", help="mars: the same as --vary loss=A,B, e.g. cce,dice,tversky,focal,lovasz")
    p.set_defaults(func=_handler("an2dl_kit.tasks.runner:compare_cli"))


def _add_ensemble(sub) -> None:
    p = sub.add_parser("ensemble", help="average the kept test probabilities of several runs into one submission")
    p.add_argument("--task", choices=_task_choices(), required=True)
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR",
                   help="run folders (--out folders or submissions/<task>/v<N>/) holding test_probs.npz; fold runs "
                        "of one partition also give the out-of-fold score from their val_probs.npz")
    p.add_argument("--out", type=Path, required=True, help="the ensemble's output folder")
    p.add_argument("--weights", choices=("uniform", "validation"), default="uniform",
                   help="equal weights, or proportional to each run's validation score (default: uniform)")
    p.add_argument("--data", type=Path,
                   help="folder holding the test set the runs predicted; its test_labels.npz scores the ensemble")
    p.set_defaults(func=_handler("an2dl_kit.inference.ensemble:cli"))


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="the homework report of runs: report.html, report.md, figures/, tables.tex")
    p.add_argument("--task", choices=_task_choices(), required=True)
    p.add_argument("folders", nargs="+", type=Path, metavar="RUN_OR_FOLDER",
                   help="run folders (--out folders or submissions/<task>/v<N>/), compare or ensemble folders")
    p.add_argument("--out", type=Path, required=True, help="the report's folder")
    p.add_argument("--chosen", metavar="RUN", help="the run to detail, by name or folder (default: the best public "
                                                   "score, else the best validation score)")
    p.add_argument("--runs-csv", type=Path, help="public scores (default: submissions/<task>/runs.csv)")
    p.set_defaults(func=_handler("an2dl_kit.report:cli"))


def _add_set_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="override any run-configuration field, e.g. --set loss=focal --set epochs=80 (repeatable)")


def _add_name_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", help="variant: its own kernel <slug>-NAME and folder submissions/<task>/NAME/ "
                                  "(lowercase letters, digits, hyphens; default: the task's kernel)")


def _add_kaggle(sub) -> None:
    p = sub.add_parser("bundle", help="write build/kernels/<task>/kernel.py and kernel-metadata.json")
    p.add_argument("--task", choices=_task_choices(), required=True)
    p.add_argument("--profile", choices=_profile_choices(), default="kaggle")
    p.add_argument("--out", type=Path, default=Path("build/kernels"))
    _add_name_arg(p)
    _add_set_arg(p)
    _add_pin(p)
    p.set_defaults(func=_handler("an2dl_kit.kaggle.bundle:cli"))

    p = sub.add_parser("run-local", help="run the bundled kernel here, in a Kaggle-like folder layout, on CPU")
    p.add_argument("--task", choices=_task_choices(), required=True)
    p.add_argument("--profile", choices=_profile_choices(), default="local")
    _add_data_arg(p)
    p.add_argument("--out", type=Path, help="output folder (default: build/run-local/<task>)")
    p.add_argument("--python", help="the interpreter that runs the kernel, e.g. another environment's "
                                    "(default: this one; `make cpu-image-check`)")
    _add_set_arg(p)
    p.set_defaults(func=_handler("an2dl_kit.kaggle.run_local:run_local_cli"))

    for name, help_text in (
        ("push", "bundle and push the kernel to Kaggle (checks the overrides and the GPU quota first)"),
        ("status", "print the kernel's status"),
        ("wait", "poll the kernel until it completes or fails"),
        ("output", "download the kernel's outputs into submissions/<task>/[<name>/]v<version>/"),
        ("submit", "validate a submission CSV and submit it to the competition"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--task", choices=_task_choices(), required=True)
        _add_name_arg(p)
        if name == "push":
            _add_set_arg(p)
            p.add_argument("--profile", choices=_profile_choices(), default="kaggle")
            p.add_argument("--force", action="store_true",
                           help="push even if the run's budget exceeds the GPU hours left this week")
            _add_pin(p)
        if name == "submit":
            p.add_argument("--file", type=Path, help="CSV to submit (default: the newest downloaded output)")
            p.add_argument("--message", help="submission message (the kit commit is appended)")
        p.set_defaults(func=_handler(f"an2dl_kit.kaggle.loop:{name}_cli"))
    _add_kaggle_folds(sub)
    _add_kaggle_reports(sub)
    _add_upload_data(sub)


def _add_upload_data(sub) -> None:
    p = sub.add_parser("upload-data", help="create or version the private Kaggle dataset <username>/an2dl-<task>-data "
                                           "with the task's input files (never test_labels.npz)")
    p.add_argument("--task", choices=_task_choices(), required=True)
    _add_data_arg(p)
    p.add_argument("--public", action="store_true", help="create the dataset public (default: private)")
    p.set_defaults(func=_handler("an2dl_kit.kaggle.datasets:upload_cli"))


def _add_kaggle_folds(sub) -> None:
    """`push-folds`, `wait-folds`, `output-folds`, `ensemble-folds`: K folds as K kernels side by side."""
    for name, help_text in (
        ("push-folds", "push K kernels, one per fold of one partition (quota checked for all K first)"),
        ("wait-folds", "wait for every fold's kernel"),
        ("output-folds", "download every fold's outputs"),
        ("ensemble-folds", "average the folds' downloaded outputs into one submission, with the OOF score"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--task", choices=_task_choices(), required=True)
        p.add_argument("--folds", type=int, required=True, metavar="K", help="folds of the partition (K >= 2)")
        p.add_argument("--name", help="base name: variants NAME-fold<k> (default: fold<k>)")
        if name == "push-folds":
            _add_set_arg(p)
            p.add_argument("--profile", choices=_profile_choices(), default="kaggle")
            p.add_argument("--force", action="store_true", help="push even if the K runs exceed the GPU hours left")
            _add_pin(p)
        if name == "ensemble-folds":
            p.add_argument("--weights", choices=("uniform", "validation"), default="uniform",
                           help="equal weights, or proportional to each fold's own validation score")
            p.add_argument("--data", type=Path, help="folder holding the test set; its test_labels.npz scores it")
        p.set_defaults(func=_handler(f"an2dl_kit.kaggle.folds:{name.replace('-', '_')}_cli"))


def _add_kaggle_reports(sub) -> None:
    p = sub.add_parser("scores", help="fill the ledger's status and public/private scores from Kaggle")
    p.add_argument("--task", choices=_task_choices(), required=True)
    p.set_defaults(func=_handler("an2dl_kit.kaggle.ledger:scores_cli"))

    p = sub.add_parser("runs", help="one row per pushed version: overrides, status, validation and public "
                                    "scores (also submissions/<task>/runs.md and .csv)")
    p.add_argument("--task", choices=_task_choices(), required=True)
    p.set_defaults(func=_handler("an2dl_kit.kaggle.runs:runs_cli"))

    p = sub.add_parser("quota", help="Kaggle GPU/TPU hours used and left this week, and when they refresh")
    p.set_defaults(func=_handler("an2dl_kit.kaggle.quota:quota_cli"))


def _add_pin(p: argparse.ArgumentParser) -> None:
    """`--pin`: the PIN setting for this command (kaggle.settings reads settings from the environment)."""
    p.add_argument("--pin", help="kernel image: original (default), latest, or a digest from `kaggle kernels pull -m`")


def _add_preflight(sub) -> None:
    p = sub.add_parser("preflight", help="the kernel's checks here: versions, accelerators, one training step")
    p.add_argument("--task", choices=_task_choices(), required=True)
    p.add_argument("--profile", choices=_profile_choices(), default="kaggle")
    p.set_defaults(func=_handler("an2dl_kit.kaggle.preflight:cli"))


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="synthetic data -> bundled kernels run here -> validated, scored CSVs")
    _add_data_arg(p)
    p.add_argument("--out", type=Path, default=Path("build/demo"))
    p.set_defaults(func=_handler("an2dl_kit.demo:cli"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="an2dl", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"an2dl-kit {__version__}")
    parser.add_argument("--verbose", action="store_true", help="also show TensorFlow's native start-up log")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_synth, _add_inspect, _add_check, _add_score, _add_train, _add_config, _add_compare, _add_ensemble,
                _add_report, _add_kaggle, _add_preflight, _add_demo):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "pin", None):
        os.environ["PIN"] = args.pin
    try:
        if args.verbose:
            return args.func(args) or 0
        from an2dl_kit.native_log import quiet_native_log

        with quiet_native_log():
            return args.func(args) or 0
    except KitError as error:
        print(f"an2dl: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("an2dl: interrupted", file=sys.stderr)
        return 130
