"""The report's sections, built from the collected runs: data, augmentation, model, experiments, the chosen
run, ensemble, provenance (`SECTIONS`, in page order).

Every number in a table is read from a run's metrics.json, an ensemble's metrics.json or runs.csv (the model's
FLOPs and blocks from its saved model file); a value a run does not have is an empty cell with a footnote.
A fold set's scores are its `oof` record's (out of fold) and its test scores; its data, model, curves and
examples are its first fold's (`Run.detail`), and the text says so.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from an2dl_kit.data.clean import REASONS
from an2dl_kit.report import figures
from an2dl_kit.report.architecture import ModelDescription, describe
from an2dl_kit.report.collect import Collection, Run
from an2dl_kit.report.document import Cell, Section, Table, Text, cell, score_label
from an2dl_kit.task import TASKS
from an2dl_kit.training import MODEL_FILE

SECTIONS = {"data": "Data", "augmentation": "Augmentation", "model": "Model", "experiments": "Experiments",
            "chosen-run": "Chosen run", "ensemble": "Ensemble", "provenance": "Provenance"}
NO_TEST_LABELS = "no test labels beside the run's test set (the competitions keep theirs)"
OLDER_KIT = "not in the run's metrics.json (an older kit wrote it)"
OUT_OF_FOLD = ("out of fold (OOF): a fold set's score over the validation images of all its folds present, each "
               "predicted by the fold that never trained on it, as submitted; each fold's in the Ensemble section")
FOLD_VIEWS = ("a fold set: each fold chose its TTA views on its own validation fold, and its out-of-fold score "
              "(val.) is of the predictions submitted with them")
MISSING_FOLD = "missing: no run of this fold was ensembled (the out-of-fold score is over the folds present)"


def settings_table(key: str, caption: str, settings: dict) -> Table:
    """A two-column table of settings, each value as the configuration prints it."""
    return Table(key, caption, ["setting", "value"], [[Cell(k), Cell(str(v))] for k, v in settings.items()])


def split_text(metrics: dict) -> str:
    """How a run split its cleaned training set: one stratified split, or one fold of a K-fold partition."""
    data, split = metrics["config"]["data"], metrics["split"]
    cap = f", at most {data['max_train']:,} of them for training" if data.get("max_train") else ""
    if split.get("fold") is not None:
        return (f"validation fold {split['fold']} of a stratified {split['folds']}-fold partition, split seed "
                f"{split['split_seed']}{cap}")
    return f"a stratified {data['val_fraction']:.0%} split, seed {metrics['config']['training']['seed']}{cap}"


def fold_set_text(fold_set: Run, unit: str) -> str:
    oof = fold_set.oof
    return (f"{fold_set.name} is a fold set: {oof['of']} cleaned training {unit} in {oof['folds']} stratified "
            f"folds, each fold run trained on the others and validated on its own, so {oof['images']} {unit} "
            f"({len(oof['present'])} of {oof['folds']} folds) are predicted out of fold. This section, "
            f"Augmentation and Model describe {fold_set.detail.name}, its first fold present.")


def data_section(run: Run, out: Path) -> Section:
    """The data of `run`, or of a fold set's first fold (said first)."""
    fold_set, run = (run, run.detail) if run.folds else (None, run)
    metrics, task = run.metrics, run.metrics["task"]
    cleaning, samples = metrics["cleaning"], metrics["samples"]
    removed = cleaning["removed"]
    unit = "tiles" if TASKS[task].label_shape else "images"
    blocks = [Text(fold_set_text(fold_set, unit))] if fold_set else []
    blocks.append(Text(f"{run.name}: {cleaning['kept'] + sum(removed.values()):,} training {unit} in the "
                       f"competition file, {cleaning['kept']:,} kept by cleaning; {samples['train']:,} trained on "
                       f"and {samples['validation']:,} validated on ({split_text(metrics)}); {samples['test']:,} "
                       f"test {unit}."))
    if removed:
        blocks.append(Table("cleaning", f"What cleaning removed from the {task} training file, and why.",
                            ["rule", "removed", "why"],
                            [[Cell(reason), Cell(count), Cell(REASONS.get(reason, ""))]
                             for reason, count in removed.items()]))
    else:
        blocks.append(Text("Cleaning removed nothing."))
    blocks += [class_table(run), figures.class_counts(run, out)]
    return Section("data", SECTIONS["data"], blocks)


