"""Typed run configuration: one frozen dataclass per concern, one resolver for both tasks.

A task's configuration (`tasks/cells_config.py`, `tasks/mars_config.py`) is a frozen dataclass of groups —
`data`, `model`, `training`, `augmentation`, `inference`, `run` — each a frozen dataclass of typed fields. Field names
are unique across a task's groups, so an override names a field alone (`loss=focal`) or with its group
(`training.loss=focal`). A profile is a base configuration plus `derive(base, field=value, ...)`.

`resolve` applies overrides — Python values or `"field=value"` strings from the command line — and validates
every field: its type, its range (`bounded`) and registry names (`choice`, `checked`), so a bad setting is a
one-line `KitError` before anything is trained, written or sent. `resume_signature` is derived from the groups
that change the training trajectory (`TRAINING_GROUPS`); budget, workers, TTA views and post-processing are
not among them, so an interrupted run started again into the same folder with a shorter budget or other TTA
views resumes instead of starting over.

This module and the task configurations import neither TensorFlow nor Keras: bundling and pushing use them.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from an2dl_kit import runtime
from an2dl_kit.errors import KitError
from an2dl_kit.inference.adapt import ADAPTATIONS
from an2dl_kit.registry import Registry

# Which epoch's weights a run ends with (`training.fit_phase`'s `keep`): the best validation epoch, or the last.
KEEP_WEIGHTS: Registry[None] = Registry("kept weights", dict.fromkeys(("best", "last")))

# Groups whose fields change what is trained; the others (inference, run) can change between resumed sessions.
TRAINING_GROUPS = ("data", "model", "training", "augmentation")
TRUE_WORDS, FALSE_WORDS = ("true", "yes", "on", "1"), ("false", "no", "off", "0")
NONE_WORDS = ("none", "null")
# Most folds of a K-fold partition (`data.folds`): each fold is a full training run.
MAX_FOLDS = 20


PRECISIONS: Registry[None] = Registry("precision", dict.fromkeys(runtime.PRECISIONS))
DETERMINISM: Registry[None] = Registry("determinism", dict.fromkeys(runtime.DETERMINISM))


def choice(registry: Registry, **kwargs) -> Any:
    """A field whose value must be a name of `registry`."""
    return dataclasses.field(metadata={"check": registry.check, "choices": registry}, **kwargs)


def checked(check: Callable[[Any], Any], allowed: str | Callable[[], str], **kwargs) -> Any:
    """A field validated by `check(value)`, which raises `KitError` on a bad value; `allowed` says in words
    (or returns, when it must read a registry) what values pass, for `an2dl config` and the docs."""
    return dataclasses.field(metadata={"check": check, "allowed": allowed}, **kwargs)


def bounded(low: float | None = None, high: float | None = None, **kwargs) -> Any:
    """A numeric field within [low, high] (None: unbounded on that side; None values are not checked)."""
    return dataclasses.field(metadata={"range": (low, high)}, **kwargs)


def derive(base: Any, **values: Any) -> Any:
    """`base` with fields replaced by name, whatever group holds them (values are validated by `resolve`)."""
    changes: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        group, name = _locate(base, key)
        changes.setdefault(group, {})[name] = value
    return dataclasses.replace(base, **{group: dataclasses.replace(getattr(base, group), **fields)
                                        for group, fields in changes.items()})


def resolve(profiles: Registry, name: str, overrides: Mapping[str, Any] | Iterable[str] | None = None) -> Any:
    """`profiles[name]` with `overrides` applied and every field validated.

    Args:
        profiles: the task's profile registry.
        name: a profile name.
        overrides: field -> value (None values are ignored, as argparse leaves unset options), or
            `"field=value"` strings whose values are parsed to the field's type.
    """
    config = profiles[name]
    values = parse_assignments(overrides) if _is_assignments(overrides) else dict(overrides or {})
    parsed = {}
    for key, value in values.items():
        if value is None:
            continue
        group, field_name = _locate(config, key)
        hint = typing.get_type_hints(type(getattr(config, group)))[field_name]
        parsed[field_name] = parse_value(hint, value, _label(config, key)) if isinstance(value, str) else value
    config = derive(config, **parsed)
    validate(config)
    return config


def validate(config: Any) -> None:
    """Check every field's type, range and registry name; the first problem is a one-line `KitError`."""
    for group in dataclasses.fields(config):
        section = getattr(config, group.name)
        hints = typing.get_type_hints(type(section))
        for field in dataclasses.fields(section):
            value = getattr(section, field.name)
            label = _label(config, field.name)
            _check_type(value, hints[field.name], label)
            _check_metadata(field, value, label)
    check_folds(config)


