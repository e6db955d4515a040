"""K-fold on Kaggle: the K folds of one partition as K kernels running side by side, then their ensemble.

`an2dl push-folds --task T --folds K [--name N] [--set ...]` pushes K variants of the task's kernel, fold k as
the variant `fold<k>` (or `<N>-fold<k>`, so `<slug>-fold<k>` / `<slug>-<N>-fold<k>` on Kaggle), whose bundles
differ only in the baked-in `fold` override (`folds=K` and the `--set` overrides are the same in all). The
quota check counts all K kernels before the first request and refuses the whole set unless `--force`; a push
that fails part-way names the folds that did go, so they are not pushed twice. `wait-folds`, `output-folds`
and `ensemble-folds` follow the K variants with the ordinary loop (`loop.py`); `ensemble-folds` averages the
newest downloaded output of each fold (`an2dl_kit.inference.ensemble`: one partition, no fold twice, the OOF
score over the folds present, missing folds named) into `submissions/<task>/[<N>-]folds/v<M>/`, which
`make submit NAME=[<N>-]folds` submits with the OOF score in its ledger message. TensorFlow-free.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from an2dl_kit.errors import KitError
from an2dl_kit.inference.probabilities import PROBS_FILE
from an2dl_kit.kaggle.provenance import canonical_overrides
from an2dl_kit.kaggle.variants import check_name, push_record_path, variant_dir

FOLDS_SUFFIX = "folds"


def fold_names(name: str | None, folds: int) -> list[str]:
    """The K variant names, `fold<k>` or `<name>-fold<k>`, each checked as a Kaggle slug part."""
    if folds < 2:
        raise KitError(f"--folds {folds}: a K-fold needs K >= 2 (e.g. K=5)")
    return [check_name(f"{name}-fold{k}" if name else f"fold{k}") for k in range(folds)]


def ensemble_name(name: str | None) -> str:
    """The variant whose folders hold the fold ensembles: `folds` or `<name>-folds`."""
    return check_name(f"{name}-{FOLDS_SUFFIX}" if name else FOLDS_SUFFIX)


def fold_overrides(task: str, profile: str, settings: list[str] | None, folds: int) -> list[dict]:
    """Each fold's validated overrides: the shared ones, `folds=K` and its own `fold=k`."""
    shared = list(settings or [])
    if any(item.split("=", 1)[0].strip().rpartition(".")[2] in ("fold", "folds") for item in shared):
        raise KitError("push-folds: set the fold count with --folds (K=...), not with --set fold/folds")
    return [canonical_overrides(task, profile, [*shared, f"folds={folds}", f"fold={k}"]) for k in range(folds)]


def push_folds_cli(args) -> int:
    """`an2dl push-folds --task T --folds K [--profile P] [--name N] [--set ...] [--force]`."""
    from an2dl_kit.kaggle.loop import push_variant, source_config
    from an2dl_kit.kaggle.quota import check_push, estimate_hours
    from an2dl_kit.kaggle.session import KaggleSession

    names = fold_names(check_name(args.name), args.folds)
    overrides = fold_overrides(args.task, args.profile, args.set, args.folds)
    config = source_config(args.task)
    estimate, kind = estimate_hours(args.task, args.profile, overrides[0], config.accelerator)
    session = KaggleSession.connect()
    check_push(session, estimate, kind, args.force, count=args.folds)
    pushed: list[str] = []
    for fold, (name, settings) in enumerate(zip(names, overrides, strict=True)):
        try:
            push_variant(session, args.task, args.profile, name, settings, config)
        except KitError as error:
            raise KitError(f"fold {fold}: {error} (folds pushed: {', '.join(pushed) or 'none'}; push the others "
                           f"with make push-{args.task} NAME=<variant> SET=\"... folds={args.folds} fold=<k>\")") \
                from None
        pushed.append(str(fold))
    print(f"pushed {args.folds} folds of {args.task}: {', '.join(names)}")
    print(f"next: make wait-folds {_flags(args)}, then make output-folds {_flags(args)}")
    return 0


def _flags(args) -> str:
    return f"TASK={args.task} K={args.folds}{f' NAME={args.name}' if args.name else ''}"