def class_table(run: Run) -> Table:
    """Per class: the counts before and after cleaning, in the split, and the class weight. Mars counts
    pixels and shows each split's shares in percent."""
    metrics, task = run.metrics, run.metrics["task"]
    info = TASKS[task]
    counts = metrics["cleaning"].get("class_counts", {})
    splits = ("raw", "cleaned", "train", "validation")
    weights = metrics["details"].get("class_weights")
    dense = bool(info.label_shape)
    rows = []
    for index, name in enumerate(info.class_names):
        row = [Cell(name)]
        for split in splits:
            values = counts.get(split)
            if values is None:
                row.append(Cell(None, OLDER_KIT))
            elif dense:
                row.append(Cell(100 * values[index] / max(sum(values), 1), digits=2))
            else:
                row.append(Cell(values[index]))
        row.append(cell(weights[index] if weights else None, "no class weights recorded", digits=3))
        rows.append(row)
    heads = [f"{split} px %" if dense else split for split in splits]
    weight = "final class weight" if dense else "class weight"
    what = "Share of pixels" if dense else "Images"
    return Table("classes", f"{what} per class before and after cleaning, in the training and validation sets; "
                            "the loss's class weights.", ["class", *heads, weight], rows)


def augmentation_section(run: Run, out: Path) -> Section:
    config = run.metrics["config"]["augmentation"]
    return Section("augmentation", SECTIONS["augmentation"], [
        Text(f"{run.name} trains with the '{config['augment']}' augmentation pipeline."),
        settings_table("augmentation", f"Augmentation settings of {run.name}.", config),
        figures.augmentation(run, out)])


def model_description(run: Run) -> tuple[ModelDescription | None, str]:
    """The run's saved model described, or None and why not (no file; a file this Keras cannot load)."""
    model_file = run.file(Path(MODEL_FILE).name)
    if model_file is None:
        return None, f"{run.name} has no {MODEL_FILE} to read it from"
    try:
        return describe(model_file), ""
    except (OSError, ValueError, TypeError) as error:  # Keras' load errors: unreadable, unknown layer, version
        return None, f"{model_file} could not be loaded ({str(error).splitlines()[0].split('. ')[0]})"


def model_section(run: Run) -> Section:
    info = run.metrics["model"]
    description, missing = model_description(run)
    flops = Cell(None, missing) if description is None else Cell(description.flops / 1e9)
    rows = [[Cell(key.replace("_", " ")), Cell(str(value))] for key, value in info.items()
            if key not in ("name", "params")]
    rows = [[Cell("name"), Cell(info["name"])], *rows, [Cell("parameters"), Cell(info["params"])],
            [Cell("GFLOPs per image"), flops],
            [Cell("input shape"), Cell(None, missing) if description is None
             else Cell(" x ".join(map(str, description.input_shape)))],
            [Cell("precision"), Cell(run.metrics["runtime"]["precision"])]]
    blocks = [Text(f"The model of {run.name}. FLOPs: one forward pass of one image, convolutions and matrix "
                   "products counted from the traced graph (one multiply-accumulate = 2 FLOPs)."),
              Table("model", f"The model of {run.name}.", ["property", "value"], rows)]
    if description is None:
        blocks.append(Text(f"No architecture table: {missing}."))
    else:
        blocks.append(Table("architecture", f"The architecture of {run.name}, block by block (layers named "
                                            "<block>_<part>).", ["block", "layers", "output shape", "parameters"],
                            [[Cell(b.name), Cell(", ".join(b.layers)), Cell(" x ".join(map(str, b.output_shape))),
                              Cell(b.params)] for b in description.blocks]))
    return Section("model", SECTIONS["model"], blocks)


def distinguishing_settings(runs: Sequence[Run]) -> list[str]:
    """Per run, the overridden settings whose effective values differ between the runs (and the profile,
    where profiles differ); a single run, or runs that do not differ, show their overrides as given."""
    from an2dl_kit.kaggle.variants import format_overrides

    def plain(key: str) -> str:
        return key.rpartition(".")[2]

    flat = [{k: v for group in run.metrics["config"].values() for k, v in group.items()} for run in runs]
    keys = sorted({plain(key) for run in runs for key in run.metrics["overrides"]})
    differing = [k for k in keys if len({json.dumps(fields.get(k)) for fields in flat}) > 1]
    profiles = len({run.metrics["profile"] for run in runs}) > 1
    if not differing and not profiles:
        return [format_overrides(run.metrics["overrides"]) for run in runs]
    return [" ".join(([f"profile={run.metrics['profile']}"] if profiles else [])
                     + [f"{k}={fields.get(k)}" for k in differing]) for run, fields in zip(runs, flat, strict=True)]