def check_folds(config: Any) -> None:
    """`data.fold` names one of `data.folds` folds, and only when there are several."""
    folds, fold = config.data.folds, config.data.fold
    if fold is not None and folds < 2:
        raise KitError(f"{_label(config, 'fold')}={fold}: needs folds >= 2 (set folds=K too)")
    if fold is not None and fold >= folds:
        raise KitError(f"{_label(config, 'fold')}={fold}: out of range for folds={folds} (0..{folds - 1})")


def parse_assignments(items: Iterable[str]) -> dict[str, str]:
    """`["loss=focal", "epochs=80"]` -> `{"loss": "focal", "epochs": "80"}`; the last of a repeated key wins."""
    values = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise KitError(f"--set {item!r}: expected FIELD=VALUE, e.g. epochs=80")
        values[key.strip()] = value.strip()
    return values


def parse_value(hint: Any, text: str, label: str) -> Any:
    """A command-line string as a value of type `hint` (validated later by `validate`)."""
    optional, base = _unwrap_optional(hint)
    lowered = text.strip().lower()
    if optional and lowered in NONE_WORDS:
        return None
    try:
        if base is bool:
            if lowered not in TRUE_WORDS + FALSE_WORDS:
                raise ValueError
            return lowered in TRUE_WORDS
        if typing.get_origin(base) is tuple:
            return tuple(int(part) for part in text.split(",") if part.strip())
        return base(text)
    except (TypeError, ValueError):
        raise KitError(f"{label}={text!r}: expected {_describe(hint)}") from None


def as_dict(config: Any) -> dict[str, dict[str, Any]]:
    """The configuration as nested plain data: group -> field -> value (tuples become lists)."""
    return {group: {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}
            for group, fields in dataclasses.asdict(config).items()}


def flat_fields(config: Any) -> dict[str, Any]:
    """field -> value over every group."""
    return {k: v for fields in dataclasses.asdict(config).values() for k, v in fields.items()}


def resume_signature(config: Any) -> str:
    """What a training backup must match to be resumed: the groups that change training."""
    data = as_dict(config)
    return repr({group: data[group] for group in TRAINING_GROUPS if group in data})


def field_names(config: Any) -> tuple[str, ...]:
    groups = (getattr(config, group.name) for group in dataclasses.fields(config))
    return tuple(f.name for section in groups for f in dataclasses.fields(section))


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataSplit:
    """Which images a run trains and validates on; each task's `data` group extends it.

    Args:
        val_fraction: stratified validation share.
        max_train: keep at most this many training images (None: all); for smoke runs.
        folds: 1: one stratified split by val_fraction; K >= 2: a stratified K-fold of the cleaned training set.
        fold: the fold a run validates on, 0..folds-1 (None with folds >= 2: every fold in turn, then their ensemble).
        split_seed: seeds the split or folds, apart from training.seed (None: training.seed for a split, 0 for folds).
    """

    val_fraction: float = bounded(0.01, 0.9)
    max_train: int | None = bounded(8, default=None)
    folds: int = bounded(1, MAX_FOLDS, default=1)
    fold: int | None = bounded(0, MAX_FOLDS - 1, default=None)
    split_seed: int | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunSettings:
    """How a run is executed, not what it trains: changing these resumes an interrupted run.

    Args:
        budget_s: training time budget in seconds for all phases (None: no limit); the schedule is planned to
            end with it.
        workers: loader threads.
        precision: "auto" (by device) or a Keras policy name.
        run_eagerly: skip graph tracing (about a minute for the full U-Net on a busy CPU); smoke runs only.
        deterministic: "on" (op determinism, no XLA), "off" (XLA on one GPU), or "auto": on for a CPU, off for
            accelerators (`runtime.execution_rule` says why). One default for every profile: the `kaggle`
            profiles get XLA on one GPU and still repeat exactly when they run on a CPU (gpu-check, CI).
    """

    budget_s: float | None = bounded(1.0)
    workers: int = bounded(1, 64)
    precision: str = choice(PRECISIONS, default="auto")
    run_eagerly: bool = False
    deterministic: str = choice(DETERMINISM, default="auto")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Inference:
    """How test predictions are made from a trained model (changing these resumes an interrupted run).

    Args:
        tta: TTA views: a set of `tta.VIEW_SETS` or comma-separated view names (dense tasks undo them on the maps).
        tta_select: use the TTA views only if they do not lower the validation score (else identity alone).
        bn_adapt: BatchNorm statistics at prediction (`inference.adapt`, Schneider et al. 2020): "none" (those of
            training), "set" (re-estimated on all the images predicted: validation, test, a Codabench call) or
            "batch" (each prediction batch its own). A model without BatchNorm predicts as with "none"; ConvNeXt's
            backbone has none (its LayerNorm), so only the head's BatchNorm adapts there.
    """

    tta: str = checked(lambda value: _tta_views(value), allowed=lambda: _tta_allowed())
    tta_select: bool = True
    bn_adapt: str = choice(ADAPTATIONS, default="none")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunConfig:
    """A task's whole configuration: one group per concern. Each task subclasses it with its own groups'
    types (`tasks/<task>_config.py`) and its name in `TASK`."""

    TASK: typing.ClassVar[str]
    data: DataSplit
    model: Any
    training: Any
    augmentation: Any
    inference: Inference
    run: RunSettings


