"""Kaggle kernel for the blood-cell challenge: train the classifier, predict with TTA, write the files.

`an2dl bundle --task cells` appends this file to the kit's embedded source and a PROVENANCE dict. Run on
its own (`python kernels/cells/main.py`) it uses the installed kit and describes the checkout instead.
Inputs are searched under $AN2DL_INPUT (default /kaggle/input); everything is written to $AN2DL_OUTPUT
(default /kaggle/working), the folder Kaggle keeps as the kernel's output; $AN2DL_BUDGET, when set, is the
training budget in seconds.
"""

import os
from pathlib import Path

from an2dl_kit.bundle import environment_lines, kernel_provenance

TASK = "cells"
INPUT = Path(os.environ.get("AN2DL_INPUT") or "/kaggle/input")
OUTPUT = Path(os.environ.get("AN2DL_OUTPUT") or "/kaggle/working")
# Training seconds; unset keeps the profile's budget (the demo sets a short one).
BUDGET = float(os.environ["AN2DL_BUDGET"]) if os.environ.get("AN2DL_BUDGET") else None

# Provenance first, before TensorFlow loads: a kernel that dies on import still says what it was.
provenance = kernel_provenance(TASK, globals().get("PROVENANCE"))
for line in environment_lines(provenance, INPUT, OUTPUT):
    print(line, flush=True)

from an2dl_kit.tasks.cells import run  # noqa: E402  (imports TensorFlow)

metrics = run(INPUT, OUTPUT, provenance["profile"], budget_s=BUDGET, provenance=provenance)
written = ", ".join(metrics.get("files", []))
print(f"done in {metrics.get('seconds_total', 0):.0f} s; wrote to {OUTPUT}: {written}", flush=True)