def experiment_row(run: Run, settings: str) -> list[Cell]:
    """A run's row; a fold set's validation is its out-of-fold score, its epochs and seconds its folds' sums."""
    metrics, score = run.metrics, run.score
    runtime = metrics["runtime"]
    device = runtime["kind"] + (f" x{runtime['replicas']}" if runtime["replicas"] > 1 else "")
    test = metrics["test_tta"]
    validation = ([cell(metrics["validation"][score]), cell(metrics["validation_tta"][score])] if run.oof is None
                  else [Cell(run.oof["value"], OUT_OF_FOLD), Cell(None, FOLD_VIEWS)])
    return [Cell(run.name), Cell(settings), *validation, cell(None if test is None else test[score], NO_TEST_LABELS),
            cell(run.public, run.public_note), Cell(sum(p["epochs_run"] for p in metrics["phases"])),
            Cell(metrics["model"]["params"]), Cell(metrics["seconds"]["training"], digits=1), Cell(device)]


def experiments_section(collection: Collection, chosen: Run, out: Path) -> Section:
    label = score_label(collection.task)
    runs = collection.runs
    rows = [experiment_row(run, settings) for run, settings in zip(runs, distinguishing_settings(runs), strict=True)]
    columns = ["run", "settings", "val.", "val.+TTA", "test+TTA", "public", "epochs", "params", "train s", "device"]
    sources = sorted({run.source for run in runs})
    folds = (" A fold set's validation score is out of fold (its footnote); its test score is its fold ensemble's, "
             "its epochs and training seconds its folds' together." if any(run.folds for run in runs) else "")
    return Section("experiments", SECTIONS["experiments"], [
        Text(f"{len(runs)} run{'s' if len(runs) > 1 else ''} ({', '.join(sources)}). Settings: what sets each run "
             f"apart. Validation scores without and with test-time augmentation (TTA); the test score where the "
             f"test labels are known; the public leaderboard score from runs.csv; training time on the run's "
             f"device.{folds} Chosen run: {chosen.name}."),
        Table("experiments", f"{label} of every run: validation (out of fold for a fold set) without and with TTA, "
                             "test with TTA, public leaderboard; epochs, parameters, training seconds and device.",
              columns, rows),
        figures.experiments(collection, out)])


def chosen_section(collection: Collection, chosen: Run, out: Path, reason: str) -> Section:
    """The chosen run in detail; a fold set's curves, phases and examples are its first fold's (`Run.detail`),
    its per-class scores, TTA and post-processing its out-of-fold ones."""
    detail = chosen.detail
    blocks = [Text(f"{chosen.name} ({chosen.folder}): {reason}.")]
    if chosen.folds:
        blocks.append(Text(f"{chosen.name} is a fold set: the learning curves, training phases and example "
                           f"predictions below are those of {detail.name} ({detail.folder}), its first fold "
                           "present; the per-class scores, TTA and post-processing are the fold set's, out of fold."))
    return Section("chosen-run", SECTIONS["chosen-run"], blocks + [
        figures.learning_curves(detail, out), phases_table(detail), per_class_table(chosen),
        figures.per_class(chosen, out), Text(tta_text(chosen)), Text(postprocess_text(chosen)),
        figures.predictions(detail, out)])


def phases_table(run: Run) -> Table:
    label = score_label(run.metrics["task"])
    return Table("phases", f"Training phases of {run.name}.",
                 ["phase", "epochs run", "best epoch (from 0)", f"best val. {label}", "seconds", "stopped by budget"],
                 [[Cell(p["name"]), Cell(p["epochs_run"]), Cell(p["best_epoch"]), cell(p["best_value"], "no epoch"),
                   Cell(p["seconds"], digits=1), Cell("yes" if p["stopped_by_budget"] else "no")]
                  for p in run.metrics["phases"]])


def per_class_table(run: Run) -> Table:
    """Cells: F1 per class. Mars: IoU per scored class. Validation, validation+TTA and test+TTA; for a fold set
    out of fold and the fold ensemble's test."""
    metrics, task = run.metrics, run.metrics["task"]
    key, what = ("iou", "IoU") if task == "mars" else ("f1_per_class", "F1")
    if run.oof is None:
        sets = {"val.": metrics["validation"], "val.+TTA": metrics["validation_tta"], "test+TTA": metrics["test_tta"]}
        caption = f"{what} per class of {run.name}."
    else:
        sets = {"OOF": run.oof["scores"], "test": metrics["test_tta"]}
        caption = (f"{what} per class of {run.name}: out of fold (OOF: every fold's submitted predictions on its "
                   "validation fold, pooled) and the fold ensemble's on the test set.")
    names = list(next(iter(sets.values()))[key])
    absent = "undefined: the class is in neither truth nor prediction"
    rows = [[Cell(name)] + [cell(scores[key][name], absent) if scores is not None else Cell(None, NO_TEST_LABELS)
                            for scores in sets.values()] for name in names]
    return Table("perclass", caption, ["class"] + [f"{s} {what}" for s in sets], rows)