def wait_folds_cli(args) -> int:
    """`an2dl wait-folds --task T --folds K [--name N]`: wait for each pushed fold in turn; 0 when all complete."""
    from an2dl_kit.kaggle.loop import wait_cli

    failed = []
    for fold, name in enumerate(fold_names(check_name(args.name), args.folds)):
        if not push_record_path(args.task, name).is_file():
            print(f"fold {fold}: never pushed ({name}); push it, or ensemble the other folds")
            failed.append(fold)
        elif wait_cli(argparse.Namespace(task=args.task, name=name)) != 0:
            failed.append(fold)
    if failed:
        print(f"folds not complete: {', '.join(map(str, failed))}")
        return 1
    print(f"all {args.folds} folds complete; next: make output-folds {_flags(args)}")
    return 0


def output_folds_cli(args) -> int:
    """`an2dl output-folds --task T --folds K [--name N]`: download every fold's outputs (folds already
    downloaded are skipped); a fold that cannot be downloaded is reported and the others still are."""
    from an2dl_kit.kaggle.loop import output_cli

    failed = []
    for fold, name in enumerate(fold_names(check_name(args.name), args.folds)):
        record = push_record_path(args.task, name)
        version = json.loads(record.read_text()).get("version") if record.is_file() else None
        if version is not None and (variant_dir(args.task, name) / f"v{version}").exists():
            print(f"fold {fold}: {variant_dir(args.task, name) / f'v{version}'} already downloaded")
            continue
        try:
            output_cli(argparse.Namespace(task=args.task, name=name))
        except KitError as error:
            print(f"an2dl: fold {fold}: {error}", file=sys.stderr)
            failed.append(fold)
    if failed:
        print(f"folds not downloaded: {', '.join(map(str, failed))}")
        return 2
    print(f"next: make ensemble-folds {_flags(args)}")
    return 0


def newest_output(task: str, name: str) -> Path | None:
    """The newest downloaded version folder of a variant that holds test probabilities."""
    from an2dl_kit.kaggle.loop import _version_dirs

    found = [folder for _, folder in _version_dirs(task, name) if (folder / PROBS_FILE).is_file()]
    return found[-1] if found else None


def ensemble_folds_cli(args) -> int:
    """`an2dl ensemble-folds --task T --folds K [--name N] [--weights W] [--data DIR]`: average the newest
    downloaded output of every fold into `submissions/<task>/[<N>-]folds/v<M>/` (M: one more than the last)."""
    from an2dl_kit.inference.ensemble import ensemble, summary_lines
    from an2dl_kit.kaggle.loop import _version_dirs

    base = check_name(args.name)
    outputs = {fold: newest_output(args.task, name) for fold, name in enumerate(fold_names(base, args.folds))}
    runs = [folder for folder in outputs.values() if folder is not None]
    if not runs:
        raise KitError(f"{variant_dir(args.task, None)}: no downloaded fold outputs with {PROBS_FILE}; "
                       f"make output-folds {_flags(args)} first")
    missing = [str(fold) for fold, folder in outputs.items() if folder is None]
    if missing:
        print(f"folds without downloaded outputs: {', '.join(missing)}; ensembling the other {len(runs)}")
    target = ensemble_name(base)
    versions = _version_dirs(args.task, target)
    out = variant_dir(args.task, target) / f"v{versions[-1][0] + 1 if versions else 1}"
    record = ensemble(args.task, runs, out, args.weights, args.data, extra=run_settings(runs[0]))
    for line in summary_lines(record):
        print(line)
    print(f"wrote to {out}: {', '.join(record['files'])}")
    print(f"next: make submit TASK={args.task} NAME={target}")
    return 0


def run_settings(run: Path) -> dict:
    """The profile and shared overrides (without `fold`) of a fold run, from its metrics.json."""
    try:
        metrics = json.loads((run / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}
    overrides = {k: v for k, v in (metrics.get("overrides") or {}).items() if k != "fold"}
    return {"profile": metrics.get("profile") or "", "overrides": overrides,
            "provenance": metrics.get("provenance") or {}}
