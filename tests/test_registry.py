"""The name -> entry tables: one error for every unknown name, every reference importable, no TensorFlow."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from an2dl_kit import registries, task
from an2dl_kit.data import inspect as data_inspect
from an2dl_kit.data import synth
from an2dl_kit.errors import KitError
from an2dl_kit.inference import adapt, tta
from an2dl_kit.registry import Registry, resolve_reference

REPO = Path(__file__).resolve().parents[1]
TABLES = {name: value for name, value in vars(registries).items() if isinstance(value, Registry)}
EVERY_REGISTRY = {**{f"registries.{name}": table for name, table in TABLES.items()},
                  "task.TASKS": task.TASKS, "tta.VIEWS": tta.VIEWS, "tta.VIEW_SETS": tta.VIEW_SETS,
                  "adapt.ADAPTATIONS": adapt.ADAPTATIONS,
                  "synth.SIZES": synth.SIZES, "inspect.SUMMARIZERS": data_inspect.SUMMARIZERS}


def test_the_registries_module_holds_every_builder_table():
    assert set(TABLES) == {"BACKBONES", "ARCHITECTURES", "LOSSES", "CELLS_AUGMENTATIONS", "MARS_AUGMENTATIONS",
                           "COLOUR_NORMALIZATIONS"}


@pytest.mark.parametrize("where", sorted(EVERY_REGISTRY))
def test_an_unknown_name_is_a_one_line_kit_error_listing_exactly_the_choices(where):
    table = EVERY_REGISTRY[where]
    with pytest.raises(KitError) as error:
        table["no-such-name"]
    message = str(error.value)
    assert "\n" not in message
    assert message == f"{table.kind} 'no-such-name': unknown; choose one of {', '.join(table)}"
    assert isinstance(error.value, KeyError) and "no-such-name" not in table
    with pytest.raises(KitError, match=f"^{re.escape(message)}$"):
        table.check("no-such-name")
    assert all(table.check(name) == name for name in table.choices)


@pytest.mark.parametrize("table", sorted(TABLES))
def test_every_reference_resolves(table):
    for name in TABLES[table]:
        entry = TABLES[table].load(name)
        if isinstance(entry, registries.Backbone):
            entry = resolve_reference(entry.build)
        assert entry is None or callable(entry), f"{table}[{name!r}]"


def test_loss_specs_split_into_registered_terms():
    assert registries.loss_terms("cce + dice") == ("cce", "dice")
    assert registries.loss_terms("focal") == ("focal",)
    with pytest.raises(KitError, match="^loss 'boundary': unknown; choose one of cce, dice, tversky, focal, lovasz$"):
        registries.loss_terms("cce+boundary")


def test_the_tables_task_and_tta_import_without_tensorflow():
    probe = ("import json, sys\n"
             "import an2dl_kit.registries, an2dl_kit.task, an2dl_kit.inference.tta\n"
             "print(json.dumps(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)))")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
