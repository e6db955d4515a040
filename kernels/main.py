"""Kaggle kernel entry, shared by every task: print the provenance, then train, predict and write the files.

`an2dl bundle --task T` appends this file to the kit's embedded source and a PROVENANCE dict, which names the
task. Run on its own from a checkout (`AN2DL_TASK=mars python kernels/main.py`) it uses the installed kit,
takes the task from $AN2DL_TASK (the profile from $AN2DL_PROFILE, default `local`) and describes the checkout
instead. Inputs are searched under $AN2DL_INPUT (default /kaggle/input); everything is written to
$AN2DL_OUTPUT (default /kaggle/working), the folder Kaggle keeps as the kernel's output; $AN2DL_BUDGET, when
set, is the training budget in seconds. The overrides baked into PROVENANCE at bundle time (`--set` of
`an2dl bundle`/`push`/`run-local`) are passed to `run`, so metrics.json records them and the configuration they
gave.
"""

import os
from pathlib import Path

from an2dl_kit.errors import KitError
from an2dl_kit.kaggle.banner import environment_lines, kernel_provenance

INPUT = Path(os.environ.get("AN2DL_INPUT") or "/kaggle/input")
OUTPUT = Path(os.environ.get("AN2DL_OUTPUT") or "/kaggle/working")
# Training seconds; unset keeps the profile's budget (the demo sets a short one).
BUDGET = float(os.environ["AN2DL_BUDGET"]) if os.environ.get("AN2DL_BUDGET") else None

# Provenance first, before TensorFlow loads: a kernel that dies on import still says what it was.
try:
    provenance = kernel_provenance(globals().get("PROVENANCE"))
except KitError as error:
    raise SystemExit(f"an2dl: error: {error}") from None
task, profile = provenance["task"], provenance["profile"]
for line in environment_lines(provenance, INPUT, OUTPUT):
    print(line, flush=True)

# Preflight: versions, inputs, accelerators, one training step, before any data loads (an2dl_kit/kaggle/preflight.py).
from an2dl_kit.kaggle.preflight import preflight  # noqa: E402

try:
    for line in preflight(task, profile, provenance["kernel"]["accelerator"], input_dir=INPUT,
                          kernel=provenance["kernel"], overrides=provenance.get("overrides")):
        print(line, flush=True)
except KitError as error:
    raise SystemExit(f"an2dl: error: {error}") from None

from an2dl_kit.tasks import run  # noqa: E402  (imports TensorFlow when called)

overrides = {**(provenance.get("overrides") or {}), **({"budget_s": BUDGET} if BUDGET is not None else {})}
metrics = run(task, INPUT, OUTPUT, profile, overrides=overrides or None, provenance=provenance)
print(f"done in {metrics['seconds']['total']:.0f} s; wrote to {OUTPUT}: {', '.join(metrics['files'])}", flush=True)