def tta_text(run: Run) -> str:
    if run.oof is not None:
        return fold_tta_text(run)
    metrics, label = run.metrics, score_label(run.metrics["task"])
    tta, score = metrics["tta"], run.score
    text = (f"TTA: {len(tta['configured'])} views configured ({', '.join(tta['configured'])}); validation {label} "
            f"{metrics['validation'][score]:.4f} without them, {metrics['validation_tta'][score]:.4f} with them "
            f"(gain {tta['gain']:+.4f}).")
    selection = tta["selection"]
    if selection:
        text += (f" Decided on {selection['images']}: {selection['identity']:.4f} without, {selection['views']:.4f} "
                 "with.")
    used = "without TTA" if tta["views"] == ["identity"] else f"with {', '.join(tta['views'])}"
    return text + f" The submission predicts {used}."


def fold_tta_text(run: Run) -> str:
    configured, oof = run.metrics["tta"]["configured"], run.oof
    chosen = "; ".join(f"fold {entry['fold']} {', '.join(entry['views']) if entry['views'] else '(not recorded)'}"
                       for entry in oof["per_fold"])
    return (f"TTA: {len(configured)} views configured ({', '.join(configured)}); each fold chose its views on its "
            f"own validation fold and submitted with them: {chosen}. The out-of-fold "
            f"{score_label(run.metrics['task'])} {oof['value']:.4f} is of those predictions.")


def fold_postprocess_text(run: Run) -> str:
    """The post-processing a fold set chose on its out-of-fold predictions (`oof.postprocess`)."""
    oof, label = run.oof, score_label(run.metrics["task"])
    post = oof["postprocess"]
    if not post:
        return "Post-processing: none (the predicted class is the arg-max of the folds' averaged probabilities)."
    size = post["majority_filter"]
    verdict = f"used ({size}x{size})" if size else f"not used: it lowered the out-of-fold {label}"
    return (f"Post-processing: a majority filter chosen on the out-of-fold predictions, {verdict}; out-of-fold "
            f"{label} {post[f'oof_{run.score}_filtered']:.4f} with it, {oof['unfiltered']:.4f} without.")


def postprocess_text(run: Run) -> str:
    if run.oof is not None:
        return fold_postprocess_text(run)
    post = run.metrics["postprocess"]
    if not post:
        return "Post-processing: none (the predicted class is the arg-max of the probabilities)."
    size = post.get("majority_filter", 0)
    filtered = post.get("validation_miou_filtered")
    if filtered is None:
        return "Post-processing: the majority filter is off in the configuration (cleanup <= 1)."
    verdict = f"used ({size}x{size})" if size else "not used: it lowered validation mIoU"
    return f"Post-processing: a majority filter, {verdict}; validation mIoU with it {filtered:.4f}."


def ensemble_section(collection: Collection, chosen: Run) -> Section:
    label = score_label(collection.task)
    blocks = []
    for index, ensemble in enumerate(collection.ensembles):
        record, score = ensemble.record, ensemble.record["score"]
        test = record["test"]
        blocks.append(Text(f"{ensemble.name}: {len(record['members'])} runs averaged with {record['weights']} "
                           "weights" + (f"; test {label} {test[score]:.4f} (members' mean "
                                        f"{record['test_members_mean']:.4f})." if test else "; no test labels.")))
        blocks.append(Table("ensemble" + ("" if index == 0 else chr(ord("A") + index)),
                            f"Members of the ensemble {ensemble.name}.",
                            ["member", f"val. {label}", "weight", f"test {label}"],
                            [[Cell(m["run"]), cell(m["validation"], "not recorded"), Cell(m["weight"]),
                              cell(None if m["test"] is None else m["test"][score], NO_TEST_LABELS)]
                             for m in record["members"]]))
    sets = [run for run in collection.runs if run.folds]
    for index, fold_set in enumerate(sets):
        blocks += fold_blocks(fold_set, "folds" + ("" if index == 0 else chr(ord("A") + index)))
    members = chosen.metrics["members"]
    if members:
        score = chosen.score
        blocks.append(Text(f"{chosen.name} averages {len(members)} models trained with different seeds."))
        blocks.append(Table("members", f"The models {chosen.name} averages.",
                            ["member", "seed", f"val. {label}", f"val.+TTA {label}", "seconds"],
                            [[Cell(m["folder"]), Cell(m["seed"]), cell(m["validation"][score]),
                              cell(m["validation_tta"][score]), Cell(m["seconds"], digits=1)] for m in members]))
    if not blocks:
        blocks.append(Text("No ensemble: no ensemble folder was given, and the chosen run is a single model."))
    return Section("ensemble", SECTIONS["ensemble"], blocks)