def _tta_views(value: str) -> tuple[str, ...]:
    from an2dl_kit.inference.tta import resolve_views

    return resolve_views(value)


def _tta_allowed() -> str:
    from an2dl_kit.inference.tta import VIEW_SETS, VIEWS

    return f"a set ({', '.join(VIEW_SETS.choices)}) or views joined by commas ({', '.join(VIEWS.choices)})"


def allowed_values(field: dataclasses.Field) -> str:
    """What values a field takes, in words: its registry's names, its range, or what its check accepts."""
    if "choices" in field.metadata:
        return ", ".join(field.metadata["choices"].choices)
    if "allowed" in field.metadata:
        allowed = field.metadata["allowed"]
        return allowed() if callable(allowed) else allowed
    low, high = field.metadata.get("range", (None, None))
    if low is not None and high is not None:
        return f"{low:g} to {high:g}"
    if low is not None:
        return f"at least {low:g}"
    return ""


def type_name(hint: Any) -> str:
    """A field's type in a word: int, float, bool, str, ints (comma-separated); "or none" when optional."""
    optional, base = _unwrap_optional(hint)
    name = "ints" if typing.get_origin(base) is tuple else getattr(base, "__name__", str(base))
    return name + (" or none" if optional else "")

# --- helpers -----------------------------------------------------------------------------------------------


def _is_assignments(overrides) -> bool:
    return overrides is not None and not isinstance(overrides, Mapping)


def _task_name(config: Any) -> str:
    return getattr(config, "TASK", type(config).__name__)


def _label(config: Any, key: str) -> str:
    return f"{_task_name(config)} setting {key}"


def _locate(config: Any, key: str) -> tuple[str, str]:
    """(group, field) of a plain or dotted field name; an unknown one is a `KitError` listing the fields."""
    groups = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    group, _, name = key.rpartition(".")
    owners = [g for g, section in groups.items() if name in {f.name for f in dataclasses.fields(section)}]
    if group:
        owners = [g for g in owners if g == group]
    if not owners:
        raise KitError(f"{_task_name(config)} setting {key!r}: unknown; choose one of "
                       f"{', '.join(field_names(config))}")
    return owners[0], name


def _unwrap_optional(hint: Any) -> tuple[bool, Any]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return len(args) < len(typing.get_args(hint)), args[0]
    return False, hint


def _describe(hint: Any) -> str:
    optional, base = _unwrap_optional(hint)
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    text = names.get(base, "integers separated by commas" if typing.get_origin(base) is tuple else str(base))
    return text + (" or none" if optional else "")


def _check_type(value: Any, hint: Any, label: str) -> None:
    optional, base = _unwrap_optional(hint)
    if value is None and optional:
        return
    if base is float:
        good = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif base is int:
        good = isinstance(value, int) and not isinstance(value, bool)
    elif typing.get_origin(base) is tuple:
        good = isinstance(value, tuple) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    else:
        good = isinstance(value, base)
    if not good:
        raise KitError(f"{label}={value!r}: expected {_describe(hint)}")


def _check_metadata(field: dataclasses.Field, value: Any, label: str) -> None:
    low, high = field.metadata.get("range", (None, None))
    if value is not None and ((low is not None and value < low) or (high is not None and value > high)):
        bounds = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
        raise KitError(f"{label}={value!r}: out of range {bounds}")
    check = field.metadata.get("check")
    if check is not None:
        try:
            check(value)
        except KitError as error:
            raise KitError(f"{label}={value!r}: {error}") from None
