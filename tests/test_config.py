"""The typed run configuration: profiles of both tasks, overrides, validation and the resume signature."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from an2dl_kit import config as cfg
from an2dl_kit.errors import KitError
from an2dl_kit.tasks import PROFILES, profile_settings, resolve_config

CASES = [(task, profile) for task in PROFILES for profile in PROFILES.load(task)]
# One registry-checked field per task, with its registry's choices.
REGISTRY_FIELDS = {"cells": ("backbone", "convnext_base, convnext_large"), "mars": ("architecture", "enhanced, plain")}


@pytest.mark.parametrize(("task", "profile"), CASES)
def test_every_profile_resolves_and_is_frozen(task, profile):
    config = resolve_config(task, profile)
    assert config.TASK == task
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.training.epochs = 1


@pytest.mark.parametrize(("task", "profile"), CASES)
def test_bad_field_type_and_name_are_one_line_errors_naming_the_choices(task, profile):
    with pytest.raises(KitError) as unknown:
        resolve_config(task, profile, {"colour": "red"})
    assert f"{task} setting 'colour': unknown; choose one of" in str(unknown.value)
    assert "epochs" in str(unknown.value) and "\n" not in str(unknown.value)
    with pytest.raises(KitError, match=rf"^{task} setting epochs='many': expected an integer$"):
        resolve_config(task, profile, ["epochs=many"])
    with pytest.raises(KitError, match=rf"^{task} setting epochs=2.5: expected an integer$"):
        resolve_config(task, profile, {"epochs": 2.5})
    field, choices = REGISTRY_FIELDS[task]
    with pytest.raises(KitError) as bad_name:
        resolve_config(task, profile, [f"{field}=vgg"])
    assert f"{task} setting {field}='vgg': {field} 'vgg': unknown; choose one of {choices}" in str(bad_name.value)
    with pytest.raises(KitError, match="out of range"):
        resolve_config(task, profile, {"val_fraction": 1.5})
    with pytest.raises(KitError, match=r"TTA|view"):
        resolve_config(task, profile, ["tta=sideways"])


def test_unknown_profile_lists_the_profiles():
    with pytest.raises(KitError, match="^mars profile 'huge': unknown; choose one of kaggle, local, smoke$"):
        resolve_config("mars", "huge")
    with pytest.raises(KitError, match="^task 'pets': unknown; choose one of cells, mars$"):
        resolve_config("pets", "local")


def test_mars_loss_terms_are_checked():
    assert resolve_config("mars", "local", ["loss=focal+dice"]).training.loss == "focal+dice"
    with pytest.raises(KitError, match="loss 'boundary': unknown; choose one of cce, dice, tversky, focal, lovasz"):
        resolve_config("mars", "local", ["loss=cce+boundary"])


def test_strings_are_parsed_to_each_fields_type():
    config = resolve_config("cells", "local", ["budget_s=none", "allow_random_fallback=yes",
                                               "head_units=64,32", "training.learning_rate=0.01", "seed=3"])
    assert config.run.budget_s is None and config.model.allow_random_fallback is True
    assert config.model.head_units == (64, 32) and config.training.learning_rate == 0.01
    assert config.training.seed == 3
    with pytest.raises(KitError, match="expected true or false"):
        resolve_config("cells", "local", ["allow_random_fallback=maybe"])
    with pytest.raises(KitError, match="expected FIELD=VALUE"):
        resolve_config("cells", "local", ["epochs"])


def test_none_values_are_ignored_as_argparse_leaves_them():
    assert resolve_config("cells", "local", {"seed": None}) == resolve_config("cells", "local")


@pytest.mark.parametrize("task", list(PROFILES))
def test_field_names_are_unique_across_groups(task):
    names = cfg.field_names(resolve_config(task, "local"))
    assert len(names) == len(set(names))


@pytest.mark.parametrize("task", list(PROFILES))
def test_resume_signature_follows_training_fields_only(task):
    base = cfg.resume_signature(resolve_config(task, "local"))
    for field, value in (("budget_s", 60.0), ("workers", 3), ("tta", "none"), ("precision", "float32")):
        assert cfg.resume_signature(resolve_config(task, "local", {field: value})) == base, field
    for field, value in (("epochs", 7), ("learning_rate", 0.5), ("seed", 9), ("val_fraction", 0.3)):
        assert cfg.resume_signature(resolve_config(task, "local", {field: value})) != base, field


def test_profiles_are_a_base_plus_changes():
    local = resolve_config("mars", "local")
    assert (local.model.width, local.training.loss, local.run.budget_s) == (0.25, "cce+dice", 900.0)
    kaggle = resolve_config("mars", "kaggle")
    assert local.inference == kaggle.inference and local.training.adaptive_alpha == kaggle.training.adaptive_alpha
    cells = resolve_config("cells", "kaggle")
    assert (cells.model.backbone, cells.model.weights, cells.training.batch_size) == ("convnext_base", "imagenet", 64)
    assert profile_settings("cells", "smoke")["model"]["head_units"] == [512, 256, 128, 64]


def test_configuration_loads_without_tensorflow():
    code = ("import sys; from an2dl_kit.tasks import profile_settings, PROFILES; import an2dl_kit.cli as c; "
            "c.build_parser(); [profile_settings(t, p) for t in PROFILES for p in PROFILES.load(t)]; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_reference_profile_is_the_notebook_as_it_ran():
    """REFERENCE.md: what the reference notebook really ran, setting by setting."""
    from an2dl_kit.tasks.cells_config import FINETUNE_FREEZES, REFERENCE_RESTART_EPOCHS

    ref = resolve_config("cells", "reference")
    assert (ref.model.backbone, ref.model.weights, ref.model.image_size) == ("convnext_base", "imagenet", None)
    assert ref.data.val_fraction == 0.2
    t = ref.training
    assert (t.batch_size, t.epochs, t.finetune_epochs, t.patience) == (32, 100, 100, 10)
    assert t.learning_rate == t.finetune_learning_rate == 1e-4
    assert (t.restart_t_mul, t.lr_floor, t.weight_decay, t.label_smoothing) == (2.0, 0.0, 0.004, 0.0)
    # 1500 steps x 32 images over 2 copies of 80% of the 11,959 cleaned images: 598 steps per epoch.
    assert REFERENCE_RESTART_EPOCHS == t.restart_epochs == pytest.approx(1500 / 598, abs=0.01)
    assert FINETUNE_FREEZES[t.finetune_freeze] == ("layer_scale", "head_bn")
    a = ref.augmentation
    assert (a.augment, a.repeats, a.cutmix_p, a.mixup_p, a.mix_both) == ("reference", 2, 1.0, 1.0, True)
    assert (ref.inference.tta, ref.inference.tta_select) == ("reference", False)
    assert resolve_config("cells", "kaggle").training.finetune_freeze == "normalization"


def test_deterministic_is_a_checked_run_setting():
    for task in PROFILES:
        assert resolve_config(task, "kaggle").run.deterministic == "auto"
        assert resolve_config(task, "smoke", ["deterministic=on"]).run.deterministic == "on"
        with pytest.raises(KitError, match="deterministic"):
            resolve_config(task, "smoke", ["deterministic=maybe"])
