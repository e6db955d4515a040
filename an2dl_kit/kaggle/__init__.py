"""The Kaggle loop: everything between the kit and Kaggle's servers, TensorFlow-free except the preflight.

Bundle time: `settings` (environment, kaggle.json, credential checks), `provenance` (what a kernel is built
from), `bundle` (one self-contained script per task), `variants` (named kernels and their folders), `quota`.
Kernel time: `banner` (what a kernel prints first), `preflight` (versions, inputs, accelerators, one training step).
After the push: `session` (every request through the official client, every reply checked), `loop` (push,
status, wait, output, submit), `ledger` (submissions and their scores), `runs` (one row per pushed version),
`run_local` (the bundled script here, in a Kaggle-like layout), and `datasets` (`upload-data`: a task's input
files as the private dataset its kernel reads).
"""