def fold_blocks(run: Run, key: str) -> list[Text | Table]:
    """A fold set's folds: the out-of-fold score, each fold's own (mean ± sd), the folds present and missing,
    and per fold its run, validation images, score on them, views submitted and test score."""
    oof, score, label = run.oof, run.score, score_label(run.metrics["task"])
    test = run.metrics["test_tta"]
    missing = f"fold {', '.join(map(str, oof['missing']))} missing" if oof["missing"] else "none missing"
    weights = run.metrics.get("weights", "uniform")  # `an2dl train` averages its folds uniformly (run_folds)
    text = (f"{run.name}: {len(oof['present'])} of {oof['folds']} folds present ({missing}), their test "
            f"probabilities averaged with {weights} weights. Out-of-fold {label} {oof['value']:.4f} over "
            f"{oof['images']} of {oof['of']} images; each fold's {label} on its own validation fold "
            f"{oof['mean']:.4f} ± {oof['std']:.4f} (mean ± sd over {len(oof['per_fold'])} folds)"
            + (f"; fold ensemble's test {label} {test[score]:.4f}." if test else "; no test labels."))
    entries = {entry["fold"]: entry for entry in oof["per_fold"]}
    names = {fold.metrics["split"]["fold"]: fold.name for fold in run.folds}
    rows = []
    for fold in range(oof["folds"]):
        entry = entries.get(fold)
        if entry is None:
            rows.append([Cell(fold)] + [Cell(None, MISSING_FOLD)] * 5)
            continue
        rows.append([Cell(fold), Cell(names.get(fold, entry["run"])), Cell(entry["images"]), cell(entry[score]),
                     cell(", ".join(entry["views"]) if entry["views"] else None, "not recorded"),
                     cell(entry["test"], NO_TEST_LABELS)])
    return [Text(text), Table(key, f"The folds of {run.name}: each fold's run, its validation images, its "
                                   f"{label} on them (out of fold), the TTA views it submitted and its test {label}.",
                              ["fold", "run", "val. images", f"OOF {label}", "views", f"test {label}"], rows)]


def provenance_row(run: Run) -> list[Cell]:
    metrics = run.metrics
    provenance, versions, runtime = metrics["provenance"], metrics["versions"], metrics["runtime"]
    unrecorded = "not recorded: `an2dl train` and `compare` record no provenance (kernels and run-local do)"
    commit = provenance.get("commit")
    devices = ", ".join(runtime["devices"]) or f"{metrics['machine']['cpu_count']} CPUs"
    return [Cell(run.name), cell(provenance.get("version"), unrecorded),
            cell(commit and commit[:12] + (" (dirty)" if provenance.get("dirty") else ""), unrecorded),
            Cell(metrics["profile"]), Cell(versions.get("tensorflow")), Cell(versions.get("keras")),
            Cell(versions.get("python")), Cell(devices)]


def provenance_section(collection: Collection, written_by: str) -> Section:
    rows = [provenance_row(run) for run in collection.runs]
    return Section("provenance", SECTIONS["provenance"], [
        Table("provenance", "What wrote each run: kit version and commit, profile, libraries, machine.",
              ["run", "kit", "commit", "profile", "TensorFlow", "Keras", "Python", "devices"], rows),
        Text(f"Platform of {collection.runs[0].name}: {collection.runs[0].metrics['versions'].get('platform')}. "
             f"This report: {written_by}.")])


def build(collection: Collection, chosen: Run, reason: str, out: Path, written_by: str) -> list[Section]:
    """Every section, in page order (`SECTIONS`); the data, augmentation and model ones describe `chosen` (a
    fold set's first fold)."""
    sections = [data_section(chosen, out), augmentation_section(chosen.detail, out), model_section(chosen.detail),
                experiments_section(collection, chosen, out), chosen_section(collection, chosen, out, reason),
                ensemble_section(collection, chosen), provenance_section(collection, written_by)]
    assert [s.key for s in sections] == list(SECTIONS)
    return sections
